"""Attention over sparse tensors: full (per item), shifted windows, and cross-attention to a
dense context. Kernels come from ``backends.attention``."""
from __future__ import annotations

from typing import Tuple

import torch

from ..backends.attention import SeqLens, varlen_attention
from .tensor import SparseTensor

__all__ = ["sparse_self_attention", "sparse_windowed_self_attention", "sparse_cross_attention", "window_partition"]


def _item_lens(x: SparseTensor) -> SeqLens:
    key = "item_seqlens"
    if key not in x.cache:
        x.cache[key] = SeqLens(x.seq_lens())
    return x.cache[key]


def sparse_self_attention(qkv: SparseTensor) -> SparseTensor:
    """Full self-attention within each batch item.

    Args:
        qkv: feats [N, 3, H, C].
    Returns:
        feats [N, H, C].
    """
    q, k, v = qkv.feats.unbind(dim=1)
    lens = _item_lens(qkv)
    return qkv.replace(varlen_attention(q, k, v, lens))


def window_partition(coords: torch.Tensor, window_size: int, shift: int) -> Tuple[torch.Tensor, torch.Tensor, SeqLens]:
    """Group voxels into cubic windows, as the official swin attention does.

    Window id per axis = floor((coord + shift) / window_size), plus the batch index; the number of
    windows per axis comes from the largest shifted coordinate over the whole batch. No cyclic
    roll and no masks: every non-empty window is an independent sequence.

    Args:
        coords: [N, 4] int (batch, x, y, z).
    Returns:
        order: [N] int64, rows grouped by window; inverse: [N] int64 undoing ``order``;
        lengths of the windows in ``order``.
    """
    shifted = coords.long().clone()
    shifted[:, 1:] += shift
    # two host reads in all (the extents, the counts): each one waits for the device
    extent = shifted.amax(0).tolist()
    num_windows = [(extent[i] + 1 + window_size - 1) // window_size for i in (1, 2, 3)]
    window = shifted[:, 1:] // window_size
    window_id = ((shifted[:, 0] * num_windows[0] + window[:, 0]) * num_windows[1] + window[:, 1]) * num_windows[2] \
        + window[:, 2]
    order = torch.argsort(window_id)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.shape[0], device=order.device)
    counts = torch.zeros((extent[0] + 1) * num_windows[0] * num_windows[1] * num_windows[2], dtype=torch.long,
                         device=coords.device).index_add_(0, window_id, torch.ones_like(window_id))
    lengths = [n for n in counts.tolist() if n > 0]
    return order, inverse, SeqLens(lengths)


def sparse_windowed_self_attention(qkv: SparseTensor, window_size: int, shift: int) -> SparseTensor:
    """Self-attention inside cubic windows of ``window_size`` voxels, shifted by ``shift``.

    Args:
        qkv: feats [N, 3, H, C].
    Returns:
        feats [N, H, C].
    """
    if qkv.feats.shape[0] == 0:
        return qkv.replace(qkv.feats[:, 0])
    key = f"windows_{window_size}_{shift}"
    if key not in qkv.cache:
        qkv.cache[key] = window_partition(qkv.coords, window_size, shift)
    order, inverse, lens = qkv.cache[key]
    q, k, v = qkv.feats[order].unbind(dim=1)
    return qkv.replace(varlen_attention(q, k, v, lens)[inverse])


def sparse_cross_attention(q: SparseTensor, k: torch.Tensor, v: torch.Tensor) -> SparseTensor:
    """Each item's voxels attend to that item's dense context.

    Args:
        q: feats [N, H, C]; k: [B, L, H, C]; v: [B, L, H, Cv] (B = q.batch_size).
    Returns:
        feats [N, H, Cv].
    """
    batch, length = k.shape[:2]
    if batch != q.batch_size:
        raise ValueError(f"cross-attention: context batch {batch} does not match the sparse batch {q.batch_size}")
    # cached with q's voxels: building the offsets copies them to the device, which waits for
    # the queued work; once per coordinate set keeps the GPU queue full across blocks and steps
    key = f"context_seqlens_{batch}x{length}"
    if key not in q.cache:
        q.cache[key] = SeqLens([length] * batch)
    kv_lens = q.cache[key]
    out = varlen_attention(q.feats, k.reshape(batch * length, *k.shape[2:]), v.reshape(batch * length, *v.shape[2:]),
                           _item_lens(q), kv_lens)
    return q.replace(out)
