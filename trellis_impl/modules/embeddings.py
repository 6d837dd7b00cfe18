"""Timestep and absolute position embeddings."""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from .ops import resolve_operations

__all__ = ["TimestepEmbedder", "absolute_position_embedding", "voxel_position_embedding"]


class TimestepEmbedder(nn.Module):
    """Scalar timesteps -> vectors: ``[cos, sin]`` features (cos first) then an MLP.

    Keys: ``mlp.0`` Linear(256, C), ``mlp.2`` Linear(C, C).
    """

    def __init__(self, hidden_size: int, frequency_embedding_size: int = 256, dtype=None, device=None,
                 operations=None):
        super().__init__()
        self.frequency_embedding_size = frequency_embedding_size
        ops = resolve_operations(operations)
        self.mlp = nn.Sequential(
            ops.Linear(frequency_embedding_size, hidden_size, dtype=dtype, device=device),
            nn.SiLU(),
            ops.Linear(hidden_size, hidden_size, dtype=dtype, device=device),
        )

    @staticmethod
    def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """t: [B] (model scale, 0..1000) -> [B, dim] float32."""
        half = dim // 2
        # made where t is: a table copied from the host every forward would block CUDA-graph capture
        freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
        args = t[:, None].float() * freqs[None]
        emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
        if dim % 2:
            emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
        return emb

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        freq = self.timestep_embedding(t, self.frequency_embedding_size)
        return self.mlp(freq)


def absolute_position_embedding(coords: torch.Tensor, channels: int) -> torch.Tensor:
    """Sinusoidal embedding of integer positions.

    Per axis ``[sin(p f), cos(p f)]`` (sin first) with ``f_i = 1e4^(-i/F)``, ``F = C // 3 // 2``;
    axes concatenated in order, zero-padded to ``channels``.

    Args:
        coords: [N, D] positions (voxel units).
    Returns:
        [N, channels] float32.
    """
    n, dims = coords.shape
    freq_dim = channels // dims // 2
    freqs = 1.0 / (10000 ** (torch.arange(freq_dim, dtype=torch.float32) / freq_dim))
    angles = torch.outer(coords.reshape(-1).float(), freqs.to(coords.device))
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1).reshape(n, dims * 2 * freq_dim)
    if emb.shape[1] < channels:
        emb = torch.cat([emb, emb.new_zeros(n, channels - emb.shape[1])], dim=-1)
    return emb


def voxel_position_embedding(x, channels: int) -> torch.Tensor:
    """``absolute_position_embedding`` of a SparseTensor's voxel coordinates, [N, channels]
    float32, computed once per coordinate set (kept in the tensor's cache)."""
    key = f"position_embedding_{channels}"
    if key not in x.cache:
        x.cache[key] = absolute_position_embedding(x.coords[:, 1:], channels)
    return x.cache[key]
