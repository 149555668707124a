"""pxprune.cli."""
