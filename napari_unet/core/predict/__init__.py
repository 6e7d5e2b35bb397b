"""Inference: tiles, devices, 2D planes, 3D stacks, large images, clusters, object size."""
