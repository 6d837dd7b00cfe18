"""Few-step distilled flows (MDT-dist) as a model folder of their own.

MDT-dist (Zhou et al. 2025, arXiv 2509.04406; code github.com/Zanue/MDT-dist, weights on Hugging
Face ``Zanwei/mdt-dist``) fine-tunes the two flow transformers of TRELLIS-image-large to sample in
1-2 steps each. The architectures are the released ones (their configs equal
``ss_flow_img_dit_L_16l8_fp16`` and ``slat_flow_img_dit_L_64l8p2_fp16``); every other model
(decoders, DINOv2) is TRELLIS-image-large's. Their sampling (``run_snapshot`` of their trainer and
their configs): ``FlowEulerCfgSampler`` (CFG at every step, no interval), ``cfg_strength`` 3.0,
``rescale_t`` 1.0, sigma_min 1e-5, 1-4 steps.

``write_distilled_folder`` turns a base folder and the distilled weights into a folder in the
released layout: its pipeline.json names the two distilled flows (``ckpts/``, converted to
safetensors) and the base's other checkpoints by relative path, with the authors' sampler for both
stages; a DINOv2 inside the base (``dinov2/``) is linked or copied in. Every loader (CLI, nodes, Python) then runs it like any model folder.
"""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Dict, Iterable, List, Tuple, Union

import torch

from ..models.registry import (CheckpointError, build_model, check_state_dict, read_config, read_safetensors,
                               read_torch_state_dict)
from .model_folder import ModelFolder, ModelFolderError

__all__ = ["MDT_DIST_REPOSITORY", "mdt_dist_sampler", "write_distilled_folder", "download_mdt_dist",
           "DISTILLED_STEPS"]

MDT_DIST_REPOSITORY = "Zanwei/mdt-dist"
FLOW_KEYS = ("sparse_structure_flow_model", "slat_flow_model")
DISTILLED_STEPS = (1, 2, 3, 4)
_WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".ckpt", ".bin")
# Where a training checkpoint nests its state dict (tried in this order; the EMA weights first).
_NESTED = ("ema", "denoiser", "state_dict", "model", "module")


def mdt_dist_sampler(steps: int, sigma_min: float = 1e-5) -> dict:
    """The authors' sampler entry for pipeline.json: Euler with CFG 3.0 at every step, no time rescaling."""
    if steps not in DISTILLED_STEPS:
        raise ValueError(f"steps must be one of {DISTILLED_STEPS} for the distilled flows, got {steps}")
    return {"name": "FlowEulerCfgSampler", "args": {"sigma_min": sigma_min},
            "params": {"steps": int(steps), "cfg_strength": 3.0, "rescale_t": 1.0}}


def _read_state_dict(path: Path) -> Dict[str, torch.Tensor]:
    """A flat name -> tensor dict from a safetensors or torch file (training checkpoints nest it,
    DDP prefixes keys with ``module.``)."""
    weights = read_safetensors(str(path)) if path.suffix == ".safetensors" else \
        read_torch_state_dict(str(path), nested=_NESTED)
    if weights and all(k.startswith("module.") for k in weights):
        weights = {k[len("module."):]: v for k, v in weights.items()}
    return weights


def _candidates(weights: Union[str, os.PathLike, Iterable]) -> List[Path]:
    paths = [Path(weights)] if isinstance(weights, (str, os.PathLike)) else [Path(p) for p in weights]
    files = []
    for p in paths:
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and f.suffix in _WEIGHT_SUFFIXES)
        elif p.is_file():
            files.append(p)
        else:
            raise ModelFolderError(f"distilled weights: {p} does not exist")
    if not files:
        raise ModelFolderError(f"distilled weights: no {'/'.join(_WEIGHT_SUFFIXES)} file in "
                               f"{', '.join(str(p) for p in paths)}")
    return files


