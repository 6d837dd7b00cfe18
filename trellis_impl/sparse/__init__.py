"""Sparse voxel tensors and the sparse operations the TRELLIS models use."""
from .activation import SparseSiLU
from .attention import sparse_cross_attention, sparse_self_attention, sparse_windowed_self_attention, window_partition
from .conv import SparseConv3d
from .norm import SparseGroupNorm32
from .spatial import downsample, subdivide, upsample
from .tensor import SparseTensor, sparse_cat

__all__ = [
    "SparseTensor", "sparse_cat", "SparseSiLU", "SparseConv3d", "SparseGroupNorm32", "downsample", "upsample", "subdivide",
    "sparse_self_attention", "sparse_windowed_self_attention", "sparse_cross_attention", "window_partition",
]
