"""SparseTensor: features on active voxels of a batch of grids."""
from __future__ import annotations

import operator
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import torch

from ..backends.transfer import to_device

__all__ = ["SparseTensor", "sparse_cat", "batch_layout"]


class SparseTensor:
    """Voxel features of a batch of sparse grids.

    Args:
        feats: [N, *C] features, one row per active voxel.
        coords: [N, 4] int32 (batch, x, y, z). Rows of one batch item are contiguous and items
            are in increasing batch order (the order the official pipeline produces).
        batch_size: number of items; defaults to ``coords[:, 0].max() + 1``. Give it for an
            empty tensor or when trailing items are empty.

    Attributes:
        layout: per item, the ``slice`` of its rows.
        cache: per-coordinate-set data (neighbour maps, window partitions, pooling maps) shared by
            every tensor derived with ``replace`` and keyed by the producer; dropped when coords
            change.
    """

    def __init__(self, feats: torch.Tensor, coords: torch.Tensor, batch_size: Optional[int] = None,
                 layout: Optional[List[slice]] = None, cache: Optional[Dict[str, Any]] = None):
        if coords.dim() != 2 or coords.shape[1] != 4:
            raise ValueError(f"SparseTensor: coords must be [N, 4] (batch, x, y, z), got {tuple(coords.shape)}")
        if feats.shape[0] != coords.shape[0]:
            raise ValueError(f"SparseTensor: feats has {feats.shape[0]} rows but coords has {coords.shape[0]}")
        if coords.is_floating_point():
            raise ValueError(f"SparseTensor: coords must be an integer tensor, got {coords.dtype}")
        if coords.dtype != torch.int32:
            coords = coords.int()
        self.feats = feats
        self.coords = coords
        if layout is None:
            layout = batch_layout(coords, batch_size)
        self.layout = layout
        self.cache = {} if cache is None else cache

    # ----------------------------------------------------------------------------- shape
    @property
    def batch_size(self) -> int:
        return len(self.layout)

    @property
    def shape(self) -> torch.Size:
        """(batch_size, *feature shape), as the official SparseTensor reports it."""
        return torch.Size([self.batch_size, *self.feats.shape[1:]])

    @property
    def dtype(self) -> torch.dtype:
        return self.feats.dtype

    @property
    def device(self) -> torch.device:
        return self.feats.device

    def dim(self) -> int:
        return len(self.shape)

    def seq_lens(self) -> List[int]:
        """Number of voxels of each item."""
        return [s.stop - s.start for s in self.layout]

    def common_length(self) -> Optional[int]:
        """The number of voxels every item has, or None when items differ in size (or there are none):
        such a batch (a CFG pair) reshapes to dense [B, n, *C] tokens."""
        lengths = self.seq_lens()
        return lengths[0] if lengths and all(n == lengths[0] for n in lengths) else None

    def batch_index(self) -> torch.Tensor:
        """[N] int64 item index of every row (cached)."""
        if "batch_index" not in self.cache:
            self.cache["batch_index"] = self.coords[:, 0].long()
        return self.cache["batch_index"]

    # ------------------------------------------------------------------------- derivation
    def replace(self, feats: torch.Tensor, coords: Optional[torch.Tensor] = None) -> "SparseTensor":
        """Same voxels (and cache) with new features; new coords start a fresh cache."""
        if coords is None:
            return SparseTensor(feats, self.coords, layout=self.layout, cache=self.cache)
        return SparseTensor(feats, coords, batch_size=self.batch_size)

    def to(self, *args, **kwargs) -> "SparseTensor":
        """``torch.Tensor.to`` semantics for feats; coords follow the device only."""
        feats = self.feats.to(*args, **kwargs)
        if feats.device == self.coords.device:
            return self.replace(feats)
        return SparseTensor(feats, self.coords.to(feats.device), layout=self.layout)

    def type(self, dtype: torch.dtype) -> "SparseTensor":
        return self.replace(self.feats.type(dtype))

    def float(self) -> "SparseTensor":
        return self.replace(self.feats.float())

    def half(self) -> "SparseTensor":
        return self.replace(self.feats.half())

    def cpu(self) -> "SparseTensor":
        return self.to("cpu")

    def cuda(self) -> "SparseTensor":
        return self.to("cuda")

    def detach(self) -> "SparseTensor":
        return self.replace(self.feats.detach())

    def reshape(self, *shape: int) -> "SparseTensor":
        """Reshape the per-voxel feature dims: ``feats.reshape(N, *shape)``."""
        return self.replace(self.feats.reshape(self.feats.shape[0], *shape))

    def unbind(self, dim: int) -> List["SparseTensor"]:
        """dim 0: one tensor per batch item; other dims: split the feature dim."""
        if dim == 0:
            return [self[i] for i in range(self.batch_size)]
        return [self.replace(f) for f in self.feats.unbind(dim)]

    def __getitem__(self, idx: Union[int, slice, Sequence[int], torch.Tensor]) -> "SparseTensor":
        """Select batch items (renumbered from 0)."""
        if isinstance(idx, int):
            items = [idx]
        elif isinstance(idx, slice):
            items = list(range(*idx.indices(self.batch_size)))
        elif isinstance(idx, torch.Tensor):
            items = (idx.nonzero().squeeze(1) if idx.dtype == torch.bool else idx).tolist()
        else:
            items = list(idx)
        for i in items:
            if not -self.batch_size <= i < self.batch_size:
                raise IndexError(f"SparseTensor: batch item {i} out of range for batch size {self.batch_size}")
        parts = [self.layout[i] for i in items]
        coords = torch.cat([self.coords[s] for s in parts]) if parts else self.coords[:0]
        coords = coords.clone()
        coords[:, 0] = torch.repeat_interleave(
            torch.arange(len(parts), dtype=torch.int32, device=coords.device),
            to_device([s.stop - s.start for s in parts], coords.device, torch.long))
        feats = torch.cat([self.feats[s] for s in parts]) if parts else self.feats[:0]
        return SparseTensor(feats, coords, batch_size=len(parts))

    # ------------------------------------------------------------------------- arithmetic
    def _combine(self, op: Callable[[Any, Any], torch.Tensor], other: Any, reverse: bool = False) -> "SparseTensor":
        """``op(feats, other)`` (``op(other, feats)`` with ``reverse``) on the same voxels. ``other``:
        a sparse tensor on these voxels, a per-item tensor [B, *C] (e.g. adaLN scale/shift) that
        applies to every voxel of its item, or anything that broadcasts against feats."""
        feats = self.feats
        if isinstance(other, SparseTensor):
            other = other.feats
        elif isinstance(other, torch.Tensor) and other.dim() == feats.dim() and other.dim() >= 1 \
                and other.shape[0] == self.batch_size:
            length = self.common_length()
            if length is not None:
                # items of one size (a CFG pair): broadcast over a [B, n, *C] view instead of
                # gathering an [N, *C] copy of ``other``
                grouped = feats.reshape(self.batch_size, length, *feats.shape[1:])
                out = op(other.unsqueeze(1), grouped) if reverse else op(grouped, other.unsqueeze(1))
                return self.replace(out.reshape(feats.shape[0], *out.shape[2:]))
            other = other[self.batch_index()]
        return self.replace(op(other, feats) if reverse else op(feats, other))

    def __neg__(self) -> "SparseTensor":
        return self.replace(-self.feats)

    def __add__(self, other): return self._combine(operator.add, other)
    def __radd__(self, other): return self._combine(operator.add, other, reverse=True)
    def __sub__(self, other): return self._combine(operator.sub, other)
    def __rsub__(self, other): return self._combine(operator.sub, other, reverse=True)
    def __mul__(self, other): return self._combine(operator.mul, other)
    def __rmul__(self, other): return self._combine(operator.mul, other, reverse=True)
    def __truediv__(self, other): return self._combine(operator.truediv, other)
    def __rtruediv__(self, other): return self._combine(operator.truediv, other, reverse=True)

    def __repr__(self) -> str:
        return (f"SparseTensor(voxels={self.feats.shape[0]}, batch={self.batch_size}, "
                f"feats={tuple(self.feats.shape[1:])}, dtype={self.dtype}, device={self.device})")


