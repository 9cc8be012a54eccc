"""Crop, resample, normalise and store cases; map boxes between geometries."""
