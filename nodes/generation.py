"""Loader, condition, sampler and decode nodes."""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Dict, Optional, Union

import numpy as np
import torch

from ..trellis_impl.backends.attention import ATTENTION
from ..trellis_impl.backends.registry import check_backend
from ..trellis_impl.backends.sparse_conv import SPARSE_CONV
from ..trellis_impl.conditioning import preprocess_image
from ..trellis_impl.pipelines import MULTI_IMAGE_MODES
from ..trellis_impl.pipelines.generation import (Noise, Structure, structure_from_mesh, structure_from_mesh_file,
                                                 views_options)
from ..trellis_impl.readers import MESH_EXTENSIONS
from ..trellis_impl.sampling import StepCache
from ..trellis_impl.validation import MAX_SEED
from . import host
from .host import io
from .model import DTYPES, ModelHandle, load_trellis_model, model_choices
from .sockets import ASSET, COND, MESH, MODEL, SLAT, STRUCTURE, VOXEL

SEED_MAX = MAX_SEED
BACKGROUND_MODES = ("auto", "keep", "remove")


@dataclass
class TrellisCond:
    """TRELLIS_V1_COND: encoder outputs (CPU) of one object: {'cond': [V, T, C], 'neg_cond': [1, T, C]}."""
    kind: str
    tensors: Dict[str, torch.Tensor]
    views: int = 1

    def on(self, device) -> dict:
        return {k: v.to(device) for k, v in self.tensors.items()}


@dataclass
class TrellisSlat:
    """TRELLIS_V1_SLAT: the de-normalised structured latent (a SparseTensor, batch = samples)."""
    slat: object
    batch_size: int


@dataclass
class TrellisAsset:
    """TRELLIS_V1_ASSET: decoded representations, each a list with one item per sample."""
    decoded: Dict[str, list] = field(default_factory=dict)
    batch_size: int = 1


def _model_input():
    return MODEL.Input("model", tooltip="A TRELLIS model from 'TRELLIS Model Loader'.")


def _mesh_path_input():
    """A choice of the mesh files under ComfyUI's input folder ('' = none: a linked MESH is used)."""
    return io.Combo.Input("mesh_path", options=[""] + host.input_mesh_files(), default="", optional=True,
                          tooltip="Or a mesh file from ComfyUI's input folder (.glb/.gltf/.obj read as Y up, .ply/.stl "
                                  "as Z up, as the official toolkit and the command line). Used when no mesh is "
                                  "linked.")


def check_mesh_path(mesh_path) -> Union[bool, str]:
    """validate_inputs of a mesh_path choice, so a bad value is refused before anything runs: ''
    or a mesh file (relative to the input folder, or absolute as the API may send it). Returns True
    or the error line."""
    value = str(mesh_path or "").strip()
    if not value:
        return True
    if not value.lower().endswith(MESH_EXTENSIONS):
        return f"mesh_path {value!r}: not a mesh file; allowed: {', '.join(MESH_EXTENSIONS)}"
    if not os.path.isfile(host.input_path(value)):
        return (f"mesh_path {value!r}: no such file in ComfyUI's input folder (upload it with the core "
                "'Load 3D model' node, or copy it into input/3d)")
    return True


def choice_error(**combos) -> Union[bool, str]:
    """``validate_inputs`` of combos given as ``name=(value, choices)``: True, or the line naming the
    first input whose value is not among its choices. 0.3.64 does not check the combos of V3 nodes
    itself, so without this a bad value would only fail once the node runs, after the nodes before
    it. None (a linked value, not known yet) passes."""
    for name, (value, choices) in combos.items():
        if value is not None and value not in choices:
            return f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}"
    return True


def check_choice(name: str, value, choices) -> None:
    """``choice_error`` at run time (a prompt sent without validation, or a linked value)."""
    error = choice_error(**{name: (value, choices)})
    if error is not True:
        raise ValueError(error)


