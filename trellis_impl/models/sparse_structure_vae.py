"""Sparse-structure VAE: a dense 3D conv VAE between 64^3 occupancy and a 16^3 x 8 latent."""
from __future__ import annotations

from typing import List, Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.norm import channel_norm32
from ..modules.ops import resolve_operations
from .base import TrellisModel

__all__ = ["SparseStructureEncoder", "SparseStructureDecoder", "pixel_shuffle_3d"]


def _norm(norm_type: str, channels: int, ops, **factory) -> nn.Module:
    """A norm over the channels of [B, C, X, Y, Z], applied with ``channel_norm32``."""
    if norm_type == "group":
        return ops.GroupNorm(32, channels, **factory)
    if norm_type == "layer":
        return ops.LayerNorm(channels, **factory)
    raise ValueError(f"norm_type must be 'group' or 'layer', got {norm_type!r}")


def _out_layer(norm_type: str, channels: int, out_channels: int, ops, **factory) -> nn.ModuleList:
    """norm, SiLU, 3x3x3 conv (keys ``0`` and ``2``), applied by ``_apply_out_layer``."""
    return nn.ModuleList([_norm(norm_type, channels, ops, **factory), nn.SiLU(),
                          ops.Conv3d(channels, out_channels, 3, padding=1, **factory)])


def _apply_out_layer(out_layer: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    norm, act, conv = out_layer
    return conv(act(channel_norm32(norm, x)))


def pixel_shuffle_3d(x: torch.Tensor, scale: int) -> torch.Tensor:
    """[B, C*s^3, X, Y, Z] -> [B, C, X*s, Y*s, Z*s] (channel index c*s^3 + (i*s + j)*s + k)."""
    b, c, h, w, d = x.shape
    c_out = c // scale ** 3
    x = x.reshape(b, c_out, scale, scale, scale, h, w, d).permute(0, 1, 5, 2, 6, 3, 7, 4)
    return x.reshape(b, c_out, h * scale, w * scale, d * scale)


class ResBlock3d(nn.Module):
    def __init__(self, channels: int, out_channels: Optional[int] = None, norm_type: str = "layer",
                 dtype=None, device=None, operations=None):
        super().__init__()
        out_channels = out_channels or channels
        ops, factory = resolve_operations(operations), dict(dtype=dtype, device=device)
        self.norm1 = _norm(norm_type, channels, ops, **factory)
        self.norm2 = _norm(norm_type, out_channels, ops, **factory)
        self.conv1 = ops.Conv3d(channels, out_channels, 3, padding=1, **factory)
        self.conv2 = ops.Conv3d(out_channels, out_channels, 3, padding=1, **factory)
        self.skip_connection = (ops.Conv3d(channels, out_channels, 1, **factory) if channels != out_channels
                                else nn.Identity())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(channel_norm32(self.norm1, x)))
        h = self.conv2(F.silu(channel_norm32(self.norm2, h)))
        return h + self.skip_connection(x)


class DownsampleBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mode: Literal["conv", "avgpool"] = "conv",
                 dtype=None, device=None, operations=None):
        super().__init__()
        if mode == "conv":
            self.conv = resolve_operations(operations).Conv3d(in_channels, out_channels, 2, stride=2,
                                                              dtype=dtype, device=device)
        elif mode != "avgpool" or in_channels != out_channels:
            raise ValueError(f"downsample mode {mode!r} with {in_channels}->{out_channels} channels is not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x) if hasattr(self, "conv") else F.avg_pool3d(x, 2)


class UpsampleBlock3d(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, mode: Literal["conv", "nearest"] = "conv",
                 dtype=None, device=None, operations=None):
        super().__init__()
        if mode == "conv":
            self.conv = resolve_operations(operations).Conv3d(in_channels, out_channels * 8, 3, padding=1,
                                                              dtype=dtype, device=device)
        elif mode != "nearest" or in_channels != out_channels:
            raise ValueError(f"upsample mode {mode!r} with {in_channels}->{out_channels} channels is not supported")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self, "conv"):
            return pixel_shuffle_3d(self.conv(x), 2)
        return F.interpolate(x, scale_factor=2, mode="nearest")


