"""What a training stage provides to the Trainer: its models, its samples and its loss."""
from __future__ import annotations

import math
from pathlib import Path
from typing import ClassVar, Dict, List, Tuple

import torch
import torch.nn as nn

from ...sparse.conv import ConvWeights
from ...sparse.norm import SparseGroupNorm32
from ..config import TrainConfig
from ..dataset import TrainingData

__all__ = ["Stage", "initialise_weights", "per_sample_normal", "stack_items"]


def initialise_weights(model: nn.Module, zero: Tuple[str, ...] = ()) -> None:
    """The official initialisation: Xavier-uniform Linear weights with zero bias; sparse convs as
    spconv initialises them (uniform in +-1/sqrt(fan_in)); sparse group norms at identity; then the
    parameters of the submodules named in ``zero`` (e.g. output layers, adaLN) set to zero."""
    for module in model.modules():
        if isinstance(module, nn.Linear):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, ConvWeights):
            bound = 1.0 / math.sqrt(module.weight[0].numel())
            nn.init.uniform_(module.weight, -bound, bound)
            if module.bias is not None:
                nn.init.uniform_(module.bias, -bound, bound)
        elif isinstance(module, SparseGroupNorm32):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)
    named = dict(model.named_modules())
    for name in zero:
        for p in named[name].parameters():
            nn.init.zeros_(p)


def per_sample_normal(generators: List[torch.Generator], shapes: List[Tuple[int, ...]]) -> List[torch.Tensor]:
    """One standard-normal tensor per sample, each from that sample's generator (CPU float32)."""
    return [torch.randn(shape, generator=g) for g, shape in zip(generators, shapes)]


def stack_items(items: List[dict], key: str) -> torch.Tensor:
    return torch.stack([item[key] for item in items])


class Stage:
    """One trainable stage.

    Class attributes:
        name: the config's ``stage``.
        roles: the trained models (keys of the config's ``models``), e.g. ('encoder', 'decoder').
        pipeline_keys: role -> key of pipeline.json's ``models`` in an exported folder (roles not
            listed, the encoders, are found by their file names).
        data_kinds: the asset files every sample needs (see ``dataset.ASSET_KINDS``).
    """
    name: ClassVar[str]
    roles: ClassVar[Tuple[str, ...]]
    pipeline_keys: ClassVar[Dict[str, str]] = {}
    data_kinds: ClassVar[Tuple[str, ...]] = ()

    def __init__(self, config: TrainConfig, data: TrainingData, device: torch.device):
        self.config, self.data, self.device = config, data, torch.device(device)
        data.require(self.data_kinds, self.name)
        self.names: List[str] = list(data.names)  # the assets this stage samples from (indices refer to it)

    def build(self, role: str, spec: dict) -> nn.Module:
        """A new model for ``role`` from its config entry ``{"name": CLASS, "args": {...}}``
        (default: a released model class, ``models.build_model``)."""
        from ...models import build_model
        return build_model(spec["name"], **spec.get("args", {}))

    def initialise(self, role: str, model: nn.Module) -> None:
        """Initial weights of a newly built model (the official ``initialize_weights``)."""
        initialise_weights(model)

    def load_init(self, role: str, path: Path) -> nn.Module:
        """The model of ``role`` started from the config's ``init`` (default: a released-layout
        checkpoint, ``ckpts/NAME`` without its extension, read by ``models.load_model``)."""
        from ...models import load_model
        return load_model(str(path), dtype=torch.float32)

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        """Sample ``index`` of the dataset (CPU tensors); random choices come from ``generator``."""
        raise NotImplementedError

    def collate(self, items: List[dict]) -> dict:
        """A batch of items (CPU); keep each item's ``generator`` in ``batch['generators']``."""
        raise NotImplementedError

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        """The loss terms of a batch; ``loss`` is the total that is minimised."""
        raise NotImplementedError

    def pipeline_args(self) -> dict:
        """pipeline.json ``args`` entries this stage determines (e.g. slat_normalization)."""
        return {}

    @classmethod
    def export_role(cls, config: TrainConfig, role: str, state: Dict[str, torch.Tensor], folder: Path,
                    torso_dtype: torch.dtype) -> Dict[str, str]:
        """Write the trained model of ``role`` into the model folder being exported (default:
        ``ckpts/NAME.json`` + ``.safetensors``, NAME from the config's ``export``); returns the
        pipeline.json ``models`` entries it provides."""
        from ..export import DEFAULT_CKPT_NAMES, write_checkpoint
        name = config.export[role] if role in config.export else DEFAULT_CKPT_NAMES[(cls.name, role)]
        write_checkpoint(folder / "ckpts" / name, config.models[role], state, torso_dtype)
        key = cls.pipeline_keys.get(role)
        return {} if key is None else {key: f"ckpts/{name}"}
