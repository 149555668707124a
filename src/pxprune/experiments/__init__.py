"""pxprune.experiments."""
