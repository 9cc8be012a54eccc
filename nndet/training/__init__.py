"""Patch sampling, augmentation, the training loop and checkpoints."""
