"""Measuring a (sparse) network: MAC counts, the empirical NTK and PX's bound, per-layer tables."""
