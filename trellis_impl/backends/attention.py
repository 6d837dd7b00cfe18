"""Attention: one dispatch point for dense and variable-length (packed) attention.

Backends (``TRELLIS_ATTN_BACKEND`` or ``backend=`` or ``set_backend('attention', ...)``):

* ``sdpa``: ``torch.nn.functional.scaled_dot_product_attention`` (runs anywhere; on CUDA it
  picks cuDNN/flash/efficient kernels). Variable-length input runs one call per sequence when
  there are few sequences; when there are many (windows), one padded, masked call per bucket of
  sequences of similar lengths.
* ``naive``: explicit float32 softmax(QK^T/sqrt(d))V per sequence; the reference for tests.
* ``torch_varlen``: torch's built-in FlashAttention-2 varlen kernel
  (``torch.nn.attention.varlen.varlen_attn``, torch >= 2.9); CUDA, fp16/bf16.
* ``flash_attn``: the flash-attn 2 package (``flash_attn.flash_attn_varlen_func``); CUDA, fp16/bf16.
* ``flash_attn_4``: the flash-attn-4 package (CuTe DSL, ``flash_attn.cute.flash_attn_varlen_func``);
  Hopper/Blackwell, fp16/bf16. Its first call per head size and dtype compiles the kernel (seconds).

Automatic choice: CPU -> ``sdpa``; CUDA -> ``torch_varlen``, ``flash_attn_4``, ``flash_attn``,
``sdpa`` for packed sequences of half precision, ``sdpa`` for everything else. The dense path
always uses ``sdpa`` unless ``naive`` is requested.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .registry import family, importable
from .transfer import to_device

__all__ = ["SeqLens", "attention", "varlen_attention", "ATTENTION"]

_HALF = (torch.float16, torch.bfloat16)
# Above this many sequences the sdpa path pads them into masked batches instead of looping.
_LOOP_MAX_SEQUENCES = 8
# The padded batches group sequences whose lengths fall in one class (r^(c-1), r^c]: on the demo
# model's windows (16 objects at 32^3, windows of 8 voxels) one batch padded to the longest window
# computed 5x (unshifted) to 17x (shifted) the attention's real work, buckets of ratio 1.5 1.4x in
# 13-14 calls.
_BUCKET_RATIO = 1.5


@dataclass(frozen=True)
class _Padding:
    """Packed sequences laid out as padded batches, one per bucket: the packed rows ``order``,
    taken in consecutive chunks of ``counts[b]`` rows, fill the flat slots ``slots[b]`` of bucket
    b's ``shapes[b]`` = (sequences, width) batch; ``valid[b]`` ([sequences, width] bool) marks the
    filled slots, None where all are."""
    order: torch.Tensor
    counts: List[int]
    slots: List[torch.Tensor]
    shapes: List[Tuple[int, int]]
    valid: List[Optional[torch.Tensor]]

    def batches(self, x: torch.Tensor) -> List[torch.Tensor]:
        """Packed ``x`` [T, ...] -> one zero-padded [sequences, width, ...] tensor per bucket."""
        return [x.new_zeros(shape[0] * shape[1], *x.shape[1:]).index_put((slots,), chunk).reshape(*shape, *x.shape[1:])
                for chunk, slots, shape in zip(x[self.order].split(self.counts), self.slots, self.shapes)]


def _padding(lengths: np.ndarray, buckets: List[np.ndarray], device: torch.device) -> Tuple[_Padding, np.ndarray]:
    """The ``_Padding`` of sequences of ``lengths`` grouped as ``buckets`` (arrays of sequence
    indices), and its ``order`` on the host."""
    starts = np.concatenate([[0], np.cumsum(lengths)[:-1]])
    order, counts, slots, shapes, valid = [], [], [], [], []
    for bucket in buckets:
        width = int(lengths[bucket].max())
        filled = np.arange(width)[None, :] < lengths[bucket][:, None]
        flat = np.flatnonzero(filled)
        order.append((starts[bucket][:, None] + np.arange(width)[None, :]).reshape(-1)[flat])
        counts.append(flat.shape[0])
        slots.append(to_device(flat, device))
        shapes.append((bucket.shape[0], width))
        valid.append(None if filled.all() else to_device(filled, device))
    order = np.concatenate(order) if order else np.zeros(0, dtype=np.int64)
    return _Padding(to_device(order, device), counts, slots, shapes, valid), order


@dataclass
class SeqLens:
    """Lengths of the sequences packed along dim 0 of a varlen tensor.

    Attributes:
        lengths: host-side list of sequence lengths (sum = number of packed tokens).
    """
    lengths: List[int]
    _cu: Dict[torch.device, torch.Tensor] = field(default_factory=dict, repr=False)
    _paddings: Dict[tuple, Tuple[_Padding, _Padding, torch.Tensor]] = field(default_factory=dict, repr=False)

    @property
    def max(self) -> int:
        return max(self.lengths) if self.lengths else 0

    @property
    def total(self) -> int:
        return sum(self.lengths)

    def cu(self, device: torch.device) -> torch.Tensor:
        """Cumulative offsets, int32 ``[len(lengths)+1]`` on ``device`` (built once per device)."""
        if device not in self._cu:
            self._cu[device] = to_device(np.concatenate([[0], np.cumsum(self.lengths)]).astype(np.int32), device)
        return self._cu[device]

    def paddings(self, kv_lens: "SeqLens", device: torch.device) -> Tuple[_Padding, _Padding, torch.Tensor]:
        """Queries (these lengths) and keys (``kv_lens``) of the same sequences in padded batches,
        one per bucket of sequences whose query and key lengths each fall in one class of ratio
        ``_BUCKET_RATIO``; and ``restore`` [Tq] int64, the row of each packed query in the buckets'
        concatenated outputs. Built once per device and key lengths; empty sequences are left out."""
        key = (device, tuple(kv_lens.lengths))
        if key not in self._paddings:
            q, kv = np.asarray(self.lengths, dtype=np.int64), np.asarray(kv_lens.lengths, dtype=np.int64)
            classes = np.stack([np.ceil(np.log(np.maximum(n, 1)) / math.log(_BUCKET_RATIO)) for n in (q, kv)], axis=1)
            kept = np.flatnonzero(q > 0)
            found, bucket_of = np.unique(classes[kept], axis=0, return_inverse=True)
            buckets = [kept[bucket_of.reshape(-1) == b] for b in range(found.shape[0])]
            (q_pad, q_order), (kv_pad, _) = _padding(q, buckets, device), _padding(kv, buckets, device)
            restore = np.empty_like(q_order)
            restore[q_order] = np.arange(q_order.shape[0])
            self._paddings[key] = (q_pad, kv_pad, to_device(restore, device))
        return self._paddings[key]


def _naive(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q [B,Lq,H,C], k [B,Lk,H,C], v [B,Lk,H,Cv] -> [B,Lq,H,Cv], computed in float32."""
    scale = 1.0 / math.sqrt(q.shape[-1])
    logits = torch.einsum("blhc,bmhc->bhlm", q.float(), k.float()) * scale
    out = torch.einsum("bhlm,bmhc->blhc", logits.softmax(dim=-1), v.float())
    return out.to(q.dtype)