def _sampler_inputs(steps: int, cfg: float) -> list:
    return [
        io.Int.Input("seed", default=0, min=0, max=SEED_MAX, control_after_generate=True,
                     tooltip="Random seed. Give the structure and latent samplers the same seed to get the asset "
                             "the official pipeline gives for that seed."),
        io.Int.Input("steps", default=steps, min=1, max=500,
                     tooltip="Flow sampler steps (the released pipeline.json: 25; the official README example uses 12)."),
        io.Float.Input("cfg", default=cfg, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance strength (released pipeline.json: 5.0)."),
        host.advanced(io.Float, "cfg_interval_start", default=0.5, min=0.0, max=1.0, step=0.01,
                      tooltip="Guidance is applied only for t in [start, end] (t=1 is noise)."),
        host.advanced(io.Float, "cfg_interval_end", default=1.0, min=0.0, max=1.0, step=0.01,
                      tooltip="End of the guidance interval (t=1 is noise)."),
        host.advanced(io.Float, "rescale_t", default=3.0, min=0.1, max=20.0, step=0.1,
                      tooltip="Time-step warp of the flow schedule (released: 3.0)."),
    ]


def _multi_image_input():
    return io.Combo.Input("multi_image_mode", options=list(MULTI_IMAGE_MODES), default="stochastic",
                          tooltip="How several views of one object (a batch of images) are combined: 'stochastic' "
                                  "cycles the views across steps, 'multidiffusion' averages them every step.")


def _step_cache_input():
    # optional: an API prompt saved before it was appended has no value for it, and stays valid
    return host.advanced(io.Int, "step_cache", optional=True, default=1, min=1, max=50,
                         tooltip="Run the model at one step in N (and the first two and the last) and forecast the "
                                 "velocity at the others. 1: off, the official sampler; 2: 15 of 25 model runs, "
                                 "shapes close to the official; 3: 11 of 25, faster, shapes differ more "
                                 "(docs/gpu.md, 'Step cache').")


def _params(steps, cfg, start, end, rescale_t, step_cache=1) -> dict:
    if start > end:
        raise ValueError(f"cfg_interval_start ({start}) must not exceed cfg_interval_end ({end})")
    params = {"steps": int(steps), "cfg_strength": float(cfg), "cfg_interval": [float(start), float(end)],
              "rescale_t": float(rescale_t)}
    if int(step_cache) > 1:
        params["step_cache"] = StepCache(interval=int(step_cache))
    return params


def _check_cond(model: ModelHandle, cond: TrellisCond, node: str) -> None:
    if not isinstance(cond, TrellisCond):
        raise ValueError(f"{node}: cond must come from a TRELLIS condition node")
    if cond.kind != model.kind:
        raise ValueError(f"{node}: the condition is from a {cond.kind} model but model folder {model.name} is a "
                         f"{model.kind} model; use the same kind of model for conditioning and sampling")


def _views(cond: TrellisCond, multi_image_mode: str) -> Optional[dict]:
    check_choice("multi_image_mode", multi_image_mode, MULTI_IMAGE_MODES)
    return views_options(multi_image_mode) if cond.views > 1 else None


# ----------------------------------------------------------------------------- loader

class TrellisModelLoader(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisModelLoader", display_name="TRELLIS Model Loader", category="TRELLIS/loaders",
            description="Loads a TRELLIS model folder (pipeline.json + ckpts/) from models/trellis.",
            inputs=[
                io.Combo.Input("model", options=model_choices(),
                               tooltip="A folder with pipeline.json under models/trellis (or an extra_model_paths "
                                       "'trellis' entry), or a Hugging Face repository id (downloaded into "
                                       "models/trellis when 'download' is on)."),
                host.advanced(io.Combo, "dtype", options=list(DTYPES), default="auto",
                              tooltip="Compute dtype of the transformers (auto: float16 on GPU, float32 on CPU)."),
                host.advanced(io.Combo, "attention_backend", options=["auto"] + ATTENTION.names(), default="auto",
                              tooltip="Attention kernel of this model's stages (other models keep theirs); auto "
                                      "picks the fastest available."),
                host.advanced(io.Combo, "sparse_conv_backend", options=["auto"] + SPARSE_CONV.names(),
                              default="auto", tooltip="Sparse convolution kernel of this model's stages."),
                io.Boolean.Input("download", default=False,
                                 tooltip="Download a missing repository from Hugging Face (needs internet)."),
            ],
            outputs=[host.output(MODEL, "model", "The model folder (loaded lazily, stage by stage, under "
                                                 "ComfyUI's model management).")])

    @classmethod
    def execute(cls, model, dtype="auto", attention_backend="auto", sparse_conv_backend="auto", download=False):
        backends = {"attention": attention_backend, "sparse_conv": sparse_conv_backend}
        for family, name in backends.items():
            check_backend(family, name, f"{family}_backend")
        return io.NodeOutput(load_trellis_model(model, dtype, bool(download), backends))


# ----------------------------------------------------------------------------- conditions
def _image_arrays(image: torch.Tensor, mask: Optional[torch.Tensor], background: str):
    """IMAGE [B,H,W,C] (+ MASK) -> list of (uint8 array, alpha mask or None) per view."""
    if not isinstance(image, torch.Tensor) or image.dim() != 4:
        raise ValueError(f"image must be an IMAGE tensor [B, H, W, C], got "
                         f"{getattr(image, 'shape', type(image).__name__)}")
    if image.shape[0] == 0:
        raise ValueError("image: the batch is empty; give at least one image")
    b, h, w, c = image.shape
    if c not in (3, 4):
        raise ValueError(f"image must have 3 (RGB) or 4 (RGBA) channels, got {c}")
    alphas = None
    if mask is not None and background == "auto":
        m = mask if mask.dim() == 3 else mask[None]
        if tuple(m.shape[-2:]) != (h, w):
            if tuple(m.shape[-2:]) == (64, 64):
                m = None  # LoadImage's placeholder for an image without alpha
            else:
                raise ValueError(f"mask: size {m.shape[-1]}x{m.shape[-2]} (W x H) does not match the image size "
                                 f"{w}x{h}")
        if m is not None:
            if m.shape[0] not in (1, b):
                raise ValueError(f"mask: batch of {m.shape[0]} masks for {b} images; give one mask or one per image")
            alphas = [(1.0 - m[min(i, m.shape[0] - 1)]).clamp(0, 1).cpu().numpy().astype(np.float32)
                      for i in range(b)]
    pixels = (image.detach().cpu().clamp(0, 1).numpy() * 255).round().astype(np.uint8)
    views = []
    for i in range(b):
        px = pixels[i]
        if background == "keep":
            views.append((px[..., :3], np.ones((h, w), np.float32)))
        elif background == "remove":
            views.append((px[..., :3], None))
        else:
            views.append((px, None if alphas is None else alphas[i]))
    return views



class TrellisImageCondition(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, background=None):
        return choice_error(background=(background, BACKGROUND_MODES))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisImageCondition", display_name="TRELLIS Image Condition", category="TRELLIS/conditioning",
            inputs=[
                _model_input(),
                io.Image.Input("image", tooltip="The object; a batch of several images = several views of one "
                                                "object."),
                io.Combo.Input("background", options=list(BACKGROUND_MODES), default="auto",
                               tooltip="auto: use the mask / the image's alpha, else remove the background (rembg); "
                                       "keep: the whole image is the object; remove: always run background "
                                       "removal (rembg)."),
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional object mask as LoadImage gives it (alpha = 1 - mask). A 64x64 mask "
                                      "(LoadImage without alpha) counts as no mask."),
            ],
            outputs=[host.output(COND, "cond", "DINOv2 condition of the object (all images of the batch are views "
                                               "of one object)."),
                     host.output(io.Image, "preprocessed", "The cropped 518x518 images the encoder saw.")])

    @classmethod
    def execute(cls, model: ModelHandle, image, background="auto", mask=None):
        model.require("image", "TrellisImageCondition")
        check_choice("background", background, BACKGROUND_MODES)
        views = _image_arrays(image, mask, background)
        host.check_interrupt()
        pipeline = model.pipeline
        prepared = [preprocess_image(px, alpha, pipeline.background_remover) for px, alpha in views]
        host.check_interrupt()
        pipeline = model.prepare(encoder=True, images=len(prepared))
        cond = pipeline.get_cond(prepared)
        tensors = {k: v.detach().float().cpu() for k, v in cond.items()}
        out = torch.stack([torch.from_numpy(np.asarray(p).astype(np.float32) / 255.0) for p in prepared])
        return io.NodeOutput(TrellisCond("image", tensors, views=len(prepared)), out)


