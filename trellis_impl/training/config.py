"""Training configs: one JSON file per stage (``configs/training/*.json``).

::

    {
      "stage": "ss_vae" | "slat_vae_gs" | "slat_dec_rf" | "slat_dec_mesh" | "ss_flow" | "slat_flow",
      "models":  {ROLE: {"name": CLASS, "args": {...}}},      trained, as in the released ckpts/NAME.json
      "init":    {ROLE: CHECKPOINT},                           optional: start from these weights (fine-tuning)
      "frozen":  {ROLE: CHECKPOINT or FOLDER},                 stage inputs that are not trained (e.g. the SLat
                                                               encoder of a decoder stage, the DINOv2 folder)
      "trainer": {...},                                        see TRAINER_DEFAULTS
      "loss":    {...},                                        the stage's loss weights (official names)
      "data":    {...},                                        the stage's data options
      "export":  {ROLE: CKPT_NAME}                             file names in the exported model folder
    }

Relative paths in ``init`` and ``frozen`` are taken from the config file's folder.
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any, Dict, Union

__all__ = ["TrainConfig", "TRAINER_DEFAULTS", "MIXED_PRECISION", "OPTIMIZERS", "ConfigError", "load_config"]

MIXED_PRECISION = ("none", "tf32", "bf16", "fp16")
OPTIMIZERS = ("AdamW", "Adam", "SGD")
# The official trainers' values (configs/generation/*.json, configs/vae/*.json) where they exist.
TRAINER_DEFAULTS: Dict[str, Any] = {
    "max_steps": 1000,
    "batch_size_per_gpu": 4,
    "batch_split": 1,            # micro-batches per step (gradient accumulation)
    "optimizer": {"name": "AdamW", "args": {"lr": 1e-4, "weight_decay": 0.0}},
    "ema_rate": [0.9999],
    "ema_warmup": False,         # rate min(r, (1 + step) / (10 + step)): a short run's EMA forgets the initial weights
    "mixed_precision": "bf16",   # autocast dtype on the device; 'fp16' adds a gradient scaler; 'tf32': no
                                 # autocast, float32 products on TF32 tensor cores (CUDA)
    "grad_clip": {"max_norm": 1.0, "clip_percentile": 95},  # official AdaptiveGradClipper; null: none
    "grad_checkpoint": False,    # recompute block activations in backward (the models' use_checkpoint)
    "i_log": 10,
    "i_save": 1000,
    "keep_checkpoints": 2,
    "seed": 0,
    "loader_threads": 8,         # threads reading and preparing one step's samples (PIL and file reads release the GIL)
}


class ConfigError(ValueError):
    """A training config that cannot be used."""


class TrainConfig:
    """A validated training config.

    Attributes:
        stage: the stage name; models / init / frozen / loss / data / export: the sections (dicts);
        trainer: TRAINER_DEFAULTS updated with the file's values; source: where it was read from.
    """

    def __init__(self, data: dict, source: str = "<dict>", base_dir: Union[str, Path, None] = None):
        from .stages import STAGES
        if not isinstance(data, dict):
            raise ConfigError(f"{source}: a training config is a JSON object")
        self.raw = copy.deepcopy(data)
        self.source = source
        self.base_dir = Path(base_dir) if base_dir is not None else Path(".")
        self.stage = data.get("stage")
        if self.stage not in STAGES:
            raise ConfigError(f"{source}: stage must be one of {', '.join(STAGES)}; got {self.stage!r}")
        unknown = set(data) - {"stage", "models", "init", "frozen", "trainer", "loss", "data", "export", "comment"}
        if unknown:
            raise ConfigError(f"{source}: unknown section(s) {sorted(unknown)}")
        self.models: Dict[str, dict] = data.get("models") or {}
        for role, spec in self.models.items():
            if not isinstance(spec, dict) or "name" not in spec or not isinstance(spec.get("args", {}), dict):
                raise ConfigError(f"{source}: models.{role} must be {{'name': CLASS, 'args': {{...}}}}")
        self.init: Dict[str, str] = data.get("init") or {}
        self.frozen: Dict[str, str] = data.get("frozen") or {}
        self.loss: dict = data.get("loss") or {}
        self.data: dict = data.get("data") or {}
        self.export: Dict[str, str] = data.get("export") or {}
        trainer = data.get("trainer") or {}
        unknown = set(trainer) - set(TRAINER_DEFAULTS)
        if unknown:
            raise ConfigError(f"{source}: unknown trainer option(s) {sorted(unknown)}; "
                              f"allowed: {', '.join(TRAINER_DEFAULTS)}")
        self.trainer = {**copy.deepcopy(TRAINER_DEFAULTS), **copy.deepcopy(trainer)}
        self._check_trainer()

    def _check_trainer(self) -> None:
        t, src = self.trainer, self.source
        for key in ("max_steps", "batch_size_per_gpu", "batch_split", "i_log", "i_save", "keep_checkpoints",
                    "loader_threads"):
            if not isinstance(t[key], int) or t[key] < 1:
                raise ConfigError(f"{src}: trainer.{key} must be a positive integer, got {t[key]!r}")
        if t["mixed_precision"] not in MIXED_PRECISION:
            raise ConfigError(f"{src}: trainer.mixed_precision must be one of {MIXED_PRECISION}, "
                              f"got {t['mixed_precision']!r}")
        if t["optimizer"].get("name") not in OPTIMIZERS:
            raise ConfigError(f"{src}: trainer.optimizer.name must be one of {OPTIMIZERS}, "
                              f"got {t['optimizer'].get('name')!r}")
        rates = t["ema_rate"]
        rates = [rates] if isinstance(rates, (int, float)) else rates
        if not all(isinstance(r, (int, float)) and 0 < r < 1 for r in rates):
            raise ConfigError(f"{src}: trainer.ema_rate must be rates in (0, 1), got {t['ema_rate']!r}")
        t["ema_rate"] = [float(r) for r in rates]
        if not isinstance(t["ema_warmup"], bool):
            raise ConfigError(f"{src}: trainer.ema_warmup must be true or false, got {t['ema_warmup']!r}")

    @property
    def autocast_dtype(self):
        """The torch dtype of the steps' autocast (``trainer.mixed_precision`` bf16 or fp16), None
        without autocast (none, tf32)."""
        import torch
        return {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.trainer["mixed_precision"])

    def path(self, value: str) -> Path:
        """A path from the config, relative to the config file's folder."""
        p = Path(value)
        return p if p.is_absolute() else self.base_dir / p

    def to_json(self) -> dict:
        return copy.deepcopy(self.raw)


def load_config(path: Union[str, Path]) -> TrainConfig:
    """Read and validate a config file (ConfigError naming the file on any problem)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return TrainConfig(data, source=str(path), base_dir=path.parent)
