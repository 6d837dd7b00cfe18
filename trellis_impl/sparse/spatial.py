"""Changing a sparse tensor's resolution: pooling by 2, its inverse, and subdivision."""
from __future__ import annotations

import torch

from .tensor import SparseTensor, batch_layout

__all__ = ["downsample", "upsample", "subdivide"]


def _pooling(x: SparseTensor, factor: int):
    """The pooling structure of ``x``'s voxels, built once per coordinate set (cached in ``x``):
    (coarse coords, coarse layout, inverse [N] fine -> coarse row, divisor [M], coarse cache)."""
    key = f"downsample_{factor}"
    if key in x.cache:
        return x.cache[key]
    pooled = x.coords.long()
    pooled[:, 1:] //= factor
    if pooled.shape[0] == 0:
        structure = (x.coords[:0], [slice(0, 0)] * x.batch_size, pooled[:, 0], pooled[:0, 0].float(), {})
    else:
        extent = [int(pooled[:, i].max()) + 1 for i in range(4)]
        code = ((pooled[:, 0] * extent[1] + pooled[:, 1]) * extent[2] + pooled[:, 2]) * extent[3] + pooled[:, 3]
        unique_code, inverse = torch.unique(code, return_inverse=True)
        coarse = torch.stack([
            unique_code // (extent[1] * extent[2] * extent[3]),
            (unique_code // (extent[2] * extent[3])) % extent[1],
            (unique_code // extent[3]) % extent[2],
            unique_code % extent[3],
        ], dim=1).int()
        # official scatter_reduce(zeros, 'mean') counts the zero it starts from: sum / (count + 1)
        divisor = torch.bincount(inverse, minlength=unique_code.shape[0]).float() + 1
        layout = batch_layout(coarse, x.batch_size)
        structure = (coarse, layout, inverse, divisor, {})
    structure[4]["upsample"] = (x.coords, x.layout, structure[2], x.cache)
    x.cache[key] = structure
    return structure


def downsample(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Average-pool voxels into cells of ``factor``^3 (coords // factor).

    Output voxels are sorted by (batch, x, y, z). Matches the official pooling exactly, including
    its use of ``scatter_reduce(zeros, 'mean')`` with the zero initial value counted: each output
    is ``sum / (count + 1)``. The pooling map is cached with ``x``'s coordinates, so repeated
    calls (every sampler step) reuse it and the coarse level's own caches; ``upsample`` inverts it.
    """
    coarse, layout, inverse, divisor, coarse_cache = _pooling(x, factor)
    flat = x.feats.flatten(1)
    sums = torch.zeros(coarse.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    sums.index_add_(0, inverse, flat)
    feats = (sums / divisor.to(flat.dtype)[:, None]).reshape(-1, *x.feats.shape[1:])
    return SparseTensor(feats, coarse, layout=layout, cache=coarse_cache)


def upsample(x: SparseTensor) -> SparseTensor:
    """Inverse of the ``downsample`` that produced ``x``'s voxels: copy each cell's feature back
    to its fine voxels, in their original order (sharing the fine tensor's cache)."""
    if "upsample" not in x.cache:
        raise ValueError("upsample: this sparse tensor was not produced by downsample (no pooling map)")
    coords, layout, inverse, fine_cache = x.cache["upsample"]
    return SparseTensor(x.feats[inverse], coords, layout=layout, cache=fine_cache)


def subdivided_coords(coords: torch.Tensor) -> torch.Tensor:
    """[N, 4] (batch, x, y, z) -> [8N, 4]: every voxel's 8 children at twice the resolution,
    contiguous (rows 8i..8i+7 are voxel i's), in (dx, dy, dz) row-major order."""
    child = torch.tensor([[0, dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
                         dtype=coords.dtype, device=coords.device)
    parent = coords.clone()
    parent[:, 1:] *= 2
    return (parent[:, None, :] + child[None]).reshape(-1, 4)


def subdivide(x: SparseTensor) -> SparseTensor:
    """Split every voxel into its 8 children at twice the resolution (``subdivided_coords``);
    features are copied."""
    return SparseTensor(x.feats.repeat_interleave(8, dim=0), subdivided_coords(x.coords), batch_size=x.batch_size)