def batch_layout(coords: torch.Tensor, batch_size: Optional[int]) -> List[slice]:
    """Row slice of each item; checks that items are contiguous and in order."""
    if coords.shape[0] == 0:
        if batch_size is None:
            raise ValueError("SparseTensor: an empty tensor needs an explicit batch_size")
        return [slice(0, 0)] * batch_size
    batch = coords[:, 0]
    if int(batch.min()) < 0:
        raise ValueError("SparseTensor: batch indices in coords[:, 0] must be >= 0")
    if int(coords[:, 1:].min()) < 0:
        raise ValueError("SparseTensor: voxel coordinates must be >= 0")
    n_items = int(batch.max()) + 1
    if batch_size is None:
        batch_size = n_items
    elif batch_size < n_items:
        raise ValueError(f"SparseTensor: coords reference batch item {n_items - 1} but batch_size is {batch_size}")
    if bool((batch[1:] < batch[:-1]).any()):
        raise ValueError("SparseTensor: rows must be grouped by batch item in increasing order (sort by coords[:, 0])")
    counts = torch.bincount(batch.long(), minlength=batch_size).tolist()
    layout, start = [], 0
    for c in counts:
        layout.append(slice(start, start + c))
        start += c
    return layout


def sparse_cat(inputs: Sequence[SparseTensor], dim: int = 0) -> SparseTensor:
    """dim 0: stack the batches (items renumbered); other dims: concatenate features."""
    if dim != 0:
        return inputs[0].replace(torch.cat([x.feats for x in inputs], dim=dim))
    coords, offset = [], 0
    for x in inputs:
        c = x.coords.clone()
        c[:, 0] += offset
        coords.append(c)
        offset += x.batch_size
    return SparseTensor(torch.cat([x.feats for x in inputs]), torch.cat(coords), batch_size=offset)
