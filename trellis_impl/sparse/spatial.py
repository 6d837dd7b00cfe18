"""Changing a sparse tensor's resolution: pooling by 2, its inverse, and subdivision."""
from __future__ import annotations

import torch

from .tensor import SparseTensor

__all__ = ["downsample", "upsample", "subdivide"]


def downsample(x: SparseTensor, factor: int = 2) -> SparseTensor:
    """Average-pool voxels into cells of ``factor``^3 (coords // factor).

    Output voxels are sorted by (batch, x, y, z). Matches the official pooling exactly, including
    its use of ``scatter_reduce(zeros, 'mean')`` with the zero initial value counted: each output
    is ``sum / (count + 1)``. The mapping back is stored so ``upsample`` can invert it.
    """
    coords = x.coords.long()
    pooled = coords.clone()
    pooled[:, 1:] //= factor
    if coords.shape[0] == 0:
        out = SparseTensor(x.feats[:0], x.coords[:0], batch_size=x.batch_size)
        out.cache["upsample"] = (x.coords, x.layout, torch.zeros(0, dtype=torch.long, device=x.device))
        return out
    extent = [int(pooled[:, i].max()) + 1 for i in range(4)]
    code = ((pooled[:, 0] * extent[1] + pooled[:, 1]) * extent[2] + pooled[:, 2]) * extent[3] + pooled[:, 3]
    unique_code, inverse = torch.unique(code, return_inverse=True)
    channels = x.feats.shape[1:]
    flat = x.feats.reshape(x.feats.shape[0], -1)
    sums = torch.zeros(unique_code.shape[0], flat.shape[1], dtype=flat.dtype, device=flat.device)
    sums.index_add_(0, inverse, flat)
    counts = torch.bincount(inverse, minlength=unique_code.shape[0]).to(flat.dtype) + 1
    feats = (sums / counts[:, None]).reshape(-1, *channels)
    new_coords = torch.stack([
        unique_code // (extent[1] * extent[2] * extent[3]),
        (unique_code // (extent[2] * extent[3])) % extent[1],
        (unique_code // extent[3]) % extent[2],
        unique_code % extent[3],
    ], dim=1).int()
    out = SparseTensor(feats, new_coords, batch_size=x.batch_size)
    out.cache["upsample"] = (x.coords, x.layout, inverse)
    return out


def upsample(x: SparseTensor) -> SparseTensor:
    """Inverse of the ``downsample`` that produced ``x``'s voxels: copy each cell's feature back
    to its fine voxels, in their original order."""
    if "upsample" not in x.cache:
        raise ValueError("upsample: this sparse tensor was not produced by downsample (no pooling map)")
    coords, layout, inverse = x.cache["upsample"]
    return SparseTensor(x.feats[inverse], coords, layout=layout)


def subdivide(x: SparseTensor) -> SparseTensor:
    """Split every voxel into its 8 children at twice the resolution.

    Children of a voxel are contiguous, in (dx, dy, dz) row-major order; features are copied.
    """
    child = torch.tensor([[0, dx, dy, dz] for dx in (0, 1) for dy in (0, 1) for dz in (0, 1)],
                         dtype=torch.int32, device=x.device)
    parent = x.coords.clone()
    parent[:, 1:] *= 2
    coords = (parent[:, None, :] + child[None]).reshape(-1, 4)
    feats = x.feats.repeat_interleave(8, dim=0)
    return SparseTensor(feats, coords, batch_size=x.batch_size)
