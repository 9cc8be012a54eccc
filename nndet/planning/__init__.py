"""Dataset fingerprint and plans: dimension, spacing, patch, batch, topology, anchors."""
