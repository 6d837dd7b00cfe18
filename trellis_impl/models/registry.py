"""Model classes by name, and loading of checkpoints in the released layout
(``NAME.json`` = {"name": CLASS, "args": {...}} beside ``NAME.safetensors``)."""
from __future__ import annotations

import json
import os
from typing import Dict, Optional, Sequence, Type, Union

import torch

from .base import TrellisModel
from .slat_flow import ElasticSLatFlowModel, SLatFlowModel
from .slat_vae import (ElasticSLatEncoder, ElasticSLatGaussianDecoder, ElasticSLatMeshDecoder,
                       ElasticSLatRadianceFieldDecoder, SLatEncoder, SLatGaussianDecoder, SLatMeshDecoder,
                       SLatRadianceFieldDecoder)
from .sparse_structure_flow import SparseStructureFlowModel
from .sparse_structure_vae import SparseStructureDecoder, SparseStructureEncoder

__all__ = ["MODEL_CLASSES", "build_model", "load_model", "from_pretrained", "CheckpointError", "read_torch_state_dict", "read_safetensors",
           "check_checkpoint", "read_config"]

MODEL_CLASSES: Dict[str, Type[TrellisModel]] = {cls.__name__: cls for cls in (
    SparseStructureEncoder, SparseStructureDecoder, SparseStructureFlowModel,
    SLatFlowModel, ElasticSLatFlowModel,
    SLatEncoder, SLatGaussianDecoder, SLatRadianceFieldDecoder, SLatMeshDecoder,
    ElasticSLatEncoder, ElasticSLatGaussianDecoder, ElasticSLatRadianceFieldDecoder, ElasticSLatMeshDecoder,
)}

_MAX_LISTED = 5


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used: missing, unreadable, or not matching its config."""


def read_torch_state_dict(path: str, nested: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """A plain state dict (name -> tensor) from a ``torch.save`` file, read with ``weights_only``;
    CheckpointError naming the file when it is missing, unreadable or holds anything else.
    ``nested``: keys under which a training checkpoint may hold it (the first present is taken,
    level by level)."""
    if not os.path.isfile(path):
        raise CheckpointError(f"{path}: weights file not found")
    try:
        weights = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle with non-tensor objects, ...
        raise CheckpointError(f"{path}: not a readable tensor-only torch checkpoint: {e}") from None
    while isinstance(weights, dict) and not all(isinstance(v, torch.Tensor) for v in weights.values()):
        inner = next((weights[k] for k in nested if isinstance(weights.get(k), dict)), None)
        if inner is None:
            break
        weights = inner
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise CheckpointError(f"{path}: expected a plain state dict (name -> tensor), got {type(weights).__name__}")
    return weights


def build_model(name: str, *, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None,
                operations=None, **args) -> TrellisModel:
    """Construct model class ``name`` with its config ``args`` (weights uninitialised).

    Works under ``torch.device('meta')``; ``state_dict()`` then lists the released keys,
    shapes and dtypes (float16 torso when ``use_fp16``). ``dtype`` (torso dtype, overriding
    ``use_fp16``), ``device`` and ``operations`` (the layer classes, ``modules.ops``) go to the
    constructor (``TrellisModel``).
    """
    if name not in MODEL_CLASSES:
        raise ValueError(f"unknown model class {name!r}; known: {', '.join(sorted(MODEL_CLASSES))}")
    try:
        return MODEL_CLASSES[name](dtype=dtype, device=device, operations=operations, **args)
    except TypeError as e:
        raise ValueError(f"bad arguments for {name}: {e}") from e


def _listing(keys) -> str:
    keys = list(keys)
    shown = ", ".join(keys[:_MAX_LISTED])
    return shown + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def read_config(path: str) -> dict:
    """A checkpoint's ``NAME.json`` ({"name": class, "args": {...}}); CheckpointError naming the file."""
    try:
        with open(path, encoding="utf-8") as f:
            config = json.load(f)
    except FileNotFoundError:
        raise CheckpointError(f"{path}: config file not found") from None
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{path}: cannot read the config as JSON ({e})") from None
    if not isinstance(config, dict) or "name" not in config or not isinstance(config.get("args", {}), dict):
        raise CheckpointError(f'{path}: expected {{"name": CLASS, "args": {{...}}}}')
    return config


