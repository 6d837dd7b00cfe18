"""DINOv2 ViT with register tokens, the image encoder of the TRELLIS image-to-3D pipeline.

The official pipeline loads ``torch.hub.load('facebookresearch/dinov2', 'dinov2_vitl14_reg')``
and uses the last block's output *before* DINOv2's final norm (``x_prenorm``), followed by a
non-affine LayerNorm, as the condition ``cond`` ``[B, 1374, 1024]``
(tests/fixtures/conformance/dinov2.md, "encode_image").

Parameter names equal the hub checkpoint ``dinov2_vitl14_reg4_pretrain.pth``. The Hugging Face
layout (``facebook/dinov2-with-registers-large``: ``model.safetensors`` + ``config.json``) is
converted on load.
"""
from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Dict, Optional, Sequence, Union

import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ..backends.attention import attention
from ..models.registry import CheckpointError, read_torch_state_dict
from ..modules.ops import resolve_operations
from .image_preprocess import images_to_tensor, normalize_imagenet

__all__ = ["DinoV2Config", "DINOV2_VITL14_REG4", "DinoV2", "load_dinov2", "save_dinov2", "encode_image",
           "hub_to_hf_state_dict", "hf_to_hub_state_dict", "config_from_hf", "config_to_hf"]


@dataclass(frozen=True)
class DinoV2Config:
    """Architecture of a DINOv2 ViT (MLP feed-forward, LayerScale, qkv/proj/ffn biases).

    Attributes:
        embed_dim: token width C.
        depth: number of transformer blocks.
        num_heads: attention heads (C must divide evenly).
        patch_size: patch side in pixels (stride of the patch embedding).
        num_register_tokens: register tokens inserted after CLS (0: none, and no key for them).
        img_size: training resolution in pixels; the stored positional embedding covers a
            ``(img_size // patch_size)`` square grid plus CLS.
        mlp_ratio: MLP hidden width / C (hidden = ``int(C * mlp_ratio)``).
        layerscale_init: initial LayerScale gamma (only matters before weights are loaded).
        layer_norm_eps: eps of the blocks' and the final LayerNorm.
        interpolate_offset: hub's positional-embedding interpolation offset (0: interpolate to
            an explicit size; > 0: by scale factor ``(grid + offset) / stored_grid``).
        interpolate_antialias: antialiased bicubic interpolation of the positional embedding.
    """
    embed_dim: int
    depth: int
    num_heads: int
    patch_size: int = 14
    num_register_tokens: int = 4
    img_size: int = 518
    mlp_ratio: float = 4.0
    layerscale_init: float = 1e-5
    layer_norm_eps: float = 1e-6
    interpolate_offset: float = 0.0
    interpolate_antialias: bool = True

    def __post_init__(self):
        if self.embed_dim % self.num_heads:
            raise ValueError(f"DinoV2Config: embed_dim {self.embed_dim} not divisible by num_heads {self.num_heads}")
        if self.img_size < self.patch_size or self.num_register_tokens < 0 or self.depth < 1:
            raise ValueError(f"DinoV2Config: need img_size >= patch_size, depth >= 1, registers >= 0 (got {self})")

    @property
    def grid_size(self) -> int:
        """Side of the stored positional-embedding grid, in patches (37 for ViT-L/14 at 518)."""
        return self.img_size // self.patch_size


# ``dinov2_vitl14_reg`` as the hub builds it, the model TRELLIS uses.
DINOV2_VITL14_REG4 = DinoV2Config(embed_dim=1024, depth=24, num_heads=16)


