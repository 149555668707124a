"""pxprune.analysis."""
