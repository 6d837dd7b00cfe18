"""Model folders in the released layout, loaded lazily per stage.

A folder holds ``pipeline.json`` ({"name": ..., "args": {"models": {key: "ckpts/NAME"}, sampler
settings, "slat_normalization", "image_cond_model" | "text_cond_model"}}) and ``ckpts/NAME.json`` +
``ckpts/NAME.safetensors`` per model. A model path of the form ``owner/repo/ckpts/NAME`` (the text
pipelines take their decoders from TRELLIS-image-large) resolves to the sibling folder ``repo``
beside this one.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Dict, List, Optional, Union

import torch

from ..models import load_model
from ..models.base import TrellisModel

__all__ = ["ModelFolder", "ModelFolderError", "KNOWN_REPOSITORIES", "download_model_folder", "PIPELINE_NAMES",
           "ENCODER_KEY", "SLAT_ENCODER_KEY", "DEMO_MODEL", "demo_model_path"]
# The sparse-structure encoder (released beside the decoder, not listed in pipeline.json's models).
ENCODER_KEY = "sparse_structure_encoder"
# The SLat encoder (released as ckpts/slat_enc_swin8_B_64l8_fp16 of TRELLIS-image-large, not listed
# in pipeline.json): found as the single ckpts/slat_enc*.json unless args.models lists it.
SLAT_ENCODER_KEY = "slat_encoder"

PIPELINE_NAMES = ("TrellisImageTo3DPipeline", "TrellisTextTo3DPipeline")
KNOWN_REPOSITORIES = (
    "microsoft/TRELLIS-image-large",
    "microsoft/TRELLIS-text-base",
    "microsoft/TRELLIS-text-large",
    "microsoft/TRELLIS-text-xlarge",
)


# The small image model trained with this project's code and shipped inside the package
# (docs/demo_model.md): the default when no model is named, and a loader choice that needs no download.
DEMO_MODEL = "TRELLIS-demo"
DEMO_MODEL_PATH = Path(__file__).resolve().parents[1] / "demo_model"


class ModelFolderError(ValueError):
    """A model folder that is missing, incomplete or of an unknown kind."""


def demo_model_path() -> Path:
    """The embedded demo model's folder; ModelFolderError when this copy of the package lacks it."""
    if not (DEMO_MODEL_PATH / "pipeline.json").is_file():
        raise ModelFolderError(f"the embedded demo model {DEMO_MODEL} is not in {DEMO_MODEL_PATH}; name a model "
                               f"folder or one of {', '.join(KNOWN_REPOSITORIES)}")
    return DEMO_MODEL_PATH


