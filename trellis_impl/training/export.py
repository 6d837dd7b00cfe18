"""Training runs -> a model folder in the released layout (``pipeline.json`` + ``ckpts/NAME.json`` +
``ckpts/NAME.safetensors``), which ``load_model``, the pipelines, the CLI and the nodes read unchanged.

Weights are the run's last checkpoint, its EMA by default (official practice). With the default
``torso_dtype='float16'`` the files have the released dtype layout: the torso's Linear/Conv weights
in float16 and ``use_fp16: true`` in the json, everything else float32.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path
from typing import Dict, Sequence, Union

import torch

from ..models import build_model
from .config import TrainConfig
from .dataset import write_json_atomic

__all__ = ["export_model_folder", "write_checkpoint", "run_weights", "DEFAULT_CKPT_NAMES", "SAMPLER_DEFAULTS"]

# File names when the config's ``export`` section gives none (the ModelFolder finds the structure
# encoder from the decoder's name, ss_dec -> ss_enc, and the SLat encoder as slat_enc*).
DEFAULT_CKPT_NAMES = {
    ("ss_vae", "encoder"): "ss_enc_trained", ("ss_vae", "decoder"): "ss_dec_trained",
    ("slat_vae_gs", "encoder"): "slat_enc_trained", ("slat_vae_gs", "decoder"): "slat_dec_gs_trained",
    ("slat_dec_gs", "decoder"): "slat_dec_gs_trained",
    ("slat_dec_rf", "decoder"): "slat_dec_rf_trained", ("slat_dec_mesh", "decoder"): "slat_dec_mesh_trained",
    ("ss_flow", "denoiser"): "ss_flow_trained", ("slat_flow", "denoiser"): "slat_flow_trained",
}
# The released samplers (pipeline.json of TRELLIS-image-large).
SAMPLER_DEFAULTS = {"name": "FlowEulerGuidanceIntervalSampler", "args": {"sigma_min": 1e-5},
                    "params": {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}}
_TORSO_DTYPES = {"float16": torch.float16, "float32": torch.float32}


def _last_checkpoint(run: Path) -> Path:
    checkpoints = sorted(p for p in (run / "checkpoints").glob("step_*") if p.is_dir())
    if not checkpoints:
        raise ValueError(f"{run}: no checkpoint yet (train first: python -m trellis_impl train CONFIG --out {run})")
    return checkpoints[-1]


def run_weights(run: Union[str, Path], weights: str = "ema") -> Dict[str, Dict[str, torch.Tensor]]:
    """Per role, the state dict of a run's last checkpoint: ``weights`` 'ema' (the first EMA rate)
    or 'raw' (the optimised weights). Buffers always come from the raw state."""
    from safetensors.torch import load_file
    if weights not in ("ema", "raw"):
        raise ValueError(f"weights must be 'ema' or 'raw', got {weights!r}")
    folder = _last_checkpoint(Path(run))
    flat = load_file(str(folder / "models.safetensors"))
    states: Dict[str, Dict[str, torch.Tensor]] = {}
    for key, value in flat.items():
        role, name = key.split(".", 1)
        states.setdefault(role, {})[name] = value
    if weights == "ema":
        ema = load_file(str(folder / "ema.safetensors"))
        rates = sorted({k.split("/", 1)[0] for k in ema}, key=float)
        for key, value in ema.items():
            rate, name = key.split("/", 1)
            if rate == rates[0]:
                role, param = name.split(".", 1)
                states[role][param] = value
    return states


def _run_config(run: Path) -> TrainConfig:
    path = run / "config.json"
    if not path.is_file():
        raise ValueError(f"{run}: not a training run (no config.json)")
    return TrainConfig(json.loads(path.read_text(encoding="utf-8")), source=str(path), base_dir=run)


def export_model_folder(runs: Sequence[Union[str, Path]], out: Union[str, Path], weights: str = "ema",
                        torso_dtype: str = "float16", condition_encoder: Union[str, Path, None] = None) -> Path:
    """Write the model folder ``out`` (must not exist) from one run per stage.

    Args:
        runs: run folders (any subset of the stages; each stage once).
        weights: 'ema' or 'raw' (see ``run_weights``).
        torso_dtype: 'float16' (the released layout) or 'float32' (the weights exactly as trained).
        condition_encoder: a DINOv2 (Hugging Face layout) or CLIP folder copied into the model folder
            as ``dinov2/`` or ``clip/``; default: the flow runs' frozen encoder when it is a folder.
    Returns:
        the folder.
    """
    from .stages import STAGES
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out} exists; give a new folder (nothing is overwritten)")
    if torso_dtype not in _TORSO_DTYPES:
        raise ValueError(f"torso_dtype must be one of {', '.join(_TORSO_DTYPES)}, got {torso_dtype!r}")
    configs = {}
    for run in map(Path, runs):
        config = _run_config(run)
        if config.stage in configs:
            raise ValueError(f"two runs of stage {config.stage}: {configs[config.stage][0]} and {run}")
        configs[config.stage] = (run, config)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        (tmp / "ckpts").mkdir()
        models, args, kind = {}, {}, None
        for stage, (run, config) in configs.items():
            states = run_weights(run, weights)
            for role in STAGES[stage].roles:
                models.update(STAGES[stage].export_role(config, role, states[role], tmp, _TORSO_DTYPES[torso_dtype]))
            stage_info = run / "stage.json"
            if stage_info.is_file():
                args.update(json.loads(stage_info.read_text(encoding="utf-8")).get("pipeline_args", {}))
            if stage in ("ss_flow", "slat_flow"):
                kind = config.data.get("condition", "image")
                frozen = config.frozen.get(f"{kind}_encoder")
                if condition_encoder is None and frozen is not None:
                    condition_encoder = config.path(frozen)
        kind = kind or "image"
        pipeline = {"name": "TrellisImageTo3DPipeline" if kind == "image" else "TrellisTextTo3DPipeline",
                    "args": {"models": models, "sparse_structure_sampler": SAMPLER_DEFAULTS,
                             "slat_sampler": SAMPLER_DEFAULTS, **args}}
        pipeline["args"].setdefault("slat_normalization", {"mean": [0.0] * 8, "std": [1.0] * 8})
        if kind == "image":
            pipeline["args"]["image_cond_model"] = "dinov2_vitl14_reg"
        else:
            pipeline["args"]["text_cond_model"] = "openai/clip-vit-large-patch14"
        trained_encoder = (tmp / "dinov2").is_dir()  # a distilled image encoder among the runs
        if trained_encoder and kind != "image":
            raise ValueError("a distilled image encoder (vit_distill run) cannot go with text-conditioned flows")
        if not trained_encoder and condition_encoder is not None and Path(condition_encoder).is_dir():
            shutil.copytree(condition_encoder, tmp / ("dinov2" if kind == "image" else "clip"))
        write_json_atomic(tmp / "pipeline.json", pipeline)
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def write_checkpoint(base: Path, spec: dict, state: Dict[str, torch.Tensor], torso_dtype: torch.dtype) -> None:
    """``base.json`` ({"name", "args"} with use_fp16 matching the torso dtype) + ``base.safetensors``."""
    from safetensors.torch import save_file
    args = dict(spec.get("args", {}))
    if "use_fp16" in args or torso_dtype == torch.float16:
        args["use_fp16"] = torso_dtype == torch.float16
    with torch.device("meta"):
        model = build_model(spec["name"], **args)
    model.load_state_dict({k: v.float() for k, v in state.items()}, strict=True, assign=True)
    model.float().set_compute_dtype(torso_dtype)
    Path(f"{base}.json").write_text(json.dumps({"name": spec["name"], "args": args}, indent=4))
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(base) + ".safetensors")
