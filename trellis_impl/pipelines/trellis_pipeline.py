"""The two-stage generation shared by the image and text pipelines:
condition -> sparse structure (stage-1 flow + SS decoder) -> SLat (stage-2 flow) -> decoders.

Noise is drawn exactly as the official pipeline draws it: one CPU generator seeded with the seed,
first the structure noise ``randn(num_samples, C, R, R, R)``, then the SLat noise
``randn(N_voxels, C)``; seed N therefore gives the official asset for seed N.
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence

import torch

from ..sampling import FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler
from ..sparse import SparseTensor
from .model_folder import ModelFolder, ModelFolderError

__all__ = ["TrellisPipeline", "GenerationResult", "FORMATS", "SAMPLER_CLASSES", "stage_timer"]

FORMATS = ("gaussian", "radiance_field", "mesh")
SAMPLER_CLASSES = {cls.__name__: cls for cls in
                   (FlowEulerSampler, FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler)}
_DECODER_KEYS = {"gaussian": "slat_decoder_gs", "radiance_field": "slat_decoder_rf", "mesh": "slat_decoder_mesh"}
# Called with (stage, step, steps) after every sampler step; raise to interrupt.
ProgressCallback = Callable[[str, int, int], None]


@dataclass
class GenerationResult:
    """coords: int32 [N, 4] (batch, x, y, z) active voxels; slat: the denormalised SLat; and one
    list (per sample) of each decoded format that was asked for."""
    coords: torch.Tensor
    slat: SparseTensor
    decoded: Dict[str, list] = field(default_factory=dict)
    timings: Dict[str, float] = field(default_factory=dict)  # seconds per stage
    # The dense structure latent [B, C, r, r, r] the structure was decoded from (None when the
    # structure did not come from stage 1): lets edits skip the structure encoder.
    structure_latent: Optional[torch.Tensor] = None


@contextmanager
def stage_timer(timings: Dict[str, float], stage: str, device: torch.device):
    """Adds the wall time of the block (device work included) to ``timings[stage]``."""
    start = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    timings[stage] = timings.get(stage, 0.0) + time.perf_counter() - start


class TrellisPipeline:
    """Runs a model folder given ready-made conditions.

    Args:
        folder: the models (loaded lazily, per stage).
        batch_cfg: run the CFG pair of forwards as one batch (same values, faster on GPU).
    """

    def __init__(self, folder: ModelFolder, batch_cfg: bool = False):
        self.folder = folder
        self.batch_cfg = batch_cfg

    @property
    def device(self) -> torch.device:
        return self.folder.device

    def sampler_params(self, stage: str, overrides: Optional[dict] = None) -> dict:
        """The released sampler parameters of ``stage`` with ``overrides`` (None values ignored)."""
        params = dict(self.folder.sampler_config(stage).get("params", {}))
        params.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return params

    def _sampler(self, stage: str):
        config = self.folder.sampler_config(stage)
        cls = SAMPLER_CLASSES.get(config.get("name"))
        if cls is None:
            raise ModelFolderError(f"{self.folder.path / 'pipeline.json'}: unknown sampler {config.get('name')!r}; "
                                   f"known: {', '.join(SAMPLER_CLASSES)}")
        args = dict(config.get("args", {}))
        if cls is not FlowEulerSampler:
            args["batch_cfg"] = self.batch_cfg
        return cls(**args)

    def _run_sampler(self, stage: str, model, noise, cond: dict, overrides: Optional[dict],
                     progress: Optional[ProgressCallback], views: Optional[dict]):
        params = self.sampler_params(stage, overrides)
        callback = None if progress is None else (lambda i, n, x: progress(stage, i + 1, n))
        return self._sampler(stage).sample(model, noise, **cond, **params, **(views or {}), callback=callback).samples

    @torch.no_grad()
    def sample_sparse_structure(self, cond: dict, generator: torch.Generator, num_samples: int = 1,
                                sampler_params: Optional[dict] = None, progress: Optional[ProgressCallback] = None,
                                views: Optional[dict] = None, noise: Optional[torch.Tensor] = None,
                                return_latent: bool = False):
        """Stage 1. ``cond`` = {'cond': [1 or N, L, C], 'neg_cond': ...}. Returns coords int32 [M, 4]
        (with ``return_latent``: (coords, the dense latent [num_samples, C, R, R, R])).
        ``noise`` [num_samples, C, R, R, R] replaces the seeded draw when given."""
        flow = self.folder.model("sparse_structure_flow_model")
        res = flow.resolution
        if noise is None:
            noise = torch.randn(num_samples, flow.in_channels, res, res, res, generator=generator)
        noise = noise.to(self.device)
        latent = self._run_sampler("sparse_structure_sampler", flow, noise, cond, sampler_params, progress, views)
        logits = self.folder.model("sparse_structure_decoder")(latent)
        coords = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
        return (coords, latent) if return_latent else coords

    @torch.no_grad()
    def sample_slat(self, cond: dict, coords: torch.Tensor, generator: torch.Generator,
                    sampler_params: Optional[dict] = None, progress: Optional[ProgressCallback] = None,
                    views: Optional[dict] = None, num_samples: Optional[int] = None,
                    noise: Optional[torch.Tensor] = None) -> SparseTensor:
        """Stage 2 on the given structure. Returns the SLat, denormalised with the folder's
        ``slat_normalization``. ``noise`` [N, C] replaces the seeded draw when given."""
        flow = self.folder.model("slat_flow_model")
        if coords.shape[0] == 0:
            raise ValueError("the sparse structure is empty (no voxel decoded as occupied): nothing to generate; "
                             "try another seed or condition")
        feats = torch.randn(coords.shape[0], flow.in_channels, generator=generator) if noise is None else noise
        feats = feats.to(self.device)
        noise = SparseTensor(feats, coords.to(self.device), batch_size=num_samples)
        slat = self._run_sampler("slat_sampler", flow, noise, cond, sampler_params, progress, views)
        norm = self.folder.slat_normalization()
        return slat * norm["std"][None].to(self.device) + norm["mean"][None].to(self.device)

    @torch.no_grad()
    def decode(self, slat: SparseTensor, formats: Sequence[str] = FORMATS) -> Dict[str, list]:
        """Decode only the formats asked for (each a list with one item per sample)."""
        unknown = [f for f in formats if f not in FORMATS]
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}; allowed: {', '.join(FORMATS)}")
        return {f: self.folder.model(_DECODER_KEYS[f])(slat) for f in formats}

    @torch.no_grad()
    def generate(self, cond: dict, seed: int = 42, num_samples: int = 1, formats: Sequence[str] = FORMATS,
                 structure_params: Optional[dict] = None, slat_params: Optional[dict] = None,
                 progress: Optional[ProgressCallback] = None, views: Optional[dict] = None) -> GenerationResult:
        """Structure, SLat and the decoded formats from one condition and seed."""
        generator = torch.Generator().manual_seed(seed)
        timings: Dict[str, float] = {}
        with stage_timer(timings, "structure", self.device):
            coords, latent = self.sample_sparse_structure(cond, generator, num_samples, structure_params, progress,
                                                          views, return_latent=True)
        with stage_timer(timings, "latent", self.device):
            slat = self.sample_slat(cond, coords, generator, slat_params, progress, views, num_samples)
        decoded = {}
        for f in formats:
            with stage_timer(timings, f"decode_{f}", self.device):
                decoded.update(self.decode(slat, [f]))
        return GenerationResult(coords=coords, slat=slat, decoded=decoded, timings=timings, structure_latent=latent)


def views_options(mode: Optional[str], weights: Optional[List[float]] = None) -> Optional[dict]:
    """Sampler options for a multi-view condition (None for a single view)."""
    return None if mode is None else {"views_mode": mode, "view_weights": weights}
