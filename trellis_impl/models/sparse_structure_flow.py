"""Stage-1 flow transformer: denoises the dense 16^3 x 8 sparse-structure latent."""
from __future__ import annotations

from typing import Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.embeddings import TimestepEmbedder, absolute_position_embedding
from ..modules.ops import resolve_operations
from ..modules.transformer import ModulatedTransformerCrossBlock
from .base import TrellisModel

__all__ = ["SparseStructureFlowModel", "patchify", "unpatchify"]


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """[B, C, X, Y, Z] -> [B, C*p^3, X/p, Y/p, Z/p], channel index ``c*p^3 + (px*p + py)*p + pz``."""
    b, c, *size = x.shape
    if any(s % p for s in size):
        raise ValueError(f"patchify: spatial size {size} is not divisible by patch size {p}")
    x = x.reshape(b, c, size[0] // p, p, size[1] // p, p, size[2] // p, p).permute(0, 1, 3, 5, 7, 2, 4, 6)
    return x.reshape(b, c * p ** 3, size[0] // p, size[1] // p, size[2] // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of ``patchify``."""
    b, c, *size = x.shape
    x = x.reshape(b, c // p ** 3, p, p, p, *size).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c // p ** 3, size[0] * p, size[1] * p, size[2] * p)


class SparseStructureFlowModel(TrellisModel):
    """Velocity of the rectified flow on the dense structure latent.

    forward(x [B, in_channels, R, R, R], t [B] (0..1000), cond [B, L, cond_channels]) -> [B, out_channels, R, R, R].
    Tokens are the patches in x-major order (z fastest); ``pos_emb`` [(R/p)^3, C] is a stored buffer.
    """

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, pe_mode: Literal["ape", "rope"] = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, share_mod: bool = False,
                 qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 dtype: Optional[torch.dtype] = None, device=None, operations=None):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (released models use 'ape')")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.patch_size, self.share_mod, self.cond_channels = patch_size, share_mod, cond_channels
        self.use_checkpoint = use_checkpoint
        num_heads = num_heads or model_channels // num_head_channels
        # built float32; _init_precision gives the torso its dtype
        ops = resolve_operations(operations)
        layer = dict(device=device, operations=ops)
        self.t_embedder = TimestepEmbedder(model_channels, **layer)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(model_channels, 6 * model_channels, device=device))
        grid = torch.arange(resolution // patch_size, device=device)
        coords = torch.stack(torch.meshgrid(grid, grid, grid, indexing="ij"), dim=-1).reshape(-1, 3)
        self.register_buffer("pos_emb", absolute_position_embedding(coords, model_channels))
        self.input_layer = ops.Linear(in_channels * patch_size ** 3, model_channels, device=device)
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(model_channels, cond_channels, num_heads, mlp_ratio,
                                           qk_rms_norm=qk_rms_norm, qk_rms_norm_cross=qk_rms_norm_cross,
                                           share_mod=share_mod, **layer)
            for _ in range(num_blocks)])
        self.out_layer = ops.Linear(model_channels, out_channels * patch_size ** 3, device=device)
        self._init_precision(use_fp16, dtype)

    def torso(self):
        return [self.blocks]

    def forward(self, x: torch.Tensor, t: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        expected = [self.in_channels] + [self.resolution] * 3
        if list(x.shape[1:]) != expected:
            raise ValueError(f"SparseStructureFlowModel: x must be [B, {', '.join(map(str, expected))}], got {list(x.shape)}")
        self._check_cond(cond, x.shape[0], self.cond_channels, "SparseStructureFlowModel")
        h = patchify(x, self.patch_size)
        h = h.reshape(*h.shape[:2], -1).transpose(1, 2)
        h = self.input_layer(h) + self.pos_emb[None]
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        for block in self.blocks:
            h = self.run_block(block, h, t_emb, cond)
        h = F.layer_norm(h.float(), h.shape[-1:])
        h = self.out_layer(h)
        size = self.resolution // self.patch_size
        h = h.transpose(1, 2).reshape(h.shape[0], -1, size, size, size)
        return unpatchify(h, self.patch_size).to(x.dtype)
