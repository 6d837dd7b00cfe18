"""Norms computed in float32 whatever the activations' dtype."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["LayerNorm32", "GroupNorm32", "ChannelLayerNorm32", "MultiHeadRMSNorm"]


class LayerNorm32(nn.LayerNorm):
    """LayerNorm over the last dim, computed in float32, returned in the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class GroupNorm32(nn.GroupNorm):
    """GroupNorm over [B, C, ...], computed in float32."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class ChannelLayerNorm32(LayerNorm32):
    """LayerNorm over the channel dim of [B, C, X, Y, Z]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.movedim(1, -1)).movedim(-1, 1).contiguous()


class MultiHeadRMSNorm(nn.Module):
    """QK norm: ``normalize(x) * gamma * sqrt(head_dim)`` over the last dim, per head.

    Keys: ``gamma`` [H, C]. Input [..., H, C]."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.scale = dim ** 0.5
        self.gamma = nn.Parameter(torch.ones(heads, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (F.normalize(x.float(), dim=-1) * self.gamma.float() * self.scale).to(x.dtype)
