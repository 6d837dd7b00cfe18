"""Distillation of a small DINOv2-shaped image encoder from a frozen EfficientNet-Lite0 teacher
(the embedded demo model's condition encoder: docs/demo_model.md).

The student is the repo's ``DinoV2`` (so ``load_dinov2``, ``encode_image`` and the voxel features
read the result unchanged) plus three linear heads that exist only during training. On its
layer-normed tokens (exactly what ``encode_image`` gives the flows) it learns, per image:

* ``map``: every patch token -> the teacher's stride-16 map at the same grid cell (the image is
  resized to ``16 x grid`` px for the teacher, so both grids coincide: 592 px <-> 37 x 37), both
  layer-normed over channels;
* ``cls``: the CLS token -> the teacher's pooled head features (layer-normed), the global semantics;
* ``colour``: every patch token -> that patch's mean RGB, so colour survives (the teacher's maps
  are largely colour-blind, and the SLat decoders need colour from these features).

``loss = map + lambda_cls * cls + lambda_colour * colour`` (mean squared errors). Images are the
data's renders and conditioning views, prepared as the two consumers see them: a whole render on
black (voxel features) or the 1.2x crop around the object (conditions), randomly mirrored.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from ...conditioning.dinov2 import DinoV2, DinoV2Config, save_dinov2
from ...conditioning.image_preprocess import normalize_imagenet
from ..teachers import TEACHER_MAP_CHANNELS, TEACHER_POOLED_CHANNELS, load_efficientnet_lite0, teacher_features
from .base import Stage, stack_items
from .flows import condition_image

__all__ = ["EncoderDistillStage", "DistillStudent"]

_TEACHER_STRIDE = 16


class DistillStudent(nn.Module):
    """A DinoV2 (``vit``, the exported part) with the training-only heads ``map_head`` (C -> 112),
    ``pooled_head`` (C -> 1280) and ``colour_head`` (C -> 3)."""

    def __init__(self, vit: dict):
        super().__init__()
        self.vit = DinoV2(DinoV2Config(**vit))
        width = self.vit.config.embed_dim
        self.map_head = nn.Linear(width, TEACHER_MAP_CHANNELS)
        self.pooled_head = nn.Linear(width, TEACHER_POOLED_CHANNELS)
        self.colour_head = nn.Linear(width, 3)

    def forward(self, pixels: torch.Tensor) -> Dict[str, torch.Tensor]:
        """pixels float [B, 3, S, S] in [0, 1] (S a multiple of the patch size) -> the heads'
        predictions: map [B, g*g, 112], pooled [B, 1280], colour [B, g*g, 3] (g = S / patch)."""
        tokens = self.vit(normalize_imagenet(pixels))
        tokens = F.layer_norm(tokens, tokens.shape[-1:])  # as encode_image: what the flows see
        patches = tokens[:, 1 + self.vit.config.num_register_tokens:]
        return {"map": self.map_head(patches), "pooled": self.pooled_head(tokens[:, 0]),
                "colour": self.colour_head(patches)}


def _render_pixels(rgba: torch.Tensor) -> torch.Tensor:
    """uint8 [H, W, 4] -> float32 [3, H, W]: RGB times alpha (the object on black)."""
    image = rgba.float() / 255.0
    return (image[..., :3] * image[..., 3:]).permute(2, 0, 1).contiguous()


class EncoderDistillStage(Stage):
    name = "vit_distill"
    roles = ("student",)
    data_kinds = ("renders", "cond")

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        vit = config.models["student"].get("args", {}).get("vit", {})
        self.image_size = int(config.data.get("image_size", vit.get("img_size", 518)))
        patch = int(vit.get("patch_size", 14))
        if self.image_size % patch:
            raise ValueError(f"{config.source}: data.image_size {self.image_size} must be a multiple of the "
                             f"student's patch size {patch}")
        self.grid = self.image_size // patch
        self.patch = patch
        self.cond_fraction = float(config.data.get("cond_fraction", 0.5))
        if not 0.0 <= self.cond_fraction <= 1.0:
            raise ValueError(f"{config.source}: data.cond_fraction must be in [0, 1], got {self.cond_fraction}")
        loss = config.loss
        self.lambda_cls = float(loss.get("lambda_cls", 1.0))
        self.lambda_colour = float(loss.get("lambda_colour", 10.0))
        teacher = config.frozen.get("teacher")  # a .pth in the packaged layout; default: the package's file
        self.teacher = load_efficientnet_lite0(None if teacher is None else config.path(teacher), device=self.device)

    def build(self, role: str, spec: dict) -> nn.Module:
        if spec.get("name") != "DistillStudent":
            raise ValueError(f"{self.config.source}: stage {self.name} trains models.student of class DistillStudent")
        return DistillStudent(**spec.get("args", {}))

    def initialise(self, role: str, model: nn.Module) -> None:
        """ViT initialisation: Linear weights truncated-normal (std 0.02) with zero bias; positional
        embedding, CLS and registers N(0, 0.02)."""
        for module in model.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        vit = model.vit
        for p in (vit.pos_embed, vit.cls_token, vit.register_tokens):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    def load_init(self, role: str, path: Path) -> nn.Module:
        """The student started from an exported ViT (a model folder's ``dinov2/``, the Hugging
        Face layout ``export_role`` writes) of the config's shape; the training-only heads, which
        are not exported, start new."""
        from ...conditioning import load_dinov2
        student = self.build(role, self.config.models[role])
        self.initialise(role, student)
        vit = load_dinov2(str(path), device="cpu")
        if vit.config != student.vit.config:
            raise ValueError(f"{self.config.source}: init.{role} {path} is a ViT of another shape than "
                             f"models.{role}.args.vit ({vit.config} against {student.vit.config})")
        student.vit.load_state_dict(vit.state_dict())
        return student

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        """One random view of asset ``index`` as float32 [3, S, S] in [0, 1] at the data's render
        size: a conditioning crop (probability ``cond_fraction``) or a whole render; mirrored with
        probability 1/2."""
        name = self.names[index]
        kind = "cond" if float(torch.rand((), generator=generator)) < self.cond_fraction else "renders"
        view = int(torch.randint(self.data.num_views(name, kind), (1,), generator=generator))
        rgba = self.data.view(name, kind, view)["images"]
        size = rgba.shape[0]
        if kind == "cond":
            pixels = condition_image(rgba, size)
        else:
            pixels = _render_pixels(rgba)
        if float(torch.rand((), generator=generator)) < 0.5:
            pixels = pixels.flip(-1)
        return {"pixels": pixels}

    def collate(self, items: List[dict]) -> dict:
        return {"pixels": stack_items(items, "pixels"), "generators": [item["generator"] for item in items]}

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        pixels = batch["pixels"].to(self.device)
        pixels = F.interpolate(pixels, size=(self.image_size, self.image_size), mode="bicubic",
                               align_corners=False, antialias=True).clamp(0.0, 1.0)
        teacher_map, teacher_pooled = teacher_features(self.teacher, pixels, size=self.grid * _TEACHER_STRIDE)
        b = pixels.shape[0]
        target_map = F.layer_norm(teacher_map.permute(0, 2, 3, 1).reshape(b, self.grid ** 2, -1),
                                  (TEACHER_MAP_CHANNELS,))
        target_pooled = F.layer_norm(teacher_pooled, (TEACHER_POOLED_CHANNELS,))
        target_colour = F.avg_pool2d(pixels, self.patch).permute(0, 2, 3, 1).reshape(b, self.grid ** 2, 3)
        out = models["student"](pixels)
        terms = {"map": F.mse_loss(out["map"].float(), target_map),
                 "cls": F.mse_loss(out["pooled"].float(), target_pooled),
                 "colour": F.mse_loss(out["colour"].float(), target_colour)}
        terms["loss"] = terms["map"] + self.lambda_cls * terms["cls"] + self.lambda_colour * terms["colour"]
        return terms

    @classmethod
    def export_role(cls, config, role: str, state: Dict[str, torch.Tensor], folder: Path,
                    torso_dtype: torch.dtype) -> Dict[str, str]:
        """The student's ViT as the folder's ``dinov2/`` (Hugging Face layout; the heads are dropped)."""
        with torch.device("meta"):
            student = DistillStudent(**config.models[role].get("args", {}))
        student.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
        save_dinov2(student.vit, folder / "dinov2", dtype=torso_dtype)
        return {}
