"""Box operations in 2D and 3D: IoU, NMS, coder, anchors, matchers, weighted box clustering."""
