"""Sparse 3D convolution: one dispatch point.

Backends (``TRELLIS_CONV_BACKEND`` or ``backend=`` or ``set_backend('sparse_conv', ...)``):

* ``torch``: gather-GEMM-scatter in plain PyTorch. The neighbour map is built by hashing the
  coordinates (sort + searchsorted), once per coordinate set, and cached by the caller. Runs on
  any device; on an H100 it is as fast as spconv at TRELLIS sizes (docs/gpu.md).
* ``spconv``: the spconv package's submanifold convolution, when installed (CUDA).

Convention (spconv's, which the released weights use): weight ``[C_out, kx, ky, kz, C_in]``;
a submanifold convolution is a cross-correlation over existing neighbours only,
``out[p] = b + sum_k W[:, k] @ in[p + k - r]`` with ``r = dilation * (kernel // 2)``, and outputs
exist only at input sites.
"""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch

from .registry import family, importable

__all__ = ["NeighbourMap", "build_neighbour_map", "submanifold_conv3d", "SPARSE_CONV"]

# (out_index, in_index) pairs of one kernel offset; None for the centre offset (identity).
OffsetPairs = Optional[Tuple[torch.Tensor, torch.Tensor]]


class NeighbourMap:
    """Which input voxel feeds which output voxel for every kernel offset.

    Attributes:
        pairs: one entry per kernel offset in (kx, ky, kz) row-major order: ``None`` for the
            centre offset (every voxel is its own neighbour) or ``(out_index, in_index)``
            int64 tensors of equal length.
        num_voxels: N.
    """

    def __init__(self, pairs: List[OffsetPairs], num_voxels: int):
        self.pairs = pairs
        self.num_voxels = num_voxels


def _keys(coords: torch.Tensor, extent: int) -> torch.Tensor:
    c = coords.long()
    return ((c[:, 0] * extent + c[:, 1]) * extent + c[:, 2]) * extent + c[:, 3]


def build_neighbour_map(coords: torch.Tensor, kernel_size: int, dilation: int = 1) -> NeighbourMap:
    """Neighbour map of a submanifold convolution.

    Args:
        coords: [N, 4] int (batch, x, y, z), non-negative, unique.
        kernel_size: odd kernel width (3 for every TRELLIS convolution).
        dilation: spacing of the kernel taps.
    """
    if kernel_size % 2 != 1:
        raise ValueError(f"sparse conv: kernel_size must be odd, got {kernel_size}")
    n = coords.shape[0]
    radius = dilation * (kernel_size // 2)
    if n == 0:
        return NeighbourMap([None] * kernel_size ** 3, 0)
    shifted = coords.long().clone()
    shifted[:, 1:] += radius
    extent = int(shifted[:, 1:].max()) + radius + 1
    keys = _keys(shifted, extent)
    sorted_keys, order = torch.sort(keys)
    pairs: List[OffsetPairs] = []
    taps = torch.arange(kernel_size, device=coords.device) * dilation - radius
    for dx in taps.tolist():
        for dy in taps.tolist():
            for dz in taps.tolist():
                if dx == dy == dz == 0:
                    pairs.append(None)
                    continue
                query = keys + ((dx * extent + dy) * extent + dz)
                pos = torch.searchsorted(sorted_keys, query).clamp_(max=n - 1)
                found = sorted_keys[pos] == query
                out_index = found.nonzero().squeeze(1)
                pairs.append((out_index, order[pos[out_index]]))
    return NeighbourMap(pairs, n)


def _conv_torch(feats: torch.Tensor, neighbours: NeighbourMap, weight: torch.Tensor,
                bias: Optional[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    c_out, c_in = weight.shape[0], weight.shape[-1]
    taps = weight.reshape(c_out, -1, c_in)
    # Accumulate in float32 so half-precision runs sum 27 products without fp16 round-off.
    out = torch.zeros(feats.shape[0], c_out, device=feats.device, dtype=torch.float32)
    for k, pair in enumerate(neighbours.pairs):
        w = taps[:, k].t()
        if pair is None:
            out += feats @ w
        elif pair[0].numel():
            out.index_add_(0, pair[0], feats[pair[1]] @ w)
    if bias is not None:
        out += bias
    return out.to(feats.dtype)


def _conv_spconv(feats: torch.Tensor, neighbours: NeighbourMap, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], coords: torch.Tensor) -> torch.Tensor:
    import spconv.pytorch as spconv
    from spconv.pytorch import functional as spF  # noqa: F401  (import check: spconv >= 2)
    kernel = weight.shape[1]
    spatial_shape = (coords[:, 1:].max(0).values + 1).tolist()
    batch_size = int(coords[:, 0].max()) + 1
    x = spconv.SparseConvTensor(feats, coords.int(), spatial_shape, batch_size)
    conv = spconv.SubMConv3d(weight.shape[-1], weight.shape[0], kernel, bias=bias is not None,
                             algo=spconv.ConvAlgo.Native).to(device=feats.device, dtype=feats.dtype)
    conv.weight.data = weight.to(feats.dtype)
    if bias is not None:
        conv.bias.data = bias.to(feats.dtype)
    return conv(x).features


def _torch_available(device: torch.device, dtype: torch.dtype) -> bool:
    return True


def _spconv_available(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and importable("spconv.pytorch")


SPARSE_CONV = family("sparse_conv", "TRELLIS_CONV_BACKEND", {"default": ["torch"]})
SPARSE_CONV.register("torch", _conv_torch, _torch_available)
SPARSE_CONV.register("spconv", _conv_spconv, _spconv_available)


def submanifold_conv3d(feats: torch.Tensor, coords: torch.Tensor, neighbours: NeighbourMap,
                       weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       backend: Optional[str] = None) -> torch.Tensor:
    """Submanifold sparse convolution.

    Args:
        feats: [N, C_in] voxel features.
        coords: [N, 4] int32 (batch, x, y, z) of the voxels (used by backends that build their
            own maps).
        neighbours: ``build_neighbour_map(coords, kernel)`` (cache it: it depends only on coords).
        weight: [C_out, k, k, k, C_in] (spconv layout); bias: [C_out] or None.

    Returns:
        [N, C_out] in feats' dtype.
    """
    if feats.shape[-1] != weight.shape[-1]:
        raise ValueError(f"sparse conv: input has {feats.shape[-1]} channels, weight expects {weight.shape[-1]}")
    if feats.shape[0] == 0:
        return feats.new_zeros(0, weight.shape[0])
    return SPARSE_CONV.resolve(feats.device, feats.dtype, backend).fn(feats, neighbours, weight, bias, coords)