class TrellisTextCondition(io.ComfyNode):
    # ComfyUI's own CLIP nodes do not reproduce the official tokens exactly (fp16 weights by
    # default, (word:1.2) weighting syntax, >75-token chunking instead of truncation), so the pack
    # runs its own CLIP-L (transformers, float32, truncation at 77 tokens) from the model folder.

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisTextCondition", display_name="TRELLIS Text Condition", category="TRELLIS/conditioning",
            inputs=[
                _model_input(),
                io.String.Input("prompt", multiline=True, default="",
                                tooltip="Description of the object. Encoded by the pack's own CLIP-L as the official "
                                        "pipeline does (truncated at 77 tokens, no weighting syntax)."),
            ],
            outputs=[host.output(COND, "cond", "CLIP-L text condition.")])

    @classmethod
    def execute(cls, model: ModelHandle, prompt):
        model.require("text", "TrellisTextCondition")
        host.check_interrupt()
        pipeline = model.prepare(encoder=True)
        cond = pipeline.get_cond([str(prompt)])
        return io.NodeOutput(TrellisCond("text", {k: v.detach().float().cpu() for k, v in cond.items()}, views=1))


# ----------------------------------------------------------------------------- samplers

class TrellisStructureSampler(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, multi_image_mode=None):
        return choice_error(multi_image_mode=(multi_image_mode, MULTI_IMAGE_MODES))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisStructureSampler", display_name="TRELLIS Structure Sampler", category="TRELLIS/sampling",
            inputs=[
                _model_input(),
                COND.Input("cond", tooltip="Condition from a TRELLIS condition node."),
                *_sampler_inputs(25, 5.0),
                _multi_image_input(),
                io.Int.Input("num_samples", default=1, min=1, max=16,
                             tooltip="Number of assets generated from the condition."),
                _step_cache_input(),
            ],
            outputs=[host.output(STRUCTURE, "structure", "Occupied voxels (stage 1)."),
                     host.output(VOXEL, "voxel", "The same as a core VOXEL (Y up; None on hosts without VOXEL).")])

    @classmethod
    def execute(cls, model: ModelHandle, cond: TrellisCond, seed, steps, cfg, cfg_interval_start, cfg_interval_end,
                rescale_t, multi_image_mode="stochastic", num_samples=1, step_cache=1):
        _check_cond(model, cond, "TrellisStructureSampler")
        params = _params(steps, cfg, cfg_interval_start, cfg_interval_end, rescale_t, step_cache)
        views = _views(cond, multi_image_mode)
        host.check_interrupt()
        pipeline = model.prepare(["structure"], samples=int(num_samples))
        structure = pipeline.sample_structure(cond.on(pipeline.device), Noise(int(seed)), int(num_samples), params,
                                              host.step_callback(steps), views).cpu()
        return io.NodeOutput(structure, host.make_voxel(structure.coords, structure.resolution, structure.num_samples))


