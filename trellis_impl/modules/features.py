"""Apply per-token functions to dense tensors and sparse tensors alike."""
from __future__ import annotations

from typing import Callable, Union

import torch

from ..sparse import SparseTensor

Tokens = Union[torch.Tensor, SparseTensor]


def map_feats(fn: Callable[[torch.Tensor], torch.Tensor], x: Tokens) -> Tokens:
    """``fn`` on the token features: the tensor itself, or a sparse tensor's feats."""
    return x.replace(fn(x.feats)) if isinstance(x, SparseTensor) else fn(x)


def modulate(x: Tokens, shift: torch.Tensor, scale: torch.Tensor) -> Tokens:
    """adaLN modulation ``x * (1 + scale) + shift`` with per-item ``shift``/``scale`` [B, C].

    x: dense [B, L, C] or sparse with feats [N, C]."""
    if isinstance(x, SparseTensor):
        return x * (1 + scale) + shift
    return x * (1 + scale.unsqueeze(1)) + shift.unsqueeze(1)


def gate(x: Tokens, g: torch.Tensor) -> Tokens:
    """Per-item gate [B, C] applied to dense [B, L, C] or sparse tokens."""
    return x * g if isinstance(x, SparseTensor) else x * g.unsqueeze(1)
