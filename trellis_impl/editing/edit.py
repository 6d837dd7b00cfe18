"""Edits of an existing asset (its structure ``coords`` and SLat) with a TrellisPipeline.

* ``detail_variation``: same structure, new latents from a new condition; ``strength`` < 1 starts
  from the original SLat noised to t = strength (SDEdit); ``region`` regenerates only the voxels
  inside it, the others being replaced after every step by the original noised to that step's time
  (RePaint) and set to the original exactly at the end.
* ``region_edit``: stage 1 regenerates the dense structure latent in the region's latent cells
  (outside: the original latent, noised along the flow (repaint) or its Euler-inverted trajectory
  (inversion)); the decoded voxels inside the region replace (or are added to, or for 'delete'
  nothing replaces) the original voxels there, outside the original voxels stay. Stage 2 does the
  same on the SLat: kept voxels keep their latents exactly, the others are generated.

Cost: at most one generation at the same step counts (stage-1 and stage-2 flows once per step,
plus the structure encoder when the asset has no dense structure latent); method 'inversion' adds
one inversion pass per stage (as many steps again, one unguided forward each) unless the asset's
``invert_asset`` result is given, which is computed once for any number of edits. 'delete'
samples nothing.
Everything is deterministic per seed (``Noise``: structure noise first, SLat noise second).
Only single assets (batch index 0) are supported.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Optional

import torch

from ..pipelines.generation import Noise, ProgressCallback, TrellisPipeline, stage_timer
from ..sampling.flow_euler import InversionOutput, noised
from ..sparse import SparseTensor
from .region import check_region, coords_in_region, latent_region

__all__ = ["EditResult", "AssetInversion", "invert_asset", "detail_variation", "region_edit", "encode_structure",
           "EDIT_MODES", "EDIT_METHODS"]

EDIT_MODES = ("replace", "delete", "add")
EDIT_METHODS = ("repaint", "inversion")


@dataclass
class EditResult:
    """coords: int32 [N, 4] (batch 0, x, y, z); slat: the denormalised SLat on coords (None when
    not asked for); regenerated: bool [N], voxels whose latents were generated anew (the others
    keep the original's exactly); added: bool [N], voxels not in the original structure;
    removed: int32 [M, 4], original voxels no longer there; structure_latent: the edited dense
    structure latent (region_edit with sampling only)."""
    coords: torch.Tensor
    slat: Optional[SparseTensor]
    regenerated: torch.Tensor
    added: torch.Tensor
    removed: torch.Tensor
    structure_latent: Optional[torch.Tensor] = None
    timings: Dict[str, float] = field(default_factory=dict)


@dataclass
class AssetInversion:
    """An asset's Euler-inverted trajectories (``invert_asset``): ``structure`` for its dense
    structure latent, ``slat`` for its normalised SLat (None without one), its rows in the order of
    ``coords`` (int32 [N, 4], CPU: the inverted structure, which an edit using them must share);
    ``params`` the schedule they follow ({'steps', 'rescale_t'} per stage), which the edit must
    share too."""
    structure: InversionOutput
    slat: Optional[InversionOutput]
    params: Dict[str, dict]
    coords: torch.Tensor


def _xyz(coords: torch.Tensor, resolution: int, what: str = "coords") -> torch.Tensor:
    """[N, 4] (batch 0) or [N, 3] -> long [N, 3] on CPU, checked."""
    if not isinstance(coords, torch.Tensor) or coords.dim() != 2 or coords.shape[1] not in (3, 4):
        raise ValueError(f"{what} must be int [N, 4] (batch, x, y, z) or [N, 3]")
    coords = coords.detach().cpu().long()
    if coords.shape[1] == 4:
        if coords.shape[0] and bool((coords[:, 0] != 0).any()):
            raise ValueError(f"{what}: edits take one asset (batch index 0 only)")
        coords = coords[:, 1:]
    if coords.shape[0] == 0:
        raise ValueError(f"{what} is empty: no voxel to edit")
    if int(coords.min()) < 0 or int(coords.max()) >= resolution:
        raise ValueError(f"{what} must lie in [0, {resolution}) (the structure grid)")
    return coords


def _keys(xyz: torch.Tensor, resolution: int) -> torch.Tensor:
    return (xyz[:, 0] * resolution + xyz[:, 1]) * resolution + xyz[:, 2]


def _lookup(keys: torch.Tensor, table: torch.Tensor):
    """For each key: (found, index into ``table``)."""
    order = torch.argsort(table)
    sorted_table = table[order]
    pos = torch.searchsorted(sorted_table, keys).clamp(max=max(len(table) - 1, 0))
    found = sorted_table[pos] == keys if len(table) else torch.zeros_like(keys, dtype=torch.bool)
    return found, order[pos]


def _grid(xyz: torch.Tensor, resolution: int) -> torch.Tensor:
    grid = torch.zeros(resolution, resolution, resolution, dtype=torch.bool, device=xyz.device)
    grid[xyz[:, 0], xyz[:, 1], xyz[:, 2]] = True
    return grid


def _full(xyz: torch.Tensor) -> torch.Tensor:
    return torch.cat([torch.zeros(xyz.shape[0], 1, dtype=torch.long, device=xyz.device), xyz], 1).int()


def _cond_on(cond: dict, device) -> dict:
    return {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in cond.items()}


@torch.no_grad()
def encode_structure(pipeline: TrellisPipeline, coords: torch.Tensor) -> torch.Tensor:
    """The dense structure latent [1, C, r, r, r] of a structure: the sparse-structure encoder
    (``folder.model('sparse_structure_encoder')``) on the 0/1 occupancy grid, posterior mean."""
    res = pipeline.resolution
    occupancy = _grid(_xyz(coords, res), res)[None, None].float().to(pipeline.device)
    return pipeline.folder.model("sparse_structure_encoder")(occupancy, sample_posterior=False).float()


def _slat_feats_on(slat: SparseTensor, xyz: torch.Tensor, resolution: int) -> torch.Tensor:
    """The SLat's features in the order of ``xyz`` (ValueError where a voxel has none)."""
    slat_xyz = _xyz(slat.coords, resolution, "original_slat.coords").to(xyz.device)
    found, index = _lookup(_keys(xyz, resolution), _keys(slat_xyz, resolution))
    if not bool(found.all()):
        raise ValueError(f"original_slat has no latent for {int((~found).sum())} voxel(s) of the structure; "
                         "pass the SLat generated on these coords")
    return slat.feats[index.to(slat.feats.device)]


class _Stage:
    """One flow stage of the pipeline with the edit's sampler options."""

    def __init__(self, pipeline: TrellisPipeline, stage: str, model_key: str, overrides: Optional[dict],
                 progress: Optional[ProgressCallback]):
        self.pipeline, self.stage = pipeline, stage
        self.model = pipeline.folder.model(model_key)
        self.sampler = pipeline.sampler(stage)
        self.params = pipeline.sampler_params(stage, overrides)
        self.progress = progress

    @property
    def sigma_min(self) -> float:
        return self.sampler.sigma_min

    def sample(self, x, cond: dict, t_start: float = 1.0, hook=None):
        callback = None if self.progress is None else (lambda i, n, _: self.progress(self.stage, i + 1, n))
        model = self.pipeline.folder.activate(self.model)  # another model may have run since (low-VRAM mode)
        return self.sampler.sample(model, x, **cond, **self.params, t_start=t_start, step_hook=hook,
                                   callback=callback).samples

    def invert(self, x0, cond: dict):
        """Euler inversion under the conditional velocity alone (no CFG: guided inversion drifts from
        the original's path, and one forward per step instead of a pair halves its cost)."""
        params = {k: v for k, v in self.params.items() if k not in ("cfg_strength", "cfg_interval")}
        stage = f"{self.stage}:inversion"
        callback = None if self.progress is None else (lambda i, n, _: self.progress(stage, i + 1, n))
        return self.sampler.invert(self.pipeline.folder.activate(self.model), x0, cond=cond["cond"], neg_cond=None,
                                   callback=callback, **params)


def _hook(known: torch.Tensor, known_at: Callable[[float], torch.Tensor]):
    """RePaint step hook: after each step the known entries become ``known_at(t_prev)``."""
    def hook(i, t, t_prev, x):
        if isinstance(x, SparseTensor):
            return x.replace(torch.where(known, known_at(t_prev), x.feats))
        return torch.where(known, known_at(t_prev), x)
    return hook


def _repaint_known(x0: torch.Tensor, eps: torch.Tensor, sigma_min: float):
    return lambda t: x0 if t == 0 else noised(x0, eps, t, sigma_min)


def _check_choice(value, allowed, name):
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


@torch.no_grad()
def detail_variation(pipeline: TrellisPipeline, cond: dict, coords: torch.Tensor,
                     slat: Optional[SparseTensor] = None, strength: float = 1.0,
                     region: Optional[torch.Tensor] = None, seed: int = 42, params: Optional[dict] = None,
                     progress: Optional[ProgressCallback] = None) -> EditResult:
    """New latents on the same structure (coords returned unchanged) from ``cond``.

    Args:
        cond: {'cond': [1, L, C], 'neg_cond': ...} (the pipeline's ``get_cond``).
        coords: the structure, int [N, 4] (batch 0) or [N, 3].
        slat: the original SLat (denormalised); needed for strength < 1 or a region.
        strength: flow time to start from (1: from noise, a plain variant; t < 1: the original
            latents noised to t, only the schedule's steps below t run; 0: the original back).
        region: bool [R, R, R]: only voxels inside get new latents, the others keep the original's.
        params: overrides of the SLat sampler parameters (steps, cfg_strength, ...).
    """
    if not 0.0 <= float(strength) <= 1.0:
        raise ValueError(f"strength must be in [0, 1], got {strength}")
    res = pipeline.resolution
    xyz = _xyz(coords, res)
    if slat is None and (strength < 1.0 or region is not None):
        raise ValueError("strength < 1 and region need the original SLat (slat=...); a structure without one "
                         "(e.g. from a mesh) only supports a full variation (strength=1.0, region=None)")
    device = pipeline.device
    timings: Dict[str, float] = {}
    stage = _Stage(pipeline, "slat_sampler", "slat_flow_model", params, progress)
    mean, std = pipeline.latent_statistics()
    eps = Noise(seed).latents(xyz.shape[0], stage.model.in_channels).to(device)
    full = (_full(xyz) if coords.shape[1] == 3 else coords.detach().cpu().int()).to(device)
    inside = torch.ones(xyz.shape[0], dtype=torch.bool)
    original = s0 = None
    if slat is not None:
        original = _slat_feats_on(slat, xyz, res).to(device)
        s0 = (original - mean) / std
    if region is not None:
        inside = coords_in_region(_full(xyz), check_region(region, res)).cpu()
        if not bool(inside.any()):
            raise ValueError("the region holds no voxel of the structure: nothing to regenerate")
    known = (~inside).to(device)[:, None]
    x = eps if strength == 1.0 else noised(s0, eps, float(strength), stage.sigma_min)
    hook = None
    if region is not None:
        known_at = _repaint_known(s0, eps, stage.sigma_min)
        x = torch.where(known, known_at(float(strength)), x)
        hook = _hook(known, known_at)
    with stage_timer(timings, "latent", device):
        out = stage.sample(SparseTensor(x, full, batch_size=1), _cond_on(cond, device), float(strength), hook)
    feats = out.feats * std + mean
    if original is not None:
        feats = torch.where(known, original, feats)
    return EditResult(coords=full, slat=out.replace(feats), regenerated=inside.clone(),
                      added=torch.zeros(xyz.shape[0], dtype=torch.bool),
                      removed=torch.zeros(0, 4, dtype=torch.int32), timings=timings)


@torch.no_grad()
def region_edit(pipeline: TrellisPipeline, cond: dict, original_coords: torch.Tensor,
                original_slat: Optional[SparseTensor], region: torch.Tensor, mode: str = "replace",
                method: str = "repaint", seed: int = 42, structure_params: Optional[dict] = None,
                slat_params: Optional[dict] = None, structure_latent: Optional[torch.Tensor] = None,
                source_cond: Optional[dict] = None, with_slat: bool = True,
                progress: Optional[ProgressCallback] = None,
                inversion: Optional[AssetInversion] = None) -> EditResult:
    """Regenerate (or delete, or add to) the part of an asset inside ``region``.

    Args:
        cond: the edit's condition {'cond', 'neg_cond'}.
        original_coords: the structure, int [N, 4] (batch 0) or [N, 3].
        original_slat: its SLat (denormalised), or None (e.g. a structure from a mesh): then
            stage 2 generates the latents of the whole edited structure (nothing to keep).
        region: bool [R, R, R] (``box_region``, ``mesh_region``...).
        mode: 'replace' (the region's voxels are the new ones), 'add' (new voxels join the
            original ones, which keep their latents), 'delete' (the region becomes empty; nothing
            is sampled, the other voxels keep their latents).
        method: 'repaint' (outside = original noised to the step's time, same noise) or
            'inversion' (outside = the original's Euler-inverted trajectory under ``source_cond``,
            default ``cond``; one extra inversion pass per stage).
        structure_latent: the original's dense structure latent [1, C, r, r, r] (e.g.
            ``GenerationResult.structure_latent``); default: encode the structure.
        structure_params, slat_params: sampler overrides per stage.
        with_slat: False: stage 1 only (slat None, regenerated all False).
        inversion: for method 'inversion', the asset's trajectories from ``invert_asset`` (same
            schedule); computed here when None. Precomputing them once per asset makes each edit
            cost at most a generation (the inversion pass is then paid once, like an encoding).
    """
    _check_choice(mode, EDIT_MODES, "mode")
    _check_choice(method, EDIT_METHODS, "method")
    res = pipeline.resolution
    device = pipeline.device
    # the grid merges and lookups run where the models do: on a GPU, host threads would cost
    # more than the kernels (the edit's bookkeeping is timed in docs/gpu.md)
    xyz = _xyz(original_coords, res, "original_coords").to(device)
    region = check_region(region, res).to(device)
    cond = _cond_on(cond, device)
    edit = _Edit(pipeline, cond, cond if source_cond is None else _cond_on(source_cond, device), method,
                 Noise(seed), progress, {}, inversion, None, res, device)
    original_grid = _grid(xyz, res)
    if method == "inversion" and inversion is not None:
        edit.inverted = _xyz(inversion.coords, res, "inversion.coords").to(device)
        if len(edit.inverted) != len(xyz) or not torch.equal(_grid(edit.inverted, res), original_grid):
            raise ValueError("inversion: computed for another structure than original_coords; invert this asset "
                             "(invert_asset on the same coords)")

    if mode == "delete":
        grid, new_latent = original_grid & ~region, None
    else:
        new_latent, decoded = _edit_structure(edit, xyz, region, structure_params, structure_latent)
        grid = torch.where(region, decoded, original_grid) if mode == "replace" else original_grid | (region & decoded)

    # which voxels of the new structure keep their latents
    new_xyz = torch.argwhere(grid)
    if new_xyz.shape[0] == 0:
        raise ValueError("the edit leaves the structure empty (no voxel)")
    found, index = _lookup(_keys(new_xyz, res), _keys(xyz, res))
    inside = region[new_xyz[:, 0], new_xyz[:, 1], new_xyz[:, 2]]
    keep = found & ~inside if mode == "replace" else found.clone()
    if original_slat is None:
        keep = torch.zeros_like(keep)
    removed = xyz[~grid[xyz[:, 0], xyz[:, 1], xyz[:, 2]]]
    result = EditResult(coords=_full(new_xyz), slat=None, regenerated=torch.zeros(len(new_xyz), dtype=torch.bool),
                        added=(~found).cpu(), removed=_full(removed).cpu(), structure_latent=new_latent,
                        timings=edit.timings)
    if with_slat:
        result.regenerated = (~keep).cpu()
        result.slat = _edit_latents(edit, xyz, new_xyz, keep, index, original_slat, slat_params)
    return result


@dataclass
class _Edit:
    """What both stages of one region edit share."""
    pipeline: TrellisPipeline
    cond: dict
    source: dict  # the condition the asset is inverted under
    method: str
    noise: Noise  # stage 1's, then stage 2's
    progress: Optional[ProgressCallback]
    timings: Dict[str, float]
    inversion: Optional[AssetInversion]
    inverted: Optional[torch.Tensor]  # the inversion's voxels [N, 3]
    res: int
    device: torch.device


def _edit_structure(edit: _Edit, xyz: torch.Tensor, region: torch.Tensor, structure_params: Optional[dict],
                    structure_latent: Optional[torch.Tensor]):
    """Stage 1: the dense structure latent resampled inside the region, the outside kept (repaint
    or inversion). Returns (the new latent [1, C, r, r, r], its decoded occupancy bool [R, R, R])."""
    pipeline, device = edit.pipeline, edit.device
    with stage_timer(edit.timings, "structure", device):
        flow = pipeline.folder.model("sparse_structure_flow_model")
        stage = _Stage(pipeline, "sparse_structure_sampler", "sparse_structure_flow_model", structure_params,
                       edit.progress)
        r = int(flow.resolution)
        eps = edit.noise.structure((1, flow.in_channels, r, r, r)).to(device)
        z0 = encode_structure(pipeline, _full(xyz)) if structure_latent is None else structure_latent
        z0 = z0.float().to(device)
        if z0.shape != eps.shape:
            raise ValueError(f"structure_latent must be {list(eps.shape)}, got {list(z0.shape)}")
        known = (~latent_region(region, r))[None, None].expand_as(z0)
        if edit.method == "repaint":
            known_at = _repaint_known(z0, eps, stage.sigma_min)
        else:
            if edit.inversion is not None:
                _check_schedule(edit.inversion, "structure", stage)
            trajectory = edit.inversion.structure if edit.inversion is not None else stage.invert(z0, edit.source)
            known_at = trajectory.at
        x = torch.where(known, known_at(1.0), eps)
        new_latent = stage.sample(x, edit.cond, 1.0, _hook(known, known_at))
        decoded = pipeline.folder.model("sparse_structure_decoder")(new_latent)[0, 0] > 0
    return new_latent, decoded


def _edit_latents(edit: _Edit, xyz: torch.Tensor, new_xyz: torch.Tensor, keep: torch.Tensor, index: torch.Tensor,
                  original_slat: Optional[SparseTensor], slat_params: Optional[dict]) -> SparseTensor:
    """Stage 2: the SLat of the new structure: voxels with ``keep`` take the original latents
    (row ``index`` of the original), the others are sampled with the kept ones as the known part."""
    pipeline, device, res = edit.pipeline, edit.device, edit.res
    full = _full(new_xyz)
    mean, std = pipeline.latent_statistics()
    original = None if original_slat is None else _slat_feats_on(original_slat, xyz, res).to(device)
    if not bool((~keep).any()):
        return SparseTensor(original[index], full, batch_size=1)
    with stage_timer(edit.timings, "latent", device):
        stage = _Stage(pipeline, "slat_sampler", "slat_flow_model", slat_params, edit.progress)
        eps = edit.noise.latents(len(new_xyz), stage.model.in_channels).to(device)
        hook, x = None, eps
        if original is not None:
            known = keep[:, None]
            rows = index
            s0 = (original - mean) / std
            if edit.method == "repaint":
                known_at = _repaint_known(s0[rows], eps, stage.sigma_min)
            else:
                if edit.inversion is not None and edit.inversion.slat is not None:
                    _check_schedule(edit.inversion, "slat", stage)
                    trajectory = edit.inversion.slat
                    rows = _lookup(_keys(new_xyz, res), _keys(edit.inverted, res))[1]
                else:
                    trajectory = stage.invert(SparseTensor(s0, _full(xyz), batch_size=1), edit.source)

                def known_at(t, trajectory=trajectory, rows=rows):
                    return trajectory.at(t).feats[rows]
            x = torch.where(known, known_at(1.0), eps)
            hook = _hook(known, known_at)
        out = stage.sample(SparseTensor(x, full, batch_size=1), edit.cond, 1.0, hook)
        feats = out.feats * std + mean
        if original is not None:
            feats = torch.where(keep[:, None], original[index], feats)
    return out.replace(feats)


def _schedule(stage: "_Stage") -> dict:
    return {"steps": int(stage.params["steps"]), "rescale_t": float(stage.params["rescale_t"])}


def _check_schedule(inversion: AssetInversion, key: str, stage: "_Stage") -> None:
    if inversion.params.get(key) != _schedule(stage):
        raise ValueError(f"inversion: computed for the {key} schedule {inversion.params.get(key)}, but this edit uses "
                         f"{_schedule(stage)}; invert with the edit's steps and rescale_t")


@torch.no_grad()
def invert_asset(pipeline: TrellisPipeline, coords: torch.Tensor, slat: Optional[SparseTensor], source_cond: dict,
                 structure_latent: Optional[torch.Tensor] = None, structure_params: Optional[dict] = None,
                 slat_params: Optional[dict] = None, progress: Optional[ProgressCallback] = None) -> AssetInversion:
    """Euler-invert an asset once (its dense structure latent, encoded when not given, and its
    normalised SLat) under ``source_cond`` with the conditional velocity alone, for any number of
    ``region_edit(method='inversion', inversion=...)`` calls on the same structure with the same
    schedules. ``progress(stage, step, steps)`` is called after every inversion step."""
    res = pipeline.resolution
    xyz = _xyz(coords, res)
    device = pipeline.device
    source = _cond_on(source_cond, device)
    stage1 = _Stage(pipeline, "sparse_structure_sampler", "sparse_structure_flow_model", structure_params, progress)
    z0 = encode_structure(pipeline, _full(xyz)) if structure_latent is None else structure_latent
    structure = stage1.invert(z0.float().to(device), source)
    params = {"structure": _schedule(stage1)}
    slat_traj = None
    if slat is not None:
        stage2 = _Stage(pipeline, "slat_sampler", "slat_flow_model", slat_params, progress)
        mean, std = pipeline.latent_statistics()
        s0 = (_slat_feats_on(slat, xyz, res).to(device) - mean) / std
        slat_traj = stage2.invert(SparseTensor(s0, _full(xyz).to(device), batch_size=1), source)
        params["slat"] = _schedule(stage2)
    return AssetInversion(structure, slat_traj, params, _full(xyz))
