"""Transformer blocks (dense and sparse tokens share one implementation)."""
from __future__ import annotations

from functools import partial
from typing import Literal, Optional

import torch
import torch.nn as nn

from .attention import MultiHeadAttention, Tokens
from .features import gate, map_feats, modulate
from .norm import norm32
from .ops import resolve_operations

__all__ = ["FeedForwardNet", "TransformerBlock", "ModulatedTransformerCrossBlock"]


class FeedForwardNet(nn.Module):
    """Linear -> GELU(tanh) -> Linear. Keys: ``mlp.0``, ``mlp.2``."""

    def __init__(self, channels: int, mlp_ratio: float = 4.0, dtype=None, device=None, operations=None):
        super().__init__()
        hidden = int(channels * mlp_ratio)
        ops = resolve_operations(operations)
        self.mlp = nn.Sequential(ops.Linear(channels, hidden, dtype=dtype, device=device), nn.GELU(approximate="tanh"),
                                 ops.Linear(hidden, channels, dtype=dtype, device=device))

    def forward(self, x: Tokens) -> Tokens:
        return map_feats(self.mlp, x)


class TransformerBlock(nn.Module):
    """Pre-norm self-attention + MLP (the SLat VAE's blocks). Norms without affine by default."""

    def __init__(self, channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 attn_mode: Literal["full", "windowed"] = "full", window_size: Optional[int] = None,
                 shift_window: int = 0, qk_rms_norm: bool = False, qkv_bias: bool = True, ln_affine: bool = False,
                 dtype=None, device=None, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        factory = dict(dtype=dtype, device=device)
        self.norm1 = ops.LayerNorm(channels, elementwise_affine=ln_affine, eps=1e-6, **factory)
        self.norm2 = ops.LayerNorm(channels, elementwise_affine=ln_affine, eps=1e-6, **factory)
        self.attn = MultiHeadAttention(channels, num_heads, attn_mode=attn_mode, window_size=window_size,
                                       shift_window=shift_window, qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm,
                                       operations=ops, **factory)
        self.mlp = FeedForwardNet(channels, mlp_ratio, operations=ops, **factory)

    def forward(self, x: Tokens) -> Tokens:
        x = x + self.attn(map_feats(partial(norm32, self.norm1), x))
        return x + self.mlp(map_feats(partial(norm32, self.norm2), x))


class ModulatedTransformerCrossBlock(nn.Module):
    """adaLN-modulated self-attention, cross-attention to the condition, modulated MLP.

    norm1 (no affine) + modulation + self-attn + gate; norm2 (affine) + cross-attn (no
    modulation, no gate); norm3 (no affine) + modulation + MLP + gate. Keys: ``norm2``,
    ``self_attn``, ``cross_attn``, ``mlp``, ``adaLN_modulation.1``.
    """

    def __init__(self, channels: int, ctx_channels: int, num_heads: int, mlp_ratio: float = 4.0,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False, qkv_bias: bool = True,
                 share_mod: bool = False, dtype=None, device=None, operations=None):
        super().__init__()
        self.share_mod = share_mod
        ops = resolve_operations(operations)
        factory = dict(dtype=dtype, device=device)
        self.norm1 = ops.LayerNorm(channels, elementwise_affine=False, eps=1e-6, **factory)
        self.norm2 = ops.LayerNorm(channels, elementwise_affine=True, eps=1e-6, **factory)
        self.norm3 = ops.LayerNorm(channels, elementwise_affine=False, eps=1e-6, **factory)
        self.self_attn = MultiHeadAttention(channels, num_heads, type="self", qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm,
                                            operations=ops, **factory)
        self.cross_attn = MultiHeadAttention(channels, num_heads, ctx_channels=ctx_channels, type="cross",
                                             qkv_bias=qkv_bias, qk_rms_norm=qk_rms_norm_cross, operations=ops, **factory)
        self.mlp = FeedForwardNet(channels, mlp_ratio, operations=ops, **factory)
        if not share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(channels, 6 * channels, **factory))

    def forward(self, x: Tokens, mod: torch.Tensor, context: torch.Tensor) -> Tokens:
        """x: dense [B, L, C] or sparse; mod: [B, C] timestep embedding (or [B, 6C] when
        share_mod); context: [B, Lc, Cc]."""
        if not self.share_mod:
            mod = self.adaLN_modulation(mod)
        shift_msa, scale_msa, gate_msa, shift_mlp, scale_mlp, gate_mlp = mod.chunk(6, dim=1)
        h = modulate(map_feats(partial(norm32, self.norm1), x), shift_msa, scale_msa)
        x = x + gate(self.self_attn(h), gate_msa)
        x = x + self.cross_attn(map_feats(partial(norm32, self.norm2), x), context)
        h = modulate(map_feats(partial(norm32, self.norm3), x), shift_mlp, scale_mlp)
        return x + gate(self.mlp(h), gate_mlp)
