"""Norms computed in float32 whatever the activations' dtype.

The norm layers themselves come from the operations namespace (``modules.ops``), so a host's
classes work too; the float32 computation is done around them, here.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["norm32", "channel_norm32", "MultiHeadRMSNorm"]


def norm32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm(x)`` (a LayerNorm over the last dim, or a GroupNorm over [B, C, ...]) computed in
    float32, returned in the input dtype."""
    return norm(x.float()).type(x.dtype)


def channel_norm32(norm: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``norm32`` over the channel dim of [B, C, X, Y, Z]: a LayerNorm sees the channels moved
    last, a GroupNorm the layout as is."""
    if isinstance(norm, nn.LayerNorm):
        return norm32(norm, x.movedim(1, -1)).movedim(-1, 1).contiguous()
    return norm32(norm, x)


class MultiHeadRMSNorm(nn.Module):
    """QK norm: ``normalize(x) * gamma * sqrt(head_dim)`` over the last dim, per head.

    Keys: ``gamma`` [H, C]. Input [..., H, C]."""

    def __init__(self, dim: int, heads: int, dtype=None, device=None):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim, dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma.float() * self.scale).to(x.dtype)
