"""Stage-2 flow transformer: denoises the per-voxel latents of a sparse structure (SLat)."""
from __future__ import annotations

from typing import List, Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.embeddings import TimestepEmbedder, voxel_position_embedding
from ..modules.norm import norm32
from ..modules.ops import resolve_operations
from ..modules.transformer import ModulatedTransformerCrossBlock
from ..sparse import SparseTensor, downsample, upsample
from .base import TrellisModel

__all__ = ["SLatFlowModel", "ElasticSLatFlowModel", "SparseResBlock3d"]


class SparseResBlock3d(nn.Module):
    """Timestep-modulated sparse residual block, optionally pooling or unpooling by 2 first.

    ``h = conv2(silu(LN(conv1(silu(LN_affine(x)))) * (1 + scale) + shift)) + skip(x)`` with
    ``(scale, shift) = Linear(silu(emb))`` (scale first).
    """

    def __init__(self, channels: int, emb_channels: int, out_channels: Optional[int] = None,
                 downsample: bool = False, upsample: bool = False, dtype=None, device=None, operations=None):
        super().__init__()
        if downsample and upsample:
            raise ValueError("SparseResBlock3d: cannot downsample and upsample at once")
        out_channels = out_channels or channels
        self.resample = "down" if downsample else "up" if upsample else None
        ops, factory = resolve_operations(operations), dict(dtype=dtype, device=device)
        self.norm1 = ops.LayerNorm(channels, elementwise_affine=True, eps=1e-6, **factory)
        self.norm2 = ops.LayerNorm(out_channels, elementwise_affine=False, eps=1e-6, **factory)
        self.conv1 = ops.SparseConv3d(channels, out_channels, 3, **factory)
        self.conv2 = ops.SparseConv3d(out_channels, out_channels, 3, **factory)
        self.emb_layers = nn.Sequential(nn.SiLU(), ops.Linear(emb_channels, 2 * out_channels, **factory))
        self.skip_connection = (ops.Linear(channels, out_channels, **factory) if channels != out_channels
                                else nn.Identity())

    def forward(self, x: SparseTensor, emb: torch.Tensor) -> SparseTensor:
        scale, shift = self.emb_layers(emb).type(x.dtype).chunk(2, dim=1)
        if self.resample == "down":
            x = downsample(x)
        elif self.resample == "up":
            x = upsample(x)
        h = self.conv1(x.replace(F.silu(norm32(self.norm1, x.feats))))
        h = h.replace(norm32(self.norm2, h.feats)) * (1 + scale) + shift
        h = self.conv2(h.replace(F.silu(h.feats)))
        return h + x.replace(self.skip_connection(x.feats))


