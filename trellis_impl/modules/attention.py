"""Multi-head attention for dense token tensors and sparse voxel tensors.

Parameter names equal the released checkpoints': ``to_qkv`` (self), ``to_q``/``to_kv``
(cross), ``to_out``, ``q_rms_norm.gamma``/``k_rms_norm.gamma`` (QK RMS norm).
"""
from __future__ import annotations

from typing import Literal, Optional, Union

import torch
import torch.nn as nn

from ..backends.attention import attention
from ..sparse import SparseTensor, sparse_cross_attention, sparse_self_attention, sparse_windowed_self_attention
from .norm import MultiHeadRMSNorm
from .ops import resolve_operations

__all__ = ["MultiHeadAttention"]

Tokens = Union[torch.Tensor, SparseTensor]


class MultiHeadAttention(nn.Module):
    """Self- or cross-attention.

    Args:
        channels: token width C (= heads x head_dim).
        num_heads: H.
        ctx_channels: context width for cross-attention (default C).
        type: 'self' or 'cross' (cross-attention is always full, over a dense context).
        attn_mode: 'full', or 'windowed' (sparse input only: shifted-window self-attention).
        window_size, shift_window: window width and shift (voxels) for 'windowed'.
        qk_rms_norm: normalise queries and keys per head before attention.
        dtype, device, operations: how the layers are built (``modules.ops``).
    """

    def __init__(self, channels: int, num_heads: int, ctx_channels: Optional[int] = None,
                 type: Literal["self", "cross"] = "self", attn_mode: Literal["full", "windowed"] = "full",
                 window_size: Optional[int] = None, shift_window: int = 0, qkv_bias: bool = True,
                 qk_rms_norm: bool = False, dtype=None, device=None, operations=None):
        super().__init__()
        if channels % num_heads:
            raise ValueError(f"attention: channels {channels} not divisible by num_heads {num_heads}")
        if type not in ("self", "cross") or attn_mode not in ("full", "windowed"):
            raise ValueError(f"attention: unsupported type {type!r} / attn_mode {attn_mode!r}")
        if type == "cross" and attn_mode != "full":
            raise ValueError("attention: cross-attention is full attention only")
        self.num_heads = num_heads
        self.head_dim = channels // num_heads
        self.type = type
        self.attn_mode = attn_mode
        self.window_size = window_size
        self.shift_window = shift_window
        self.qk_rms_norm = qk_rms_norm
        ops, factory = resolve_operations(operations), dict(dtype=dtype, device=device)
        if type == "self":
            self.to_qkv = ops.Linear(channels, channels * 3, bias=qkv_bias, **factory)
        else:
            self.to_q = ops.Linear(channels, channels, bias=qkv_bias, **factory)
            self.to_kv = ops.Linear(ctx_channels or channels, channels * 2, bias=qkv_bias, **factory)
        if qk_rms_norm:
            self.q_rms_norm = MultiHeadRMSNorm(channels // num_heads, num_heads, **factory)
            self.k_rms_norm = MultiHeadRMSNorm(channels // num_heads, num_heads, **factory)
        self.to_out = ops.Linear(channels, channels, **factory)

    def forward(self, x: Tokens, context: Optional[torch.Tensor] = None) -> Tokens:
        """x: dense [B, L, C] or sparse (feats [N, C]); context: dense [B, Lc, Cc] (cross only)."""
        sparse = isinstance(x, SparseTensor)
        feats = x.feats if sparse else x
        lead = feats.shape[:-1]
        if self.type == "self":
            q, k, v = self.to_qkv(feats).reshape(*lead, 3, self.num_heads, self.head_dim).unbind(dim=-3)
        else:
            q = self.to_q(feats).reshape(*lead, self.num_heads, self.head_dim)
            k, v = self.to_kv(context).reshape(*context.shape[:-1], 2, self.num_heads, self.head_dim).unbind(dim=-3)
        if self.qk_rms_norm:
            q, k = self.q_rms_norm(q), self.k_rms_norm(k)
        if not sparse:
            h = attention(q, k, v)
        elif self.type == "cross":
            h = sparse_cross_attention(x.replace(q), k, v).feats
        else:
            qkv = x.replace(torch.stack([q, k, v], dim=1))
            if self.attn_mode == "full":
                h = sparse_self_attention(qkv).feats
            else:
                h = sparse_windowed_self_attention(qkv, self.window_size, self.shift_window).feats
        out = self.to_out(h.reshape(*lead, self.num_heads * self.head_dim))
        return x.replace(out) if sparse else out