class ModelFolder:
    """A released-layout model folder; models load on first use and stay cached.

    Args:
        path: the folder (containing pipeline.json).
        dtype: torso compute dtype passed to ``load_model`` (None: float32 on CPU, float16 on GPU).
        device: where models are loaded.
        encoder_path: the sparse-structure encoder's checkpoint (without extension), for
            ``model('sparse_structure_encoder')``; default: the structure decoder's checkpoint
            with ``ss_dec`` -> ``ss_enc`` in its name (the released ``ss_enc_conv3d_16l8_fp16``,
            which pipeline.json does not list).
        offload: the low-VRAM mode: models wait on the CPU and only the one in use is on
            ``device`` (``activate``); each stage then needs its own weights, not all of them.
    """

    def __init__(self, path: Union[str, os.PathLike], dtype: Optional[torch.dtype] = None,
                 device: Union[str, torch.device] = "cpu", encoder_path: Union[str, os.PathLike, None] = None,
                 offload: bool = False):
        self.path = Path(path)
        self.encoder_path = None if encoder_path is None else Path(encoder_path)
        self.dtype, self.device = dtype, torch.device(device)
        self.offload = offload and self.device.type != "cpu"
        self._active: Optional[torch.nn.Module] = None
        config_path = self.path / "pipeline.json"
        if not config_path.is_file():
            raise ModelFolderError(f"{self.path}: no pipeline.json here; a model folder holds pipeline.json and "
                                   f"ckpts/ (see README, 'Model folders')")
        try:
            config = json.loads(config_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise ModelFolderError(f"{config_path}: not valid JSON ({e})") from None
        self.name = config.get("name")
        if self.name not in PIPELINE_NAMES:
            raise ModelFolderError(f"{config_path}: unknown pipeline class {self.name!r}; "
                                   f"supported: {', '.join(PIPELINE_NAMES)}")
        self.args: dict = config.get("args", {})
        if not isinstance(self.args.get("models"), dict):
            raise ModelFolderError(f"{config_path}: args.models must map model keys to checkpoint paths")
        self._models: Dict[str, TrellisModel] = {}

    @property
    def kind(self) -> str:
        """'image' or 'text'."""
        return "image" if self.name == "TrellisImageTo3DPipeline" else "text"

    @property
    def resolution(self) -> int:
        """The structure grid R (64 for the released models): the SLat flow's, read from its config
        without loading its weights."""
        path = Path(f"{self.checkpoint_path('slat_flow_model')}.json")
        try:
            return int(json.loads(path.read_text(encoding="utf-8"))["args"]["resolution"])
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise ModelFolderError(f"{path}: cannot read the SLat flow's args.resolution ({e})") from None

    def checkpoint_path(self, key: str) -> Path:
        """Where model ``key``'s files live (without extension)."""
        if key == ENCODER_KEY and key not in self.args["models"]:
            return self._encoder_checkpoint()
        if key == SLAT_ENCODER_KEY and key not in self.args["models"]:
            return self._slat_encoder_checkpoint()
        if key not in self.args["models"]:
            raise ModelFolderError(f"{self.path / 'pipeline.json'}: no model {key!r}; "
                                   f"has {', '.join(self.args['models'])}")
        rel = self.args["models"][key]
        parts = rel.split("/")
        if not (self.path / rel).parent.is_dir() and len(parts) > 3 and parts[2] == "ckpts":
            return self.path.parent / parts[1] / "/".join(parts[2:])
        return self.path / rel

    def _encoder_checkpoint(self) -> Path:
        if self.encoder_path is not None:
            return self.encoder_path
        if "sparse_structure_decoder" not in self.args["models"]:
            raise ModelFolderError(f"{self.path / 'pipeline.json'}: no sparse_structure_decoder, so no place to "
                                   f"look for the structure encoder; pass encoder_path")
        decoder = self.checkpoint_path("sparse_structure_decoder")
        if "ss_dec" not in decoder.name:
            raise ModelFolderError(f"cannot derive the structure encoder's name from {decoder.name!r} (no 'ss_dec' "
                                   f"in it); pass encoder_path")
        return decoder.with_name(decoder.name.replace("ss_dec", "ss_enc", 1))

    def _slat_encoder_checkpoint(self) -> Path:
        """The single ``slat_enc*`` checkpoint in the folder's ckpts/ (or, for folders that take their
        decoders from a sibling repository, beside the Gaussian decoder)."""
        places = [self.path / "ckpts"]
        if "slat_decoder_gs" in self.args["models"]:
            places.append(self.checkpoint_path("slat_decoder_gs").parent)
        for place in dict.fromkeys(places):
            found = sorted(place.glob("slat_enc*.json"))
            if len(found) > 1:
                raise ModelFolderError(f"{place}: several SLat encoders ({', '.join(p.name for p in found)}); "
                                       f"name one in pipeline.json as args.models.{SLAT_ENCODER_KEY} "
                                       f"(e.g. \"ckpts/{found[0].stem}\")")
            if found:
                return found[0].with_suffix("")
        raise ModelFolderError(f"{self.path}: no SLat encoder (no ckpts/slat_enc*.json in "
                               f"{' or '.join(str(p) for p in dict.fromkeys(places))}, none listed as "
                               f"args.models.{SLAT_ENCODER_KEY} in pipeline.json). Encoding needs one: the released "
                               f"ckpts/slat_enc_swin8_B_64l8_fp16 (.json + .safetensors) of microsoft/TRELLIS-image-large")

    def missing_files(self, keys: Optional[List[str]] = None) -> List[Path]:
        """The checkpoint files of ``keys`` (default: all models) that are not on disk."""
        missing = []
        for key in keys or list(self.args["models"]):
            base = self.checkpoint_path(key)
            missing += [p for p in (Path(f"{base}.json"), Path(f"{base}.safetensors")) if not p.is_file()]
        return missing

    def verify(self, keys: Optional[List[str]] = None) -> None:
        """Check the checkpoints of ``keys`` (default: every model pipeline.json lists) before any
        of them is used: files present, configs parse, weight headers match the models
        (``check_checkpoint``; the weights themselves are read on first use)."""
        from ..models.registry import check_checkpoint
        missing = self.missing_files(keys)
        if missing:
            raise ModelFolderError(f"model folder {self.path} is incomplete: missing "
                                   + ", ".join(str(p) for p in missing))
        for key in keys or list(self.args["models"]):
            if key not in self._models:
                check_checkpoint(str(self.checkpoint_path(key)))

    def model(self, key: str) -> TrellisModel:
        """Load (once) and return model ``key``, e.g. 'sparse_structure_flow_model', on ``device``."""
        if key not in self._models:
            missing = self.missing_files([key])
            if missing:
                raise ModelFolderError(f"model folder {self.path} is incomplete: missing "
                                       + ", ".join(str(p) for p in missing))
            # offloaded models wait on the CPU but keep the torso dtype of the device they run on
            dtype = self.dtype if self.dtype is not None or not self.offload else torch.float16
            self._models[key] = load_model(str(self.checkpoint_path(key)), dtype=dtype,
                                           device="cpu" if self.offload else self.device)
        return self.activate(self._models[key])

    def activate(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` ready to run on ``device``: with ``offload``, moved there while the module
        activated before goes back to the CPU (one model on the device at a time); otherwise as is.
        Condition encoders kept outside the folder go through here too."""
        if self.offload and module is not self._active:
            if self._active is not None:
                self._active.to("cpu")
            self._active = module.to(self.device)
        return module

    def loaded(self) -> Dict[str, TrellisModel]:
        return dict(self._models)

    def sampler_config(self, stage: str) -> dict:
        """{'name', 'args', 'params'} of 'sparse_structure_sampler' or 'slat_sampler'."""
        config = self.args.get(stage)
        if not isinstance(config, dict):
            raise ModelFolderError(f"{self.path / 'pipeline.json'}: no {stage} settings")
        return config

    def slat_normalization(self) -> Dict[str, torch.Tensor]:
        norm = self.args.get("slat_normalization")
        if norm is None:
            raise ModelFolderError(f"{self.path / 'pipeline.json'}: no slat_normalization")
        return {k: torch.tensor(norm[k], dtype=torch.float32) for k in ("mean", "std")}


def download_model_folder(repo_id: str, root: Union[str, os.PathLike]) -> Path:
    """Download a known TRELLIS repository into ``root/<repo name>`` with huggingface_hub
    (with progress bars; resumable, files already complete are skipped) and return the folder."""
    if repo_id not in KNOWN_REPOSITORIES:
        raise ModelFolderError(f"unknown repository {repo_id!r}; known: {', '.join(KNOWN_REPOSITORIES)}")
    try:
        from huggingface_hub import snapshot_download
    except ImportError:
        raise ModelFolderError("downloading models needs the huggingface_hub package (pip install huggingface_hub)") \
            from None
    target = Path(root) / repo_id.split("/")[1]
    try:
        snapshot_download(repo_id, local_dir=str(target), allow_patterns=["pipeline.json", "ckpts/*"])
    except Exception as e:  # offline, auth, disk full: say what is missing and where it goes
        raise ModelFolderError(f"could not download {repo_id} into {target} ({type(e).__name__}: {e}). "
                               f"Offline? Put pipeline.json and ckpts/ of {repo_id} in {target}.") from None
    return target