def _check_structure(model: ModelHandle, structure, node: str) -> None:
    if not isinstance(structure, Structure):
        raise ValueError(f"{node}: structure must come from a TRELLIS structure node")
    if structure.resolution != model.folder.resolution:
        raise ValueError(f"{node}: the structure is on a {structure.resolution}^3 grid, model folder {model.name} "
                         f"works on {model.folder.resolution}^3; use the same model for both")


class TrellisLatentSampler(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, multi_image_mode=None):
        return choice_error(multi_image_mode=(multi_image_mode, MULTI_IMAGE_MODES))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisLatentSampler", display_name="TRELLIS Latent Sampler", category="TRELLIS/sampling",
            inputs=[
                _model_input(),
                COND.Input("cond", tooltip="Condition from a TRELLIS condition node."),
                STRUCTURE.Input("structure", tooltip="From TrellisStructureSampler or TrellisMeshToStructure."),
                *_sampler_inputs(25, 5.0),
                _multi_image_input(),
                _step_cache_input(),
            ],
            outputs=[host.output(SLAT, "slat", "Structured latent (stage 2).")])

    @classmethod
    def execute(cls, model: ModelHandle, cond: TrellisCond, structure: Structure, seed, steps, cfg,
                cfg_interval_start, cfg_interval_end, rescale_t, multi_image_mode="stochastic", step_cache=1):
        _check_cond(model, cond, "TrellisLatentSampler")
        _check_structure(model, structure, "TrellisLatentSampler")
        params = _params(steps, cfg, cfg_interval_start, cfg_interval_end, rescale_t, step_cache)
        views = _views(cond, multi_image_mode)
        host.check_interrupt()
        pipeline = model.prepare(["latent"], voxels=structure.coords.shape[0])
        slat = pipeline.sample_latents(cond.on(pipeline.device), structure, Noise.for_latents(int(seed), structure),
                                       params, host.step_callback(steps), views)
        return io.NodeOutput(TrellisSlat(slat, structure.num_samples))


