"""Linear and Conv3d that compute in their weight's dtype.

The input is cast to the weight dtype and the output stays in it, so a torso held in float16 or
bfloat16 runs its matrix products in that precision while everything around them (the residual
stream, norms, modulation) stays float32: half-precision speed for the products, float32
accuracy for the sums that accumulate over the blocks. Keys and shapes are torch.nn's.
The default namespace's (``modules.ops.TrellisOps``) Linear and Conv3d.
"""
from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = ["Linear", "Conv3d"]


class Linear(nn.Linear):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x.to(self.weight.dtype), self.weight, self.bias)


class Conv3d(nn.Conv3d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._conv_forward(x.to(self.weight.dtype), self.weight, self.bias)
