"""Sparse 3D convolution modules with the released checkpoints' parameter layout."""
from __future__ import annotations

import torch
import torch.nn as nn

from ..backends.sparse_conv import build_neighbour_map, submanifold_conv3d
from .spatial import subdivided_coords
from .tensor import SparseTensor

__all__ = ["SparseConv3d", "ConvWeights"]


class ConvWeights(nn.Module):
    """Holds ``weight [C_out, k, k, k, C_in]`` and ``bias [C_out]`` (spconv's layout and key names)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, bias: bool = True,
                 dtype=None, device=None):
        super().__init__()
        k = kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, k, k, k, in_channels, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(out_channels, dtype=dtype, device=device)) if bias else None


class SparseConv3d(nn.Module):
    """Stride-1 sparse convolution at the input sites (submanifold), as TRELLIS uses it.

    Keys: ``conv.weight`` [C_out, k, k, k, C_in], ``conv.bias`` [C_out].

    ``kernel_size == 1`` reproduces spconv 2.x's 1x1 path, which multiplies by the stored
    weight's memory reinterpreted as [C_in, C_out] (not transposed; spconv issue 450). The
    released mesh decoder was trained with it, so it is the correct behaviour here.
    Computes in the weight's dtype (the input is cast to it), like ``modules.layers``.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, dilation: int = 1,
                 bias: bool = True, dtype=None, device=None):
        super().__init__()
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.dilation = kernel_size, dilation
        self.conv = ConvWeights(in_channels, out_channels, kernel_size, bias, dtype=dtype, device=device)

    def forward(self, x: SparseTensor) -> SparseTensor:
        weight, bias = self.conv.weight, self.conv.bias
        x = x.replace(x.feats.to(weight.dtype))
        if self.kernel_size == 1:
            return x.replace(self._pointwise(x.feats))
        if self._map_key not in x.cache:
            x.cache[self._map_key] = build_neighbour_map(x.coords, self.kernel_size, self.dilation)
        return x.replace(submanifold_conv3d(x.feats, x.coords, x.cache[self._map_key], weight, bias))

    @property
    def _map_key(self) -> str:
        """Where a coordinate set's cache keeps this kernel's neighbour map (shared by every conv of that kernel)."""
        return f"neighbours_k{self.kernel_size}_d{self.dilation}"

    def _pointwise(self, feats: torch.Tensor) -> torch.Tensor:
        """The 1x1 convolution (spconv's reinterpreted weight, see the class docstring)."""
        out = feats @ self.conv.weight.reshape(self.in_channels, self.out_channels)
        return out if self.conv.bias is None else out + self.conv.bias

    def forward_subdivided(self, x: SparseTensor) -> SparseTensor:
        """``self(subdivide(x))`` without building the subdivided features (8x x's rows): each
        child's features are read from its parent's row. The result carries its neighbour map."""
        weight, bias = self.conv.weight, self.conv.bias
        feats, coords = x.feats.to(weight.dtype), subdivided_coords(x.coords)
        if self.kernel_size == 1:
            return SparseTensor(self._pointwise(feats).repeat_interleave(8, dim=0), coords, batch_size=x.batch_size)
        neighbours = build_neighbour_map(coords, self.kernel_size, self.dilation)
        out = SparseTensor(submanifold_conv3d(feats, coords, neighbours, weight, bias, repeat=8), coords,
                           batch_size=x.batch_size)
        out.cache[self._map_key] = neighbours
        return out
