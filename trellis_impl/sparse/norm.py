"""Normalisation over the voxels of each batch item."""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from .tensor import SparseTensor

__all__ = ["SparseGroupNorm32"]


class SparseGroupNorm32(nn.Module):
    """GroupNorm over (channels of a group) x (all voxels of one item), computed in float32
    (float64 input stays float64, for gradient checks), returned in the input dtype.

    Keys: ``weight`` [C], ``bias`` [C] (as ``torch.nn.GroupNorm``).
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, dtype=None, device=None):
        super().__init__()
        self.num_groups, self.num_channels, self.eps = num_groups, num_channels, eps
        self.weight = nn.Parameter(torch.empty(num_channels, dtype=dtype, device=device))
        self.bias = nn.Parameter(torch.empty(num_channels, dtype=dtype, device=device))

    def forward(self, x: SparseTensor) -> SparseTensor:
        compute_dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        feats = x.feats.to(compute_dtype)
        out = torch.empty_like(feats)
        weight, bias = self.weight.to(x.device, compute_dtype), self.bias.to(x.device, compute_dtype)
        for rows in x.layout:
            if rows.stop > rows.start:
                item = feats[rows].t()[None]  # [1, C, N_i]
                out[rows] = F.group_norm(item, self.num_groups, weight, bias, self.eps)[0].t()
        return x.replace(out.to(x.dtype))
