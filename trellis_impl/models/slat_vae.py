"""SLat VAE: the sparse transformer encoder and the three decoders (Gaussians, Strivec radiance
field, FlexiCubes mesh)."""
from __future__ import annotations

from typing import List, Literal, Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..modules.embeddings import voxel_position_embedding
from ..modules.ops import resolve_operations
from ..modules.transformer import TransformerBlock
from ..representations.gaussians import Gaussians, gaussian_offset_perturbation, gaussians_from_decoder_output
from ..representations.mesh import Mesh, features_to_mesh, mesh_feature_channels
from ..representations.radiance_field import Strivec, strivec_from_decoder_output
from ..sparse import SparseSiLU, SparseTensor
from .base import TrellisModel

__all__ = [
    "SLatEncoder", "SLatGaussianDecoder", "SLatRadianceFieldDecoder", "SLatMeshDecoder",
    "ElasticSLatEncoder", "ElasticSLatGaussianDecoder", "ElasticSLatRadianceFieldDecoder", "ElasticSLatMeshDecoder",
]


def _block_windows(attn_mode: str, window_size: Optional[int], num_blocks: int):
    """(attn_mode, shift) of each block: 'swin' alternates unshifted and half-window-shifted windows."""
    if attn_mode == "full":
        return [("full", 0)] * num_blocks
    if attn_mode == "swin":
        return [("windowed", window_size // 2 * (i % 2)) for i in range(num_blocks)]
    raise ValueError(f"attn_mode {attn_mode!r} is not supported (released models use 'swin' or 'full')")


class SparseTransformerBase(TrellisModel):
    """Input linear + absolute position embedding + sparse transformer blocks (shared torso).
    Built float32 on ``device`` from ``operations``; the subclasses' ``_init_precision`` gives the
    torso its dtype."""

    def __init__(self, in_channels: int, model_channels: int, num_blocks: int, num_heads: Optional[int] = None,
                 num_head_channels: int = 64, mlp_ratio: float = 4.0,
                 attn_mode: Literal["full", "swin"] = "full", window_size: Optional[int] = None,
                 pe_mode: Literal["ape", "rope"] = "ape", use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 device=None, operations=None):
        super().__init__()
        if pe_mode != "ape":
            raise ValueError(f"pe_mode {pe_mode!r} is not supported (released models use 'ape')")
        self.in_channels, self.model_channels = in_channels, model_channels
        self.use_checkpoint = use_checkpoint
        num_heads = num_heads or model_channels // num_head_channels
        ops = resolve_operations(operations)
        self.input_layer = ops.Linear(in_channels, model_channels, device=device)
        self.blocks = nn.ModuleList([
            TransformerBlock(model_channels, num_heads, mlp_ratio, attn_mode=mode, window_size=window_size,
                             shift_window=shift, qk_rms_norm=qk_rms_norm, device=device, operations=ops)
            for mode, shift in _block_windows(attn_mode, window_size, num_blocks)])

    def torso(self):
        return [self.blocks]

    def forward_torso(self, x: SparseTensor) -> SparseTensor:
        if x.feats.shape[-1] != self.in_channels:
            raise ValueError(f"{type(self).__name__}: input has {x.feats.shape[-1]} channels, expected {self.in_channels}")
        self._check_coords(x, self.resolution)
        h = self.input_layer(x.feats)
        h = x.replace(h + voxel_position_embedding(x, self.model_channels))
        for block in self.blocks:
            h = self.run_block(block, h)
        return h

    def _out(self, h: SparseTensor, final_norm: bool = True) -> SparseTensor:
        feats = h.feats.float()
        if final_norm:
            feats = F.layer_norm(feats, feats.shape[-1:])
        return h.replace(self.out_layer(feats))


class SLatEncoder(SparseTransformerBase):
    """Voxel features [N, in_channels] -> SLat [N, latent_channels] (+ mean, logvar)."""

    def __init__(self, resolution: int, in_channels: int, model_channels: int, latent_channels: int,
                 num_blocks: int, num_heads: Optional[int] = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False,
                 dtype: Optional[torch.dtype] = None, device=None, operations=None):
        ops = resolve_operations(operations)
        super().__init__(in_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_checkpoint, qk_rms_norm, device=device, operations=ops)
        self.resolution = resolution
        self.out_layer = ops.Linear(model_channels, 2 * latent_channels, device=device)
        self._init_precision(use_fp16, dtype)

    def forward(self, x: SparseTensor, sample_posterior: bool = True, return_raw: bool = False,
                generator: Optional[torch.Generator] = None):
        """Returns z (SparseTensor) and, with ``return_raw``, mean and logvar [N, latent].
        ``sample_posterior`` (the official default) adds std * noise drawn from ``generator``."""
        h = self._out(self.forward_torso(x))
        mean, logvar = h.feats.float().chunk(2, dim=-1)
        z = mean
        if sample_posterior:
            std = torch.exp(0.5 * logvar)
            z = mean + std * torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
        z = h.replace(z.to(x.dtype))
        return (z, mean, logvar) if return_raw else z


class _SLatDecoder(SparseTransformerBase):
    """The decoders' shared constructor: the torso over SLat plus a head built by ``_build_head``."""

    def __init__(self, resolution: int, model_channels: int, latent_channels: int, num_blocks: int,
                 num_heads: Optional[int] = None, num_head_channels: int = 64, mlp_ratio: float = 4,
                 attn_mode: str = "swin", window_size: int = 8, pe_mode: str = "ape", use_fp16: bool = False,
                 use_checkpoint: bool = False, qk_rms_norm: bool = False, representation_config: dict = None,
                 dtype: Optional[torch.dtype] = None, device=None, operations=None):
        ops = resolve_operations(operations)
        super().__init__(latent_channels, model_channels, num_blocks, num_heads, num_head_channels, mlp_ratio,
                         attn_mode, window_size, pe_mode, use_checkpoint, qk_rms_norm, device=device, operations=ops)
        self.resolution = resolution
        self.rep_config = representation_config or {}
        self._build_head(ops, device)
        self._init_precision(use_fp16, dtype)

    def _build_head(self, ops, device) -> None:
        """The layers after the torso, built from the namespace ``ops`` on ``device``."""
        raise NotImplementedError

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        """The network part: SLat -> raw output features (before ``to_representation``)."""
        return self._out(self.forward_torso(x))

    def forward(self, x: SparseTensor) -> list:
        """SLat -> one representation per batch item."""
        return self.to_representation(self.forward_features(x))


class SLatGaussianDecoder(_SLatDecoder):
    """SLat -> one ``Gaussians`` per batch item (``num_gaussians`` per voxel, voxel-major)."""

    def _build_head(self, ops, device) -> None:
        g = self.rep_config["num_gaussians"]
        # per Gaussian: xyz offset 3, colour 3, scale 3, rotation 4, opacity 1
        self.out_layer = ops.Linear(self.model_channels, g * (3 + 3 + 3 + 4 + 1), device=device)
        self.register_buffer("offset_perturbation",
                             gaussian_offset_perturbation(g, self.rep_config["voxel_size"]).to(device))

    def to_representation(self, x: SparseTensor) -> List[Gaussians]:
        """Network output (feats [N, 14 G]) -> Gaussians per item."""
        return [gaussians_from_decoder_output(x.coords[rows, 1:], x.feats[rows].float(), self.resolution,
                                              self.rep_config, self.offset_perturbation)
                for rows in x.layout]


class SLatRadianceFieldDecoder(_SLatDecoder):
    """SLat -> one ``Strivec`` radiance field per batch item."""

    def _build_head(self, ops, device) -> None:
        rank, dim = self.rep_config["rank"], self.rep_config["dim"]
        # per voxel: trivec rank x 3 x dim, density rank, colour rank x 3
        self.out_layer = ops.Linear(self.model_channels, rank * 3 * dim + rank + rank * 3, device=device)

    def to_representation(self, x: SparseTensor) -> List[Strivec]:
        return [strivec_from_decoder_output(x.coords[rows, 1:], x.feats[rows].float(), self.resolution, self.rep_config)
                for rows in x.layout]


class SparseSubdivideBlock3d(nn.Module):
    """GroupNorm + SiLU, subdivide every voxel into 8, then two sparse convs; skip through a
    1x1 sparse conv (spconv's reinterpreted-weight 1x1, see SparseConv3d)."""

    def __init__(self, channels: int, out_channels: Optional[int] = None, num_groups: int = 32,
                 dtype=None, device=None, operations=None):
        super().__init__()
        out_channels = out_channels or channels
        ops, factory = resolve_operations(operations), dict(dtype=dtype, device=device)
        self.act_layers = nn.Sequential(ops.SparseGroupNorm32(num_groups, channels, **factory), SparseSiLU())
        self.out_layers = nn.Sequential(
            ops.SparseConv3d(channels, out_channels, 3, **factory),
            ops.SparseGroupNorm32(num_groups, out_channels, **factory),
            SparseSiLU(),
            ops.SparseConv3d(out_channels, out_channels, 3, **factory),
        )
        self.skip_connection = (ops.SparseConv3d(channels, out_channels, 1, **factory) if out_channels != channels
                                else nn.Identity())

    def forward(self, x: SparseTensor) -> SparseTensor:
        # The first conv reads the subdivided activations from their parents' rows: the 8x copy
        # of the input (the largest tensor of the mesh decoder) is never built.
        h = self.out_layers[0].forward_subdivided(self.act_layers(x))
        for layer in self.out_layers[1:]:
            h = layer(h)
        # The skip is per voxel (1x1 or identity), so it runs before the subdivision, on 8x fewer
        # rows, and is broadcast over each voxel's 8 children (contiguous rows of h) when added.
        skip = self.skip_connection(x).feats[:, None, :]
        children = h.feats.view(-1, 8, h.feats.shape[1])
        if torch.is_grad_enabled() or children.dtype != torch.promote_types(children.dtype, skip.dtype):
            return h.replace((children + skip).flatten(0, 1))
        return h.replace(children.add_(skip).flatten(0, 1))  # inference: in place, no third 8x tensor


class SLatMeshDecoder(_SLatDecoder):
    """SLat -> one ``Mesh`` per batch item: two subdivisions to 4x the resolution, then FlexiCubes."""

    def _build_head(self, ops, device) -> None:
        c = self.model_channels
        self.use_color = self.rep_config.get("use_color", False)
        self.mesh_resolution = self.resolution * 4
        self.upsample = nn.ModuleList([
            SparseSubdivideBlock3d(c, c // 4, device=device, operations=ops),
            SparseSubdivideBlock3d(c // 4, c // 8, device=device, operations=ops),
        ])
        self.out_layer = ops.Linear(c // 8, mesh_feature_channels(self.use_color), device=device)

    def torso(self):
        return [self.blocks, self.upsample]

    def to_representation(self, x: SparseTensor) -> List[Mesh]:
        """Network output at the mesh resolution -> Mesh per item. In training mode the meshes are
        FlexiCubes' training extraction (differentiable, with ``reg_loss`` and the TSDF samples),
        as the official decoder does when ``self.training``."""
        return [features_to_mesh(x.coords[rows, 1:], x.feats[rows], self.mesh_resolution, self.use_color,
                                 training=self.training)
                for rows in x.layout]

    def forward_features(self, x: SparseTensor) -> SparseTensor:
        """The network part: SLat -> FlexiCubes features on the 4x-subdivided voxels."""
        h = self.forward_torso(x)
        for block in self.upsample:
            h = self.run_block(block, h)
        out = self._out(h, final_norm=False)
        # without the upsampling's neighbour maps (N x 27 at 256^3), which would otherwise stay
        # alive through FlexiCubes, the decoder's memory peak
        return SparseTensor(out.feats, out.coords, layout=out.layout)


class ElasticSLatEncoder(SLatEncoder):
    """Config name of SLatEncoder (the elastic variant only changes training memory)."""


class ElasticSLatGaussianDecoder(SLatGaussianDecoder):
    """Config name of SLatGaussianDecoder."""


class ElasticSLatRadianceFieldDecoder(SLatRadianceFieldDecoder):
    """Config name of SLatRadianceFieldDecoder."""


class ElasticSLatMeshDecoder(SLatMeshDecoder):
    """Config name of SLatMeshDecoder."""