def _match_flows(base: ModelFolder, files: List[Path]) -> Dict[str, Tuple[Path, Dict[str, torch.Tensor]]]:
    """Which file holds which flow (the one whose keys and shapes fit that flow's released
    config), with its weights as read: {key: (path, state dict)}."""
    models = {}
    for key in FLOW_KEYS:
        config = read_config(f"{base.checkpoint_path(key)}.json")
        with torch.device("meta"):
            models[key] = build_model(config["name"], **config.get("args", {}))
    found: Dict[str, List[Tuple[Path, Dict[str, torch.Tensor]]]] = {key: [] for key in FLOW_KEYS}
    reasons = []
    for path in files:
        try:
            weights = _read_state_dict(path)
        except CheckpointError as e:
            reasons.append(str(e))
            continue
        for key, model in models.items():
            try:
                check_state_dict(model, weights, str(path))
                found[key].append((path, weights))
            except CheckpointError as e:
                reasons.append(str(e))
    for key, fits in found.items():
        if len(fits) > 1:
            raise ModelFolderError(f"distilled weights: several files fit the {key}: "
                                   f"{', '.join(str(path) for path, _ in fits)}; pass the two files to use")
        if not fits:
            raise ModelFolderError(f"distilled weights: no file fits the {key} of {base.path} "
                                   f"({len(files)} file(s) tried). " + " | ".join(reasons[:4]))
    return {key: fits[0] for key, fits in found.items()}


def write_distilled_folder(base: Union[str, os.PathLike], weights, out: Union[str, os.PathLike],
                           steps: int = 2) -> Path:
    """A model folder at ``out`` running ``base`` (a TRELLIS-image-large folder) with the
    distilled flows found in ``weights`` (a folder or files: .safetensors or torch checkpoints,
    told apart by their keys and shapes) and the authors' ``steps``-step sampler.

    The base's other checkpoints are referenced (relative paths), not copied. ``out`` must not
    exist; nothing is left there if any check fails. Returns ``out``."""
    from safetensors.torch import save_file
    base_folder = ModelFolder(base)
    if base_folder.kind != "image":
        raise ModelFolderError(f"{base}: MDT-dist distils TRELLIS-image-large; this folder is a text model")
    mdt_dist_sampler(steps)  # checks steps before any work
    out = Path(out)
    if out.exists():
        raise ModelFolderError(f"{out} already exists; name a new folder")
    flows = _match_flows(base_folder, _candidates(weights))
    partial = out.with_name(out.name + ".part")
    shutil.rmtree(partial, ignore_errors=True)
    try:
        (partial / "ckpts").mkdir(parents=True)
        args = json.loads(json.dumps(base_folder.args))
        for key in args["models"]:
            source = base_folder.checkpoint_path(key)
            if key in flows:
                rel = f"ckpts/{source.name}"
                shutil.copyfile(f"{source}.json", partial / f"{rel}.json")
                save_file({k: v.contiguous() for k, v in flows[key][1].items()}, str(partial / f"{rel}.safetensors"))
            else:
                try:
                    rel = Path(os.path.relpath(source, out)).as_posix()
                except ValueError:  # another drive (Windows): only an absolute path reaches it
                    rel = source.resolve().as_posix()
            args["models"][key] = rel
        if (base_folder.path / "dinov2").is_dir():  # an encoder inside the base: the lookup only sees our own
            shutil.copytree(base_folder.path / "dinov2", partial / "dinov2", copy_function=_link_or_copy)
        args["sparse_structure_sampler"] = mdt_dist_sampler(steps, _sigma_min(base_folder, "sparse_structure_sampler"))
        args["slat_sampler"] = mdt_dist_sampler(steps, _sigma_min(base_folder, "slat_sampler"))
        config = {"name": base_folder.name, "args": args,
                  "distilled": {"method": "MDT-dist", "repository": MDT_DIST_REPOSITORY,
                                "base": Path(os.path.abspath(base)).as_posix(),
                                "weights": {k: Path(os.path.abspath(p)).as_posix() for k, (p, _) in flows.items()}}}
        (partial / "pipeline.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
        os.replace(partial, out)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    return out


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system, or links not allowed
        shutil.copy2(source, target)


def _sigma_min(folder: ModelFolder, stage: str) -> float:
    return float(folder.sampler_config(stage).get("args", {}).get("sigma_min", 1e-5))


def download_mdt_dist(root: Union[str, os.PathLike]) -> Path:
    """Download the MDT-dist weights (``Zanwei/mdt-dist``, weight files and configs) into
    ``root/mdt-dist`` with huggingface_hub and return that folder."""
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelFolderError("downloading needs the huggingface_hub package (pip install huggingface_hub)") from None
    target = Path(root) / "mdt-dist"
    try:
        snapshot_download(MDT_DIST_REPOSITORY, local_dir=str(target),
                          allow_patterns=[f"*{s}" for s in _WEIGHT_SUFFIXES] + ["*.json"])
    except Exception as e:  # offline, auth, disk full
        raise ModelFolderError(f"could not download {MDT_DIST_REPOSITORY} into {target} ({type(e).__name__}: {e}). "
                               f"Offline? Put its weight files in {target}.") from None
    return target
