"""The generation API: how a condition becomes an asset, in one place for the CLI, the nodes and editing.

Stages and what flows between them:

    condition {'cond', 'neg_cond'}  --sample_structure-->  Structure  --sample_latents-->  SLat
    (SparseTensor, denormalised)  --decode-->  {format: [one item per sample]}

A structure can also come from a mesh (``structure_from_mesh``, ``structure_from_mesh_file``) or
from stored voxels (``structure_from_voxels``). ``Noise`` owns the official noise order: one CPU generator seeded with
the seed draws the structure noise ``randn(num_samples, C, R, R, R)`` first, then the latent noise
``randn(N_voxels, C)``; seed N therefore gives the official asset for seed N, whether the two stages
run in one call (``generate``) or in two (the nodes: ``Noise.for_latents``).
"""
from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import torch

from ..sampling import FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler
from ..sparse import SparseTensor
from ..validation import check_seed
from .memory import working_memory
from .model_folder import ModelFolder, ModelFolderError

__all__ = ["TrellisPipeline", "GenerationResult", "Structure", "Noise", "structure_from_voxels", "structure_from_mesh",
           "structure_from_mesh_file", "FORMATS", "SAMPLER_CLASSES", "stage_timer", "views_options"]

FORMATS = ("gaussian", "radiance_field", "mesh")
SAMPLER_CLASSES = {cls.__name__: cls for cls in
                   (FlowEulerSampler, FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler)}
_DECODER_KEYS = {"gaussian": "slat_decoder_gs", "radiance_field": "slat_decoder_rf", "mesh": "slat_decoder_mesh"}
# Called with (stage, step, steps) after every sampler step; raise to interrupt.
ProgressCallback = Callable[[str, int, int], None]