class SLatFlowModel(TrellisModel):
    """Velocity of the rectified flow on SLat.

    forward(x: SparseTensor feats [N, in_channels], t [B] (0..1000), cond [B, L, cond_channels])
    -> SparseTensor feats [N, out_channels] on the same coords. With ``io_block_channels`` the
    voxels are pooled by ``patch_size`` before the transformer and unpooled after.
    """

    def __init__(self, resolution: int, in_channels: int, model_channels: int, cond_channels: int,
                 out_channels: int, num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64,
                 mlp_ratio: float = 4, patch_size: int = 2, num_io_res_blocks: int = 2,
                 io_block_channels: Optional[List[int]] = None, pe_mode: Literal["ape", "rope"] = "ape",
                 use_fp16: bool = False, use_checkpoint: bool = False, use_skip_connection: bool = True,
                 share_mod: bool = False, qk_rms_norm: bool = False, qk_rms_norm_cross: bool = False,
                 dtype: Optional[torch.dtype] = None, device=None, operations=None):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (released models use 'ape')")
        if io_block_channels is not None and 2 ** len(io_block_channels) != patch_size:
            raise ValueError(f"SLatFlowModel: patch_size {patch_size} needs log2(patch_size) io_block_channels, "
                             f"got {io_block_channels}")
        self.resolution, self.in_channels, self.out_channels = resolution, in_channels, out_channels
        self.cond_channels, self.use_checkpoint = cond_channels, use_checkpoint
        self.model_channels, self.share_mod, self.use_skip_connection = model_channels, share_mod, use_skip_connection
        num_heads = num_heads or model_channels // num_head_channels
        # built float32; _init_precision gives the torso its dtype
        ops = resolve_operations(operations)
        layer = dict(device=device, operations=ops)
        self.t_embedder = TimestepEmbedder(model_channels, **layer)
        if share_mod:
            self.adaLN_modulation = nn.Sequential(nn.SiLU(), ops.Linear(model_channels, 6 * model_channels, device=device))
        io = io_block_channels or []
        self.input_layer = ops.Linear(in_channels, io[0] if io else model_channels, device=device)
        self.input_blocks = nn.ModuleList()
        for chs, next_chs in zip(io, io[1:] + [model_channels]):
            self.input_blocks.extend(SparseResBlock3d(chs, model_channels, chs, **layer)
                                     for _ in range(num_io_res_blocks - 1))
            self.input_blocks.append(SparseResBlock3d(chs, model_channels, next_chs, downsample=True, **layer))
        self.blocks = nn.ModuleList([
            ModulatedTransformerCrossBlock(model_channels, cond_channels, num_heads, mlp_ratio, qk_rms_norm=qk_rms_norm,
                                           qk_rms_norm_cross=qk_rms_norm_cross, share_mod=share_mod, **layer)
            for _ in range(num_blocks)])
        skip = 2 if use_skip_connection else 1
        self.out_blocks = nn.ModuleList()
        for chs, prev_chs in zip(reversed(io), [model_channels] + list(reversed(io[1:]))):
            self.out_blocks.append(SparseResBlock3d(prev_chs * skip, model_channels, chs, upsample=True, **layer))
            self.out_blocks.extend(SparseResBlock3d(chs * skip, model_channels, chs, **layer)
                                   for _ in range(num_io_res_blocks - 1))
        self.out_layer = ops.Linear(io[0] if io else model_channels, out_channels, device=device)
        self._init_precision(use_fp16, dtype)

    def torso(self):
        return [self.input_blocks, self.blocks, self.out_blocks]

    def dense_blocks(self, tokens: torch.Tensor, t_emb: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """The transformer blocks on the dense tokens [B, n, C] of items of one size (traces as one
        graph: ``torch.compile`` may replace this method)."""
        for block in self.blocks:
            tokens = self.run_block(block, tokens, t_emb, cond)
        return tokens

    def forward(self, x: SparseTensor, t: torch.Tensor, cond: torch.Tensor) -> SparseTensor:
        if x.feats.shape[-1] != self.in_channels:
            raise ValueError(f"SLatFlowModel: x has {x.feats.shape[-1]} channels, expected {self.in_channels}")
        self._check_coords(x, self.resolution)
        self._check_cond(cond, x.batch_size, self.cond_channels, "SLatFlowModel")
        h = x.replace(self.input_layer(x.feats))
        t_emb = self.t_embedder(t)
        if self.share_mod:
            t_emb = self.adaLN_modulation(t_emb)
        skips = []
        for block in self.input_blocks:
            h = self.run_block(block, h, t_emb)
            skips.append(h.feats)
        h = h + voxel_position_embedding(h, self.model_channels)
        length = h.common_length()
        if length is not None:
            # items of one size (the CFG pair, one asset): the blocks take dense [B, n, C] tokens,
            # the same attention per item without packed-sequence bookkeeping or per-item gathers
            tokens = h.feats.reshape(h.batch_size, length, h.feats.shape[-1])
            h = h.replace(self.dense_blocks(tokens, t_emb, cond).reshape(h.feats.shape))
        else:
            for block in self.blocks:
                h = self.run_block(block, h, t_emb, cond)
        for block, skip in zip(self.out_blocks, reversed(skips)):
            if self.use_skip_connection:
                h = h.replace(torch.cat([h.feats, skip], dim=1))
            h = self.run_block(block, h, t_emb)
        h = h.replace(F.layer_norm(h.feats.float(), h.feats.shape[-1:]))
        return h.replace(self.out_layer(h.feats).to(x.dtype))


class ElasticSLatFlowModel(SLatFlowModel):
    """The config name of SLatFlowModel (the official elastic variant only changes training memory)."""