def _sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: Optional[torch.Tensor] = None) -> torch.Tensor:
    """q [B,Lq,H,C], k/v [B,Lk,H,C]; mask [B,1,1,Lk] bool (True = attend) -> [B,Lq,H,C]."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def _split(x: torch.Tensor, lengths: List[int]) -> List[torch.Tensor]:
    return list(torch.split(x, lengths, dim=0))


def _varlen_per_sequence(dense_fn, q, k, v, q_lens: SeqLens, kv_lens: SeqLens) -> torch.Tensor:
    outs = [dense_fn(qi[None], ki[None], vi[None])[0]
            for qi, ki, vi in zip(_split(q, q_lens.lengths), _split(k, kv_lens.lengths), _split(v, kv_lens.lengths))]
    return torch.cat(outs, dim=0) if outs else q.new_zeros(0, *q.shape[1:-1], v.shape[-1])


def _varlen_sdpa(q, k, v, q_lens: SeqLens, kv_lens: SeqLens) -> torch.Tensor:
    if len(q_lens.lengths) <= _LOOP_MAX_SEQUENCES:
        return _varlen_per_sequence(_sdpa, q, k, v, q_lens, kv_lens)
    # Many short sequences (windows): one padded batch per bucket of similar lengths; padded keys
    # are masked out and padded query rows dropped.
    q_pad, kv_pad, restore = q_lens.paddings(kv_lens, q.device)
    outs = []
    for qb, kb, vb, slots, valid in zip(q_pad.batches(q), kv_pad.batches(k), kv_pad.batches(v), q_pad.slots, kv_pad.valid):
        out = _sdpa(qb, kb, vb, None if valid is None else valid[:, None, None, :])
        outs.append(out.reshape(-1, *out.shape[2:])[slots])
    return torch.cat(outs)[restore]


def _varlen_naive(q, k, v, q_lens: SeqLens, kv_lens: SeqLens) -> torch.Tensor:
    return _varlen_per_sequence(_naive, q, k, v, q_lens, kv_lens)


def _varlen_torch_flash(q, k, v, q_lens: SeqLens, kv_lens: SeqLens) -> torch.Tensor:
    from torch.nn.attention.varlen import varlen_attn
    # Positional (query, key, value, cu_seq_q, cu_seq_k, max_q, max_k) since torch 2.9 (checked: 2.11, 2.13); returns the output alone.
    return varlen_attn(q, k, v, q_lens.cu(q.device), kv_lens.cu(q.device), q_lens.max, kv_lens.max)


def _varlen_flash_attn(q, k, v, q_lens: SeqLens, kv_lens: SeqLens) -> torch.Tensor:
    from flash_attn import flash_attn_varlen_func
    return flash_attn_varlen_func(q, k, v, q_lens.cu(q.device), kv_lens.cu(q.device), q_lens.max, kv_lens.max)


def _varlen_flash_attn_4(q, k, v, q_lens: SeqLens, kv_lens: SeqLens) -> torch.Tensor:
    from flash_attn.cute import flash_attn_varlen_func
    # Keywords: the fourth positional parameter is ``qv`` (MLA), not the sequence offsets.
    out, _lse = flash_attn_varlen_func(q, k, v, cu_seqlens_q=q_lens.cu(q.device), cu_seqlens_k=kv_lens.cu(q.device),
                                       max_seqlen_q=q_lens.max, max_seqlen_k=kv_lens.max)
    return out


def _anywhere(device: torch.device, dtype: torch.dtype) -> bool:
    return True


def _cuda_half(device: torch.device, dtype: torch.dtype) -> bool:
    return device.type == "cuda" and dtype in _HALF


def _torch_varlen_available(device, dtype) -> bool:
    return _cuda_half(device, dtype) and importable("torch.nn.attention.varlen")


def _flash_attn_available(device, dtype) -> bool:
    # flash-attn-4 alone also makes ``flash_attn`` importable (a namespace holding ``cute``): look for FA2's module.
    return _cuda_half(device, dtype) and importable("flash_attn.flash_attn_interface")


def _flash_attn_4_available(device, dtype) -> bool:
    return (_cuda_half(device, dtype) and torch.cuda.get_device_capability(device)[0] >= 9
            and importable("flash_attn.cute"))


ATTENTION = family("attention")
ATTENTION.register("sdpa", _varlen_sdpa, _anywhere)
ATTENTION.register("naive", _varlen_naive, _anywhere)
ATTENTION.register("torch_varlen", _varlen_torch_flash, _torch_varlen_available)
ATTENTION.register("flash_attn", _varlen_flash_attn, _flash_attn_available)
ATTENTION.register("flash_attn_4", _varlen_flash_attn_4, _flash_attn_4_available)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_lens: SeqLens,
                     kv_lens: Optional[SeqLens] = None, backend: Optional[str] = None) -> torch.Tensor:
    """Attention over sequences packed along dim 0 (no attention across sequences).

    Args:
        q: [Tq, H, C] queries of all sequences, concatenated.
        k: [Tk, H, C] keys; v: [Tk, H, Cv] values.
        q_lens: lengths of the query sequences; kv_lens: of the key sequences (default q_lens).
        backend: a backend name or None/'auto'.

    Returns:
        [Tq, H, Cv], scale 1/sqrt(C), in q's dtype.
    """
    kv_lens = q_lens if kv_lens is None else kv_lens
    if len(q_lens.lengths) != len(kv_lens.lengths):
        raise ValueError(f"varlen_attention: {len(q_lens.lengths)} query sequences but {len(kv_lens.lengths)} key sequences")
    if q.shape[0] != q_lens.total or k.shape[0] != kv_lens.total:
        raise ValueError(f"varlen_attention: packed lengths {q.shape[0]}/{k.shape[0]} do not match "
                         f"the sequence lengths {q_lens.total}/{kv_lens.total}")
    if q.shape[0] == 0:
        return q.new_zeros(0, q.shape[1], v.shape[-1])
    return ATTENTION.resolve(q.device, q.dtype, backend).fn(q, k, v, q_lens, kv_lens)


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: Optional[str] = None) -> torch.Tensor:
    """Dense multi-head attention.

    Args:
        q: [B, Lq, H, C]; k: [B, Lk, H, C]; v: [B, Lk, H, Cv].
        backend: 'naive' for the float32 reference; anything else uses SDPA, which is the fastest
            choice at the dense sizes TRELLIS uses (4096 tokens) on every device measured.

    Returns:
        [B, Lq, H, Cv] in q's dtype.
    """
    name = ATTENTION.resolve(q.device, q.dtype, backend).name
    return _naive(q, k, v) if name == "naive" else _sdpa(q, k, v)
