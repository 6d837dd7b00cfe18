"""Sparse 3D convolution: one dispatch point.

Backends (``TRELLIS_CONV_BACKEND`` or ``backend=`` or ``set_backend('sparse_conv', ...)``):

* ``torch``: plain PyTorch. On GPUs it gathers the K = k^3 neighbours of every voxel side by side
  and multiplies by the [K * C_in, C_out] weight in one GEMM (float32 accumulation inside the GEMM
  in every dtype), in row blocks of bounded size; the neighbour table ([N, K], by hashing the
  coordinates: sort + searchsorted) needs no host synchronisation after one max(), and on an H100
  this is as fast as spconv at TRELLIS sizes (docs/gpu.md). On the CPU it goes tap by tap over the
  neighbours that exist (gather, GEMM, ``index_add_`` into a float32 or float64 sum): TRELLIS's
  surface voxels have 9-16 of their 27 neighbours, so it moves and multiplies 2-3x less and skips
  the zeroing of the missing ones (1.8-5.7x faster on 2 cores over two runs, ``scripts/sparse_conv_cpu_bench.py``).
* ``spconv``: spconv 2.x's native submanifold kernels (``ops.get_indice_pairs`` +
  ``functional.indice_subm_conv``), CUDA, float32/float16. In float16 spconv sums the 27
  products in float16 (1.5e-3 relative error at 128 channels, against 5e-4 for ``torch``).

Both backends take a ``NeighbourMap``: one per coordinate set, cached by the caller. Each backend
builds its own index format into it on first use, so a map is built once per coordinate set
whichever backend runs.

Convention (spconv's, which the released weights use): weight ``[C_out, kx, ky, kz, C_in]``;
a submanifold convolution is a cross-correlation over existing neighbours only,
``out[p] = b + sum_k W[:, k] @ in[p + k - r]`` with ``r = dilation * (kernel // 2)``, and outputs
exist only at input sites.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import torch

from .registry import family, importable

__all__ = ["NeighbourMap", "build_neighbour_map", "submanifold_conv3d", "SPARSE_CONV"]

# Rows gathered per GEMM in the torch path are capped so the gathered block stays under this many elements.
_GATHER_ELEMENTS = 1 << 26


class NeighbourMap:
    """Which input voxel feeds which output voxel, for one coordinate set and kernel.

    Attributes:
        coords: [N, 4] int32 (batch, x, y, z).
        kernel_size, dilation: of the convolution.
        num_voxels: N.
    """

    def __init__(self, coords: torch.Tensor, kernel_size: int, dilation: int = 1):
        if kernel_size % 2 != 1:
            raise ValueError(f"sparse conv: kernel_size must be odd, got {kernel_size}")
        self.coords = coords
        self.kernel_size = kernel_size
        self.dilation = dilation
        self.num_voxels = coords.shape[0]
        self._built: Dict[str, Any] = {}

    def built(self, name: str, build: Callable[["NeighbourMap"], Any]) -> Any:
        """The map in backend ``name``'s format, built by ``build(self)`` on first use."""
        if name not in self._built:
            self._built[name] = build(self)
        return self._built[name]

    @property
    def table(self) -> torch.Tensor:
        """[N, K] int32: the input row at each of the K kernel offsets ((kx, ky, kz) row-major) of
        every voxel, N where that neighbour does not exist."""
        return self.built("torch", _neighbour_table)


def build_neighbour_map(coords: torch.Tensor, kernel_size: int, dilation: int = 1) -> NeighbourMap:
    """Neighbour map of a submanifold convolution (index formats are built lazily per backend).

    Args:
        coords: [N, 4] int (batch, x, y, z), non-negative, unique.
        kernel_size: odd kernel width (3 for every TRELLIS convolution).
        dilation: spacing of the kernel taps.
    """
    return NeighbourMap(coords, kernel_size, dilation)


def _keys(coords: torch.Tensor, extent: int) -> torch.Tensor:
    c = coords.long()
    return ((c[:, 0] * extent + c[:, 1]) * extent + c[:, 2]) * extent + c[:, 3]


