"""Pure-PyTorch re-implementation of Microsoft TRELLIS (3D generation)."""