def read_safetensors(path: str) -> Dict[str, torch.Tensor]:
    """The tensors of a safetensors file; CheckpointError naming the file when it is missing or damaged."""
    from safetensors.torch import load_file
    if not os.path.exists(path):
        raise CheckpointError(f"{path}: weights file not found")
    try:
        return load_file(path)
    except Exception as e:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or damaged?): {e}") from None


def check_state_dict(model: torch.nn.Module, weights: Dict[str, torch.Tensor], source: str) -> None:
    """Raise CheckpointError naming ``source`` and the first missing/unexpected/mis-shaped keys."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    misshaped = [f"{k} {list(weights[k].shape)} (expected {list(expected[k].shape)})"
                 for k in expected if k in weights and weights[k].shape != expected[k].shape]
    problems = []
    if missing:
        problems.append(f"missing keys: {_listing(missing)}")
    if unexpected:
        problems.append(f"unexpected keys: {_listing(unexpected)}")
    if misshaped:
        problems.append(f"mis-shaped: {_listing(misshaped)}")
    if problems:
        raise CheckpointError(f"{source} does not match {type(model).__name__}: " + "; ".join(problems))


def check_checkpoint(path: str) -> None:
    """Check ``path.json`` + ``path.safetensors`` without reading the weights: the config parses
    and names a known class, and the safetensors header (which the library validates against the
    file's length) lists exactly the model's keys and shapes. CheckpointError naming the file."""
    from safetensors import safe_open
    config = read_config(path + ".json")
    with torch.device("meta"):
        model = build_model(config["name"], **config.get("args", {}))
    weights_path = path + ".safetensors"
    if not os.path.exists(weights_path):
        raise CheckpointError(f"{weights_path}: weights file not found")
    try:
        with safe_open(weights_path, "pt") as f:
            shapes = {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except Exception as e:  # safetensors raises several error types for damaged files
        raise CheckpointError(f"{weights_path}: not a readable safetensors file (truncated or damaged?): {e}") from None
    check_state_dict(model, shapes, weights_path)


def load_model(path: str, dtype: Optional[torch.dtype] = None, device: Union[str, torch.device, None] = None,
               operations=None, **overrides) -> TrellisModel:
    """Load ``path.json`` + ``path.safetensors`` (a released checkpoint) as an eval-mode model.

    Args:
        path: checkpoint path without extension (``.../ckpts/ss_flow_img_dit_L_16l8_fp16``).
        dtype: torso compute dtype; default float32 on CPU and float16 elsewhere (the released
            precision). Tensors kept float32 by the official models stay float32.
        device: where to put the model (default CPU).
        operations: the layer classes to build from (``modules.ops``; default ``TrellisOps``),
            e.g. a host's casting layers; the keys and shapes checked are the same.
        overrides: config args to override.
    Safetensors only; weights are checked key by key and shape by shape.
    """
    for ext in (".json", ".safetensors"):
        if path.endswith(ext):
            path = path[: -len(ext)]
    config = read_config(path + ".json")
    args = {**config.get("args", {}), **overrides}
    with torch.device("meta"):
        model = build_model(config["name"], operations=operations, **args)
    weights = read_safetensors(path + ".safetensors")
    check_state_dict(model, weights, path + ".safetensors")
    model.load_state_dict(weights, strict=True, assign=True)
    device = torch.device(device or "cpu")
    if dtype is None:
        dtype = torch.float32 if device.type == "cpu" else torch.float16
    # Everything outside the torso computes in float32, as in the official models.
    model.float().set_compute_dtype(dtype)
    return model.to(device).eval().requires_grad_(False)


from_pretrained = load_model
