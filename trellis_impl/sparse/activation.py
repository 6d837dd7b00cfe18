"""Element-wise activations on sparse tensors (for use inside nn.Sequential)."""
from __future__ import annotations

import torch.nn as nn
import torch.nn.functional as F

from .tensor import SparseTensor

__all__ = ["SparseSiLU"]


class SparseSiLU(nn.Module):
    def forward(self, x: SparseTensor) -> SparseTensor:
        return x.replace(F.silu(x.feats))
