"""Retina U-Net: U-FPN, detection heads, segmentation head and losses."""
