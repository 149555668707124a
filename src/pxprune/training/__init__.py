"""pxprune.training."""
