"""pxprune.transfer."""