class PatchEmbed(nn.Module):
    """Non-overlapping patch projection: [B, 3, H, W] -> [B, (H/p)*(W/p), C] (row-major patches)."""

    def __init__(self, patch_size: int, embed_dim: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.proj = resolve_operations(operations).Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size,
                                                          dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (rows ordered q, k, v; heads inside each)."""

    def __init__(self, dim: int, num_heads: int, dtype=None, device=None, operations=None):
        super().__init__()
        self.num_heads = num_heads
        ops = resolve_operations(operations)
        self.qkv = ops.Linear(dim, dim * 3, dtype=dtype, device=device)
        self.proj = ops.Linear(dim, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        q, k, v = self.qkv(x).reshape(B, L, 3, self.num_heads, C // self.num_heads).unbind(dim=2)
        return self.proj(attention(q, k, v).reshape(B, L, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int, dtype=None, device=None, operations=None):
        super().__init__()
        ops = resolve_operations(operations)
        self.fc1 = ops.Linear(dim, hidden, dtype=dtype, device=device)
        self.fc2 = ops.Linear(hidden, dim, dtype=dtype, device=device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))  # exact (erf) GELU, as nn.GELU() in the hub code


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float, dtype=None, device=None):
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init), dtype=dtype, device=device))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    """Pre-norm transformer block: ``x + ls1(attn(norm1(x)))``, then ``x + ls2(mlp(norm2(x)))``."""

    def __init__(self, config: DinoV2Config, dtype=None, device=None, operations=None):
        super().__init__()
        dim = config.embed_dim
        ops, factory = resolve_operations(operations), dict(dtype=dtype, device=device)
        self.norm1 = ops.LayerNorm(dim, eps=config.layer_norm_eps, **factory)
        self.attn = Attention(dim, config.num_heads, operations=ops, **factory)
        self.ls1 = LayerScale(dim, config.layerscale_init, **factory)
        self.norm2 = ops.LayerNorm(dim, eps=config.layer_norm_eps, **factory)
        self.mlp = Mlp(dim, int(dim * config.mlp_ratio), operations=ops, **factory)
        self.ls2 = LayerScale(dim, config.layerscale_init, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoV2(nn.Module):
    """DINOv2 ViT returning the last block's tokens before the final norm (``x_prenorm``).

    Token order: ``[CLS, reg_0 .. reg_{R-1}, patch(0,0), patch(0,1), ...]`` (patches row-major);
    the positional embedding is added to CLS and patches only, registers get none.
    ``norm`` (the final LayerNorm) is kept for checkpoint compatibility; TRELLIS does not use it.
    ``mask_token`` (masked-image training) is likewise only loaded, never used.
    ``dtype``, ``device`` and ``operations`` (the layer classes, ``modules.ops``) are how the
    weights are built, as in ComfyUI's model ports.
    """

    def __init__(self, config: DinoV2Config, dtype=None, device=None, operations=None):
        super().__init__()
        self.config = config
        C = config.embed_dim
        ops, factory = resolve_operations(operations), dict(dtype=dtype, device=device)
        self.patch_embed = PatchEmbed(config.patch_size, C, operations=ops, **factory)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, C, **factory))
        self.pos_embed = nn.Parameter(torch.zeros(1, config.grid_size ** 2 + 1, C, **factory))
        if config.num_register_tokens:
            self.register_tokens = nn.Parameter(torch.zeros(1, config.num_register_tokens, C, **factory))
        else:
            self.register_tokens = None
        self.mask_token = nn.Parameter(torch.zeros(1, C, **factory))
        self.blocks = nn.ModuleList(Block(config, operations=ops, **factory) for _ in range(config.depth))
        self.norm = ops.LayerNorm(C, eps=config.layer_norm_eps, **factory)

    def num_tokens(self, height: int, width: int) -> int:
        """Sequence length for an input of ``height x width`` pixels (1374 for ViT-L/14 reg4 at 518)."""
        p = self.config.patch_size
        return 1 + self.config.num_register_tokens + (height // p) * (width // p)

    def positional_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Positional embedding for a ``grid_h x grid_w`` patch grid: [1, 1 + grid_h*grid_w, C].

        The stored one at the native grid; otherwise its patch part is resampled bicubically
        (in float32, with the config's antialias/offset), as the hub's ``interpolate_pos_encoding``.
        """
        M = self.config.grid_size
        if grid_h == M and grid_w == M:
            return self.pos_embed
        pos = self.pos_embed.float()
        C = pos.shape[-1]
        patch_pos = pos[:, 1:].reshape(1, M, M, C).permute(0, 3, 1, 2)
        offset = self.config.interpolate_offset
        if offset:
            # The hub's historical scale-factor path (kept for configs with an offset).
            resize = dict(scale_factor=((grid_h + offset) / M, (grid_w + offset) / M))
        else:
            resize = dict(size=(grid_h, grid_w))
        patch_pos = F.interpolate(patch_pos, mode="bicubic", antialias=self.config.interpolate_antialias, **resize)
        if patch_pos.shape[-2:] != (grid_h, grid_w):
            raise ValueError(f"DINOv2: offset {offset} resampled the {M}x{M} positional grid to "
                             f"{tuple(patch_pos.shape[-2:])}, not {grid_h}x{grid_w}")
        patch_pos = patch_pos.permute(0, 2, 3, 1).reshape(1, grid_h * grid_w, C)
        return torch.cat([pos[:, :1], patch_pos], dim=1).to(self.pos_embed.dtype)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels: [B, 3, H, W], ImageNet-normalised, H and W multiples of ``patch_size``.

        Returns ``x_prenorm``: [B, 1 + R + (H/p)*(W/p), C].
        """
        p = self.config.patch_size
        if pixels.ndim != 4 or pixels.shape[1] != 3:
            raise ValueError(f"DINOv2: expected pixels [B, 3, H, W], got {tuple(pixels.shape)}")
        B, _, H, W = pixels.shape
        if H % p or W % p or H == 0 or W == 0:
            raise ValueError(f"DINOv2: image size {H}x{W} must be a positive multiple of the patch size {p}")
        x = self.patch_embed(pixels)
        x = torch.cat([self.cls_token.expand(B, -1, -1), x], dim=1)
        x = x + self.positional_embedding(H // p, W // p).to(x.dtype)
        if self.register_tokens is not None:
            x = torch.cat([x[:, :1], self.register_tokens.expand(B, -1, -1), x[:, 1:]], dim=1)
        for block in self.blocks:
            x = block(x)
        return x


ImageInput = Union[torch.Tensor, Image.Image, Sequence[Image.Image]]


@torch.no_grad()
def encode_image(model: DinoV2, images: ImageInput) -> torch.Tensor:
    """TRELLIS image condition ``cond``: [B, T, C] ([B, 1374, 1024] for ViT-L/14 reg4 at 518 px).

    images: PIL images (resized to 518 x 518 LANCZOS, see ``images_to_tensor``) or a float
    tensor [B, 3, H, W] in [0, 1] taken as given. Steps: ImageNet normalisation, ``x_prenorm``,
    then ``F.layer_norm`` over C without weight or bias (eps 1e-5); all tokens kept.
    Runs in float32 with autocast disabled, as the official pipeline. The unconditional
    ``neg_cond`` is ``zeros_like(cond)``.
    """
    param = model.pos_embed
    pixels = images_to_tensor(images).to(device=param.device, dtype=torch.float32)
    with torch.autocast(param.device.type, enabled=False):
        x = model(normalize_imagenet(pixels))
        return F.layer_norm(x, x.shape[-1:])


# ---------------------------------------------------------------------------------------------
# Checkpoint layouts

_HF_TOP = {
    "cls_token": "embeddings.cls_token",
    "mask_token": "embeddings.mask_token",
    "pos_embed": "embeddings.position_embeddings",
    "register_tokens": "embeddings.register_tokens",
    "patch_embed.proj.weight": "embeddings.patch_embeddings.projection.weight",
    "patch_embed.proj.bias": "embeddings.patch_embeddings.projection.bias",
    "norm.weight": "layernorm.weight",
    "norm.bias": "layernorm.bias",
}
_HF_BLOCK = {  # inside ``blocks.N.`` (hub) / ``encoder.layer.N.`` (HF); qkv handled apart
    "norm1.weight": "norm1.weight", "norm1.bias": "norm1.bias",
    "norm2.weight": "norm2.weight", "norm2.bias": "norm2.bias",
    "attn.proj.weight": "attention.output.dense.weight", "attn.proj.bias": "attention.output.dense.bias",
    "ls1.gamma": "layer_scale1.lambda1", "ls2.gamma": "layer_scale2.lambda1",
    "mlp.fc1.weight": "mlp.fc1.weight", "mlp.fc1.bias": "mlp.fc1.bias",
    "mlp.fc2.weight": "mlp.fc2.weight", "mlp.fc2.bias": "mlp.fc2.bias",
}
_HF_QKV = ("query", "key", "value")  # HF splits the hub's fused qkv rows in this order
_HUB_BLOCK_KEY = re.compile(r"blocks\.(\d+)\.(.+)")
_HF_BLOCK_KEY = re.compile(r"encoder\.layer\.(\d+)\.(.+)")


def hub_to_hf_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """Hub key names (``blocks.N.attn.qkv``...) -> transformers ``Dinov2WithRegistersModel`` names.

    The fused qkv [3C, C] / [3C] is split into query/key/value rows. Unknown keys raise ValueError.
    """
    out = {}
    for key, value in state_dict.items():
        match = _HUB_BLOCK_KEY.fullmatch(key)
        if key in _HF_TOP:
            out[_HF_TOP[key]] = value
        elif match and match.group(2) in ("attn.qkv.weight", "attn.qkv.bias"):
            kind = match.group(2).rsplit(".", 1)[1]
            for name, part in zip(_HF_QKV, value.chunk(3, dim=0)):
                # a copy, not a view: safetensors refuses to save tensors that share memory
                out[f"encoder.layer.{match.group(1)}.attention.attention.{name}.{kind}"] = part.clone()
        elif match and match.group(2) in _HF_BLOCK:
            out[f"encoder.layer.{match.group(1)}.{_HF_BLOCK[match.group(2)]}"] = value
        else:
            raise ValueError(f"hub_to_hf_state_dict: unknown DINOv2 hub key {key!r}")
    return out


def hf_to_hub_state_dict(state_dict: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
    """transformers ``Dinov2WithRegistersModel`` key names -> hub names; query/key/value are
    concatenated (in that order) into ``attn.qkv``. Unknown or incomplete q/k/v keys raise ValueError."""
    top = {hf: hub for hub, hf in _HF_TOP.items()}
    block = {hf: hub for hub, hf in _HF_BLOCK.items()}
    out, qkv_parts = {}, {}
    for key, value in state_dict.items():
        match = _HF_BLOCK_KEY.fullmatch(key)
        qkv = match and re.fullmatch(r"attention\.attention\.(query|key|value)\.(weight|bias)", match.group(2))
        if key in top:
            out[top[key]] = value
        elif qkv:
            qkv_parts.setdefault(f"blocks.{match.group(1)}.attn.qkv.{qkv.group(2)}", {})[qkv.group(1)] = value
        elif match and match.group(2) in block:
            out[f"blocks.{match.group(1)}.{block[match.group(2)]}"] = value
        else:
            raise ValueError(f"hf_to_hub_state_dict: unknown Dinov2WithRegistersModel key {key!r}")
    for hub_key, parts in qkv_parts.items():
        if set(parts) != set(_HF_QKV):
            raise ValueError(f"hf_to_hub_state_dict: {hub_key} needs query, key and value; got {sorted(parts)}")
        out[hub_key] = torch.cat([parts[name] for name in _HF_QKV], dim=0)
    return out


# Dinov2WithRegistersConfig defaults: ``save_pretrained`` omits fields equal to them.
_HF_DEFAULTS = {"hidden_size": 768, "num_hidden_layers": 12, "num_attention_heads": 12, "mlp_ratio": 4,
                "layer_norm_eps": 1e-6, "image_size": 224, "patch_size": 16, "num_register_tokens": 4,
                "num_channels": 3, "qkv_bias": True, "use_swiglu_ffn": False, "hidden_act": "gelu",
                "layerscale_value": 1.0}
_HF_MODEL_TYPE = "dinov2_with_registers"


def _square(value, name: str) -> int:
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or value[0] != value[1]:
            raise ValueError(f"{name} {value}: only square sizes are supported")
        value = value[0]
    return int(value)


def config_from_hf(hf_config: dict) -> DinoV2Config:
    """A transformers ``Dinov2WithRegistersConfig`` dict (``config.json``) -> DinoV2Config.

    transformers always interpolates the positional embedding to an explicit size with antialias,
    i.e. ``interpolate_offset=0``, ``interpolate_antialias=True``. SwiGLU FFN (ViT-g), activations
    other than exact GELU, no qkv bias or non-RGB input are not supported (ValueError).
    """
    cfg = {**_HF_DEFAULTS, **hf_config}
    if cfg.get("model_type", _HF_MODEL_TYPE) != _HF_MODEL_TYPE:
        raise ValueError(f"model_type {cfg['model_type']!r}: expected {_HF_MODEL_TYPE!r}")
    unsupported = {k: cfg[k] for k in ("use_swiglu_ffn", "hidden_act", "qkv_bias", "num_channels")
                   if cfg[k] != _HF_DEFAULTS[k]}
    if unsupported:
        supported = {k: _HF_DEFAULTS[k] for k in unsupported}
        raise ValueError(f"unsupported DINOv2 options {unsupported} (supported: {supported})")
    return DinoV2Config(
        embed_dim=int(cfg["hidden_size"]), depth=int(cfg["num_hidden_layers"]),
        num_heads=int(cfg["num_attention_heads"]), patch_size=_square(cfg["patch_size"], "patch_size"),
        num_register_tokens=int(cfg["num_register_tokens"]), img_size=_square(cfg["image_size"], "image_size"),
        mlp_ratio=float(cfg["mlp_ratio"]), layerscale_init=float(cfg["layerscale_value"]),
        layer_norm_eps=float(cfg["layer_norm_eps"]), interpolate_offset=0.0, interpolate_antialias=True)


def config_to_hf(config: DinoV2Config) -> dict:
    """DinoV2Config -> a ``config.json`` dict for transformers' ``Dinov2WithRegistersModel``.

    Raises ValueError for configs transformers cannot express (offset interpolation, no
    antialias, no registers: that model always has register tokens).
    """
    if config.interpolate_offset or not config.interpolate_antialias or not config.num_register_tokens:
        raise ValueError(f"config_to_hf: transformers needs interpolate_offset=0, interpolate_antialias=True "
                         f"and at least one register token (got {config})")
    return {"model_type": _HF_MODEL_TYPE, "architectures": ["Dinov2WithRegistersModel"],
            "hidden_size": config.embed_dim, "num_hidden_layers": config.depth,
            "num_attention_heads": config.num_heads,
            # transformers' config declares mlp_ratio an int and rejects 4.0
            "mlp_ratio": int(config.mlp_ratio) if float(config.mlp_ratio).is_integer() else config.mlp_ratio,
            "layer_norm_eps": config.layer_norm_eps, "image_size": config.img_size,
            "patch_size": config.patch_size, "num_register_tokens": config.num_register_tokens,
            "layerscale_value": config.layerscale_init, "num_channels": 3, "qkv_bias": True,
            "use_swiglu_ffn": False, "hidden_act": "gelu", "torch_dtype": "float32"}


_MAX_LISTED = 5


def _listing(items) -> str:
    items = list(items)
    more = f" (+{len(items) - _MAX_LISTED} more)" if len(items) > _MAX_LISTED else ""
    return ", ".join(items[:_MAX_LISTED]) + more


def _check_weights(weights: Dict[str, torch.Tensor], expected: Dict[str, torch.Tensor], source: str,
                   layout: str, config: DinoV2Config) -> None:
    """Raise CheckpointError naming ``source`` and the first missing/unexpected/mis-shaped keys."""
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [f"{k} {list(weights[k].shape)} (expected {list(expected[k].shape)})"
                 for k in expected if k in weights and weights[k].shape != expected[k].shape]
    not_float = [f"{k} ({weights[k].dtype})" for k in expected
                 if k in weights and not weights[k].is_floating_point()]
    problems = [f"{what}: {_listing(keys)}" for what, keys in
                (("missing keys", missing), ("unexpected keys", unexpected), ("mis-shaped", misshaped),
                 ("not floating point", not_float)) if keys]
    if problems:
        arch = (f"embed {config.embed_dim}, depth {config.depth}, patch {config.patch_size}, "
                f"{config.num_register_tokens} registers, {config.img_size} px")
        raise CheckpointError(f"{source} does not match the DINOv2 {layout} layout ({arch}): " + "; ".join(problems))


def _read_hf_checkpoint(weights_path: str):
    from safetensors.torch import load_file
    config_path = os.path.join(os.path.dirname(weights_path), "config.json")
    for needed in (weights_path, config_path):
        if not os.path.isfile(needed):
            raise CheckpointError(f"{needed}: file not found (the Hugging Face layout needs model.safetensors "
                                  f"and config.json side by side)")
    try:
        with open(config_path, encoding="utf-8") as f:
            config = config_from_hf(json.load(f))
    except (OSError, ValueError, TypeError) as e:
        raise CheckpointError(f"{config_path}: not a usable Dinov2WithRegisters config: {e}") from None
    try:
        weights = load_file(weights_path)
    except Exception as e:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file (truncated or damaged?): {e}") from None
    return weights, config


def load_dinov2(path: str, config: Optional[DinoV2Config] = None,
                device: Union[str, torch.device, None] = None, operations=None) -> DinoV2:
    """Load DINOv2 weights from a local path as an eval-mode float32 model without gradients.

    Args:
        path: either the hub checkpoint (e.g. ``dinov2_vitl14_reg4_pretrain.pth``, a plain state
            dict read with ``torch.load(weights_only=True)``), or the Hugging Face layout: a
            directory holding ``model.safetensors`` + ``config.json``, or that ``.safetensors``
            file itself (its ``config.json`` beside it).
        config: architecture of a hub checkpoint (default ``DINOV2_VITL14_REG4``, the TRELLIS
            one). The Hugging Face layout takes it from ``config.json``; passing one is an error.
        device: where to put the model (default CPU).
        operations: the layer classes to build from (``modules.ops``; default ``TrellisOps``).

    Raises:
        CheckpointError (a ValueError) naming the file and the first missing, unexpected or
        mis-shaped keys (in the file's own naming), or why the file cannot be read.
    """
    path = os.fspath(path)
    hf_weights = os.path.join(path, "model.safetensors") if os.path.isdir(path) else path
    if hf_weights.endswith(".safetensors"):
        if config is not None:
            raise ValueError(f"load_dinov2({path!r}): the Hugging Face layout carries its own config.json; "
                             "do not pass config")
        weights, config = _read_hf_checkpoint(hf_weights)
        with torch.device("meta"):
            model = DinoV2(config, operations=operations)
        _check_weights(weights, hub_to_hf_state_dict(model.state_dict()), hf_weights, "Hugging Face", config)
        weights = hf_to_hub_state_dict(weights)
    else:
        config = config or DINOV2_VITL14_REG4
        weights = read_torch_state_dict(path)
        with torch.device("meta"):
            model = DinoV2(config, operations=operations)
        _check_weights(weights, model.state_dict(), path, "hub", config)
    model.load_state_dict({k: v.float() for k, v in weights.items()}, strict=True, assign=True)
    return model.to(torch.device(device or "cpu")).eval().requires_grad_(False)


def save_dinov2(model: DinoV2, folder: Union[str, os.PathLike], dtype: torch.dtype = torch.float32) -> None:
    """Write ``model`` in the Hugging Face layout (``config.json`` + ``model.safetensors``) that
    ``load_dinov2`` reads, into ``folder`` (created; its files must not exist yet).

    Args:
        dtype: storage dtype of the weights (float16 halves the file; ``load_dinov2`` computes in
            float32 either way).
    """
    from safetensors.torch import save_file
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    for name in ("config.json", "model.safetensors"):
        if os.path.exists(os.path.join(folder, name)):
            raise FileExistsError(f"{os.path.join(folder, name)} exists; nothing is overwritten")
    with open(os.path.join(folder, "config.json"), "w", encoding="utf-8") as f:
        json.dump({**config_to_hf(model.config), "torch_dtype": str(dtype).replace("torch.", "")}, f, indent=2)
    save_file({k: v.detach().to("cpu", dtype).contiguous() for k, v in hub_to_hf_state_dict(model.state_dict()).items()},
              os.path.join(folder, "model.safetensors"))
