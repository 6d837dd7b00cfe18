"""Normalisation over the voxels of each batch item."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tensor import SparseTensor

__all__ = ["SparseGroupNorm32"]


class SparseGroupNorm32(nn.Module):
    """GroupNorm over (channels of a group) x (all voxels of one item), computed in float32.

    Keys: ``weight`` [C], ``bias`` [C] (as ``torch.nn.GroupNorm``).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, dtype=None, device=None):
        super().__init__()
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.empty(num_channels, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(num_channels, dtype=dtype, device=device))

    def forward(self, x: SparseTensor) -> SparseTensor:
        feats = x.feats.float()
        out = torch.empty_like(feats)
        weight, bias = self.weight.float().to(x.device), self.bias.float().to(x.device)
        for rows in x.layout:
            if rows.stop > rows.start:
                item = feats[rows].t()[None]  # [1, C, N_i]
                out[rows] = F.group_norm(item, self.num_groups, weight, bias, self.eps)[0].t()
        return x.replace(out.to(x.dtype))