def _neighbour_table(neighbours: NeighbourMap) -> torch.Tensor:
    coords, kernel_size, dilation, n = neighbours.coords, neighbours.kernel_size, neighbours.dilation, neighbours.num_voxels
    if n == 0:
        return torch.zeros(0, kernel_size ** 3, dtype=torch.int32, device=coords.device)
    radius = dilation * (kernel_size // 2)
    shifted = coords.long().clone()
    shifted[:, 1:] += radius
    extent = int(shifted[:, 1:].max()) + radius + 1
    keys = _keys(shifted, extent)
    sorted_keys, order = torch.sort(keys)
    taps = torch.arange(kernel_size, device=coords.device) * dilation - radius
    dx, dy, dz = torch.meshgrid(taps, taps, taps, indexing="ij")
    query = keys[:, None] + ((dx * extent + dy) * extent + dz).reshape(1, -1)
    pos = torch.searchsorted(sorted_keys, query).clamp_(max=n - 1)
    found = sorted_keys[pos] == query
    return torch.where(found, order[pos], n).int()


def _tap_pairs(neighbours: NeighbourMap):
    """Per kernel tap, the (output rows [M_k], input rows [M_k]) int64 of the neighbours that exist."""
    table, n = neighbours.table, neighbours.num_voxels
    tap, row = torch.nonzero(table.t() < n, as_tuple=True)  # grouped by tap, rows ascending
    counts = torch.bincount(tap, minlength=table.shape[1]).tolist()
    return list(zip(row.split(counts), table[row, tap].long().split(counts)))


def _conv_tap_pairs(feats: torch.Tensor, neighbours: NeighbourMap, weight: torch.Tensor,
                    bias: Optional[torch.Tensor], repeat: int = 1) -> torch.Tensor:
    pairs = neighbours.built("torch_pairs", _tap_pairs)
    c_out = weight.shape[0]
    w = weight.reshape(c_out, len(pairs), -1)
    total = torch.float64 if feats.dtype == torch.float64 else torch.float32
    out = feats.new_zeros(neighbours.num_voxels, c_out, dtype=total)
    if bias is not None:
        out = out + bias.to(total)
    for k, (rows, source) in enumerate(pairs):
        if rows.numel():
            source = source if repeat == 1 else torch.div(source, repeat, rounding_mode="floor")
            out.index_add_(0, rows, (feats.index_select(0, source) @ w[:, k].t()).to(total))
    return out.to(feats.dtype)


def _conv_torch(feats: torch.Tensor, neighbours: NeighbourMap, weight: torch.Tensor,
                bias: Optional[torch.Tensor], repeat: int = 1) -> torch.Tensor:
    conv = _conv_tap_pairs if feats.device.type == "cpu" else _conv_gathered
    return conv(feats, neighbours, weight, bias, repeat)


def _conv_gathered(feats: torch.Tensor, neighbours: NeighbourMap, weight: torch.Tensor,
                   bias: Optional[torch.Tensor], repeat: int = 1) -> torch.Tensor:
    table = neighbours.table
    n, c_in = neighbours.num_voxels, feats.shape[1]
    taps = table.shape[1]
    # Row (k, c_in) of the flattened weight meets column k * c_in + c of the gathered block.
    w = weight.reshape(weight.shape[0], taps * c_in).t()
    out = feats.new_empty(n, weight.shape[0])
    step = max(1, _GATHER_ELEMENTS // (taps * c_in))  # rows per block
    for start in range(0, n, step):
        rows = table[start:start + step]
        # Missing neighbours (index N) gather row 0 and are zeroed in the block: no padded copy of
        # the whole input, which at the mesh decoder's 256^3 level is as large as the block itself.
        source = rows.clamp(max=n - 1) if repeat == 1 else torch.div(rows.clamp(max=n - 1), repeat,
                                                                       rounding_mode="floor")
        block = feats.index_select(0, source.reshape(-1)).reshape(-1, taps, c_in)
        block = block.masked_fill_((rows == n)[..., None], 0).reshape(-1, taps * c_in)
        out[start:start + step] = block @ w if bias is None else torch.addmm(bias, block, w)
        del block  # else the next block is gathered while this one still lives: two blocks at the peak
    return out


def _spconv_pairs(neighbours: NeighbourMap):
    """spconv's native (indice_pairs [2, K, N], indice_pair_num [K]) for the coordinate set."""
    from spconv.pytorch import ConvAlgo, ops
    coords = neighbours.coords.int().contiguous()
    k, d = neighbours.kernel_size, neighbours.dilation
    spatial_shape = (coords[:, 1:].max(0).values + 1).tolist()
    batch_size = int(coords[:, 0].max()) + 1
    _, indice_pairs, indice_pair_num = ops.get_indice_pairs(
        coords, batch_size, spatial_shape, ConvAlgo.Native, [k] * 3, [1] * 3, [d * (k // 2)] * 3, [d] * 3,
        [0] * 3, subm=True)
    return indice_pairs, indice_pair_num


def _conv_spconv(feats: torch.Tensor, neighbours: NeighbourMap, weight: torch.Tensor,
                 bias: Optional[torch.Tensor], repeat: int = 1) -> torch.Tensor:
    from spconv.pytorch import ConvAlgo, functional
    from spconv.tools import CUDAKernelTimer
    indice_pairs, indice_pair_num = neighbours.built("spconv", _spconv_pairs)
    if repeat > 1:  # spconv reads its input rows directly: build them
        feats = feats.repeat_interleave(repeat, dim=0)
    return functional.indice_subm_conv(feats.contiguous(), weight.contiguous(), indice_pairs, indice_pair_num,
                                       feats.shape[0], ConvAlgo.Native, CUDAKernelTimer(False), bias)


def _torch_available(device: torch.device, dtype: torch.dtype) -> bool:
    return True


def _spconv_available(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and dtype in (torch.float32, torch.float16) and importable("spconv.pytorch")


SPARSE_CONV = family("sparse_conv")
SPARSE_CONV.register("torch", _conv_torch, _torch_available)
SPARSE_CONV.register("spconv", _conv_spconv, _spconv_available)


def submanifold_conv3d(feats: torch.Tensor, coords: torch.Tensor, neighbours: NeighbourMap,
                       weight: torch.Tensor, bias: Optional[torch.Tensor] = None,
                       backend: Optional[str] = None, repeat: int = 1) -> torch.Tensor:
    """Submanifold sparse convolution.

    Args:
        feats: [N, C_in] voxel features, or with ``repeat`` R > 1 [N / R, C_in]: voxel i has
            features ``feats[i // R]`` (a subdivided tensor's, whose children are R consecutive
            rows), convolved without building the N rows (the torch backend; spconv builds them).
        coords: [N, 4] int32 (batch, x, y, z) of the voxels (the coordinates ``neighbours`` was
            built from).
        neighbours: ``build_neighbour_map(coords, kernel)`` (cache it: it depends only on coords).
        weight: [C_out, k, k, k, C_in] (spconv layout); bias: [C_out] or None.

    Returns:
        [N, C_out] in feats' dtype.
    """
    if feats.shape[-1] != weight.shape[-1]:
        raise ValueError(f"sparse conv: input has {feats.shape[-1]} channels, weight expects {weight.shape[-1]}")
    if repeat < 1 or feats.shape[0] * repeat != neighbours.num_voxels or coords.shape[0] != neighbours.num_voxels:
        raise ValueError(f"sparse conv: {feats.shape[0]} feature rows (x {repeat}) and {coords.shape[0]} coordinates, "
                         f"but the neighbour map has {neighbours.num_voxels} voxels")
    if neighbours.num_voxels == 0:
        return feats.new_zeros(0, weight.shape[0])
    return SPARSE_CONV.resolve(feats.device, feats.dtype, backend).fn(feats, neighbours, weight, bias, repeat)