class TrellisDecode(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisDecode", display_name="TRELLIS Decode", category="TRELLIS/sampling",
            inputs=[
                _model_input(),
                SLAT.Input("slat", tooltip="From TrellisLatentSampler."),
                io.Boolean.Input("gaussian", default=True, tooltip="Decode 3D Gaussians (splats; GLB texture bake)."),
                io.Boolean.Input("mesh", default=True, tooltip="Decode the mesh (needed for GLB export)."),
                io.Boolean.Input("radiance_field", default=False, tooltip="Decode the radiance field (Strivec)."),
            ],
            outputs=[host.output(ASSET, "asset", "The decoded representations (Gaussians, mesh, radiance field).")])

    @classmethod
    def execute(cls, model: ModelHandle, slat: TrellisSlat, gaussian=True, mesh=True, radiance_field=False):
        formats = [f for f, on in (("gaussian", gaussian), ("radiance_field", radiance_field), ("mesh", mesh)) if on]
        if not formats:
            raise ValueError("TrellisDecode: choose at least one of gaussian, mesh, radiance_field")
        pbar = host.progress_bar(len(formats))
        decoded = {}
        for i, f in enumerate(formats):
            host.check_interrupt()
            pipeline = model.prepare([f], voxels=slat.slat.coords.shape[0])
            decoded.update(pipeline.decode(slat.slat, [f]))
            pbar.update_absolute(i + 1, len(formats))
        return io.NodeOutput(TrellisAsset(decoded, slat.batch_size))


class TrellisMeshToStructure(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisMeshToStructure", display_name="TRELLIS Mesh to Structure", category="TRELLIS/sampling",
            inputs=[
                _model_input(),
                MESH.Input("mesh", optional=True,
                           tooltip="A core MESH (glTF frame, Y up); its first batch item is used."),
                _mesh_path_input(),
            ],
            outputs=[host.output(STRUCTURE, "structure", "Surface voxels of the mesh; connect to "
                                                         "TrellisLatentSampler for a variant."),
                     host.output(VOXEL, "voxel", "The same as a core VOXEL (None on hosts without VOXEL).")])

    @classmethod
    def validate_inputs(cls, mesh_path=""):
        return check_mesh_path(mesh_path)

    @classmethod
    def execute(cls, model: ModelHandle, mesh=None, mesh_path=""):
        if mesh is not None:
            items = host.mesh_items(mesh)
            if not items:
                raise ValueError("mesh: the MESH batch is empty")
            structure = structure_from_mesh(*items[0], model.folder.resolution, frame="gltf")
        elif mesh_path and str(mesh_path).strip():
            structure = structure_from_mesh_file(host.input_path(str(mesh_path).strip()), model.folder.resolution)
        else:
            raise ValueError("TrellisMeshToStructure: link a mesh or give mesh_path")
        return io.NodeOutput(structure, host.make_voxel(structure.coords, structure.resolution, 1))