class Noise:
    """The noise of one seed, drawn in the official order from one CPU generator.

    Args:
        seed: an integer in [0, 2^64).
    """

    def __init__(self, seed: int):
        self.seed = check_seed(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._given: Dict[str, torch.Tensor] = {}

    @classmethod
    def for_latents(cls, seed: int, structure: "Structure") -> "Noise":
        """The noise the latent stage draws on ``structure`` with ``seed``: after the structure noise
        when the structure was sampled (``structure.noise_shape``), so that the same seed in both
        stages gives the single-call (official) result."""
        noise = cls(seed)
        if structure.noise_shape is not None:
            noise.structure(structure.noise_shape)
        return noise

    @classmethod
    def given(cls, structure: Optional[torch.Tensor] = None, latents: Optional[torch.Tensor] = None) -> "Noise":
        """Noise whose draws return these tensors (a reference run's noise), checked for shape."""
        noise = cls(0)
        noise._given = {k: v for k, v in (("structure", structure), ("latents", latents)) if v is not None}
        return noise

    def _draw(self, kind: str, shape: Tuple[int, ...]) -> torch.Tensor:
        if kind in self._given:
            given = self._given[kind]
            if tuple(given.shape) != tuple(shape):
                raise ValueError(f"given {kind} noise has shape {list(given.shape)}, the stage needs {list(shape)}")
            return given
        return torch.randn(shape, generator=self.generator)

    def structure(self, shape: Sequence[int]) -> torch.Tensor:
        """The structure noise, float32 [num_samples, C, R, R, R] (CPU)."""
        return self._draw("structure", tuple(int(s) for s in shape))

    def latents(self, rows: int, channels: int) -> torch.Tensor:
        """The latent noise, float32 [rows, channels] (CPU), one row per voxel of every sample."""
        return self._draw("latents", (int(rows), int(channels)))


@dataclass
class Structure:
    """Occupied voxels of ``num_samples`` assets on the SLat grid.

    coords: int32 [M, 4] (batch, x, y, z), x, y, z in [0, resolution), TRELLIS frame (Z up).
    resolution: the grid (64 for the released models).
    noise_shape: the structure noise that was drawn before the latent noise (None for a structure
        that was not sampled, e.g. from a mesh); see ``Noise.for_latents``.
    latent: the dense structure latent [num_samples, C, r, r, r] it was decoded from, when it was
        sampled (edits reuse it instead of encoding the structure).
    """
    coords: torch.Tensor
    num_samples: int
    resolution: int
    noise_shape: Optional[Tuple[int, ...]] = None
    latent: Optional[torch.Tensor] = None

    def cpu(self) -> "Structure":
        return Structure(self.coords.cpu(), self.num_samples, self.resolution, self.noise_shape,
                         None if self.latent is None else self.latent.float().cpu())


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


def views_options(mode: Optional[str], weights: Optional[List[float]] = None) -> Optional[dict]:
    """Sampler options for a multi-view condition (None for a single view)."""
    return None if mode is None else {"views_mode": mode, "view_weights": weights}


def structure_from_voxels(xyz: torch.Tensor, resolution: int, num_samples: int = 1) -> Structure:
    """A structure of the voxels ``xyz`` (int [N, 3] on the R = ``resolution`` grid), repeated for
    each sample (a variant of several samples regenerates the latents of each copy)."""
    if xyz.dim() != 2 or xyz.shape[1] != 3 or xyz.shape[0] == 0:
        raise ValueError(f"a structure needs non-empty int voxel coords [N, 3], got {list(xyz.shape)}")
    if int(xyz.min()) < 0 or int(xyz.max()) >= resolution:
        raise ValueError(f"structure voxel coords must be in [0, {resolution})")
    n = xyz.shape[0]
    batch = torch.arange(num_samples, dtype=torch.int32).repeat_interleave(n)[:, None]
    coords = torch.cat([batch, xyz.int().cpu().repeat(num_samples, 1)], dim=1)
    return Structure(coords, int(num_samples), int(resolution))


def structure_from_mesh(vertices: torch.Tensor, faces: torch.Tensor, resolution: int, frame: str = "trellis",
                        num_samples: int = 1) -> Structure:
    """The surface voxels of a mesh (vertices [V, 3] in ``frame``, e.g. 'trellis' (Z up) or 'gltf'
    (Y up); fitted into the unit cube) on the R = ``resolution`` grid, as the official ``voxelize``."""
    from ..frames import convert
    from .voxelize import voxelize_mesh
    vertices = convert(torch.as_tensor(vertices).double(), frame, "trellis")
    xyz = voxelize_mesh(vertices, torch.as_tensor(faces), resolution=resolution)
    if xyz.shape[0] == 0:
        raise ValueError("mesh: no voxel is occupied (empty or degenerate mesh)")
    return structure_from_voxels(xyz, resolution, num_samples)


def structure_from_mesh_file(path: Union[str, Path], resolution: int, num_samples: int = 1) -> Structure:
    """``structure_from_mesh`` of a mesh file, its up axis by format (``frames.mesh_file_frame``)."""
    from ..frames import mesh_file_frame
    from ..readers import load_mesh
    return structure_from_mesh(*load_mesh(path), resolution, mesh_file_frame(path), num_samples)


class TrellisPipeline:
    """Runs a model folder given ready-made conditions: the stage functions.

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

    @property
    def resolution(self) -> int:
        """The structure grid R (64 for the released models)."""
        return self.folder.resolution

    def sampler_params(self, stage: str, overrides: Optional[dict] = None) -> dict:
        """The released sampler parameters of ``stage`` with ``overrides`` (None values ignored)."""
        params = dict(self.folder.sampler_config(stage).get("params", {}))
        params.update({k: v for k, v in (overrides or {}).items() if v is not None})
        return params

    def sampler(self, stage: str):
        """The flow sampler pipeline.json names for ``stage`` ('sparse_structure_sampler' or 'slat_sampler')."""
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
        return self.sampler(stage).sample(model, noise, **cond, **params, **(views or {}), callback=callback).samples

    def working_memory(self, stage: str, voxels: int = 0, samples: int = 1, images: int = 1) -> int:
        """Bytes ``stage`` (condition, structure, structure_encoder, latent or a format) needs on a
        GPU beyond its weights, for ``voxels`` occupied voxels (latent, decoders), ``samples``
        (structure) and ``images`` (condition), with this pipeline's CFG batching."""
        rows = 2 if self.batch_cfg else 1
        units = {"condition": images, "structure": samples * rows, "structure_encoder": samples,
                 "latent": voxels * rows}.get(stage, voxels)
        return working_memory(stage, units)

    def latent_statistics(self) -> Tuple[torch.Tensor, torch.Tensor]:
        """(mean, std), each float32 [1, C] on the device: SLat = normalised SLat * std + mean."""
        norm = self.folder.slat_normalization()
        return norm["mean"][None].to(self.device), norm["std"][None].to(self.device)

    @torch.no_grad()
    def sample_structure(self, cond: dict, noise: Noise, num_samples: int = 1, params: Optional[dict] = None,
                         progress: Optional[ProgressCallback] = None, views: Optional[dict] = None) -> Structure:
        """Stage 1: ``cond`` = {'cond': [1 or V, L, C], 'neg_cond': ...} -> the occupied voxels
        (coords on the device) and the dense latent they were decoded from."""
        flow = self.folder.model("sparse_structure_flow_model")
        shape = (int(num_samples), flow.in_channels) + (flow.resolution,) * 3
        x = noise.structure(shape).to(self.device)
        latent = self._run_sampler("sparse_structure_sampler", flow, x, cond, params, progress, views)
        logits = self.folder.model("sparse_structure_decoder")(latent)
        coords = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
        # the grid the decoder made (the folder's SLat grid in a complete folder; a training state
        # may have no SLat flow to read that from)
        return Structure(coords, int(num_samples), int(logits.shape[-1]), noise_shape=shape, latent=latent)

    @torch.no_grad()
    def sample_latents(self, cond: dict, structure: Structure, noise: Noise, params: Optional[dict] = None,
                       progress: Optional[ProgressCallback] = None, views: Optional[dict] = None) -> SparseTensor:
        """Stage 2 on ``structure``: the SLat, denormalised with the folder's ``slat_normalization``."""
        flow = self.folder.model("slat_flow_model")
        coords = structure.coords
        if coords.shape[0] == 0:
            raise ValueError("the sparse structure is empty (no voxel decoded as occupied): nothing to generate; "
                             "try another seed or condition")
        if int(coords[:, 1:].max()) >= flow.resolution or int(coords[:, 1:].min()) < 0:
            raise ValueError(f"structure coords must lie in [0, {flow.resolution}) (the model's latent grid)")
        feats = noise.latents(coords.shape[0], flow.in_channels).to(self.device)
        x = SparseTensor(feats, coords.to(self.device), batch_size=structure.num_samples)
        slat = self._run_sampler("slat_sampler", flow, x, cond, params, progress, views)
        mean, std = self.latent_statistics()
        return slat * std + mean

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
        noise = Noise(seed)
        timings: Dict[str, float] = {}
        with stage_timer(timings, "structure", self.device):
            structure = self.sample_structure(cond, noise, num_samples, structure_params, progress, views)
        with stage_timer(timings, "latent", self.device):
            slat = self.sample_latents(cond, structure, noise, slat_params, progress, views)
        decoded = {}
        for f in formats:
            with stage_timer(timings, f"decode_{f}", self.device):
                decoded.update(self.decode(slat, [f]))
        return GenerationResult(coords=structure.coords, slat=slat, decoded=decoded, timings=timings,
                                structure_latent=structure.latent)

    @torch.no_grad()
    def variant(self, cond: dict, structure: Structure, seed: int = 42, formats: Sequence[str] = FORMATS,
                slat_params: Optional[dict] = None, progress: Optional[ProgressCallback] = None) -> GenerationResult:
        """Official ``run_variant``: stage 2 only, on a given structure (e.g. ``structure_from_mesh``)."""
        timings: Dict[str, float] = {}
        with stage_timer(timings, "latent", self.device):
            slat = self.sample_latents(cond, structure, Noise.for_latents(seed, structure), slat_params, progress)
        with stage_timer(timings, "decode", self.device):
            decoded = self.decode(slat, formats)
        return GenerationResult(coords=slat.coords, slat=slat, decoded=decoded, timings=timings)