class SparseStructureEncoder(TrellisModel):
    """Occupancy [B, in_channels, R, R, R] -> latent [B, latent_channels, R/2^k, ...] (k = len(channels)-1)."""

    def __init__(self, in_channels: int, latent_channels: int, num_res_blocks: int, channels: List[int],
                 num_res_blocks_middle: int = 2, norm_type: Literal["group", "layer"] = "layer", use_fp16: bool = False,
                 dtype: Optional[torch.dtype] = None, device=None, operations=None):
        super().__init__()
        self.in_channels, self.latent_channels = in_channels, latent_channels
        # built float32; _init_precision gives the torso its dtype
        ops = resolve_operations(operations)
        layer = dict(device=device, operations=ops)
        self.input_layer = ops.Conv3d(in_channels, channels[0], 3, padding=1, device=device)
        self.blocks = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.blocks.extend(ResBlock3d(ch, ch, norm_type, **layer) for _ in range(num_res_blocks))
            if i < len(channels) - 1:
                self.blocks.append(DownsampleBlock3d(ch, channels[i + 1], **layer))
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[-1], channels[-1], norm_type, **layer)
                                            for _ in range(num_res_blocks_middle)])
        self.out_layer = _out_layer(norm_type, channels[-1], latent_channels * 2, ops, device=device)
        self._init_precision(use_fp16, dtype)

    def torso(self):
        return [self.blocks, self.middle_block]

    def forward(self, x: torch.Tensor, sample_posterior: bool = False, return_raw: bool = False,
                generator: Optional[torch.Generator] = None):
        """Returns z [B, latent, r, r, r], plus (mean, logvar) when ``return_raw``. With
        ``sample_posterior`` z = mean + std * noise (noise from ``generator``)."""
        h = self.input_layer(x)
        for block in self.blocks:
            h = block(h)
        h = _apply_out_layer(self.out_layer, self.middle_block(h).type(x.dtype))
        mean, logvar = h.chunk(2, dim=1)
        z = mean
        if sample_posterior:
            std = torch.exp(0.5 * logvar)
            z = mean + std * torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
        return (z, mean, logvar) if return_raw else z


class SparseStructureDecoder(TrellisModel):
    """Latent [B, latent_channels, r, r, r] -> occupancy logits [B, out_channels, r*2^k, ...]."""

    def __init__(self, out_channels: int, latent_channels: int, num_res_blocks: int, channels: List[int],
                 num_res_blocks_middle: int = 2, norm_type: Literal["group", "layer"] = "layer", use_fp16: bool = False,
                 dtype: Optional[torch.dtype] = None, device=None, operations=None):
        super().__init__()
        self.out_channels, self.latent_channels = out_channels, latent_channels
        # built float32; _init_precision gives the torso its dtype
        ops = resolve_operations(operations)
        layer = dict(device=device, operations=ops)
        self.input_layer = ops.Conv3d(latent_channels, channels[0], 3, padding=1, device=device)
        self.middle_block = nn.Sequential(*[ResBlock3d(channels[0], channels[0], norm_type, **layer)
                                            for _ in range(num_res_blocks_middle)])
        self.blocks = nn.ModuleList()
        for i, ch in enumerate(channels):
            self.blocks.extend(ResBlock3d(ch, ch, norm_type, **layer) for _ in range(num_res_blocks))
            if i < len(channels) - 1:
                self.blocks.append(UpsampleBlock3d(ch, channels[i + 1], **layer))
        self.out_layer = _out_layer(norm_type, channels[-1], out_channels, ops, device=device)
        self._init_precision(use_fp16, dtype)

    def torso(self):
        return [self.blocks, self.middle_block]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.middle_block(self.input_layer(x))
        for block in self.blocks:
            h = block(h)
        return _apply_out_layer(self.out_layer, h.type(x.dtype))
