"""Edit nodes: an edit region, region edits (delete / add / replace) and detail variation
(trellis_impl.editing). docs/editing.md describes the algorithms."""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import torch

from ..trellis_impl.editing import (EDIT_METHODS, EDIT_MODES, AssetInversion, detail_variation, edit_region,
                                    invert_asset, region_edit)
from ..trellis_impl.pipelines.generation import Structure
from . import host
from .host import io
from .model import ModelHandle
from .generation import (TrellisCond, TrellisSlat, _check_cond, _check_structure, _model_input, _params,
                         _sampler_inputs, check_choice, choice_error)
from .sockets import COND, INVERSION, MESH, REGION, SLAT, STRUCTURE


@dataclass
class TrellisRegion:
    """TRELLIS_V1_REGION: bool [R, R, R] voxels (TRELLIS x, y, z) and the boxes it was made of
    (glTF axes, for the preview widget)."""
    voxels: torch.Tensor
    boxes: List[dict]


def parse_boxes(text: str) -> List[List[float]]:
    """One box per line, six numbers ``xmin ymin zmin xmax ymax zmax`` (commas allowed), in the
    exported GLB's axes (Y up, front +Z) of the unit cube [-0.5, 0.5]^3; '#' starts a comment."""
    boxes = []
    for number, line in enumerate(str(text).splitlines(), start=1):
        line = line.split("#", 1)[0].replace(",", " ").strip()
        if not line:
            continue
        try:
            values = [float(v) for v in line.split()]
        except ValueError:
            raise ValueError(f"boxes line {number}: {line!r} is not six numbers") from None
        if len(values) != 6:
            raise ValueError(f"boxes line {number}: expected six numbers xmin ymin zmin xmax ymax zmax, "
                             f"got {len(values)}")
        boxes.append(values)
    return boxes


def _single(model: ModelHandle, structure: Structure, slat, node: str) -> None:
    _check_structure(model, structure, node)
    if structure.num_samples != 1 or (slat is not None and slat.batch_size != 1):
        raise ValueError("edits work on one asset: generate with num_samples = 1")


class TrellisEditRegion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisEditRegion", display_name="TRELLIS Edit Region", category="TRELLIS/edit",
            inputs=[
                _model_input(),
                io.String.Input("boxes", multiline=True, default="-0.5 0.1 -0.5 0.5 0.5 0.5",
                                tooltip="One box per line: xmin ymin zmin xmax ymax zmax in the exported GLB's axes "
                                        "(Y up, front +Z) of the asset's unit cube [-0.5, 0.5]^3."),
                io.Int.Input("border", default=0, min=0, max=16,
                             tooltip="Soft border: grow the region by this many voxels."),
                MESH.Input("mesh", optional=True,
                           tooltip="Instead of boxes: the inside of this closed mesh (glTF frame, unit cube "
                                   "coordinates) is the region (first batch item)."),
            ],
            outputs=[host.output(REGION, "region", "Voxels of the 64^3 grid to edit.")])

    @classmethod
    def execute(cls, model: ModelHandle, boxes="", border=0, mesh=None):
        resolution = model.folder.resolution
        if mesh is not None:
            items = host.mesh_items(mesh)
            if not items:
                raise ValueError("mesh: the MESH batch is empty")
            vertices, faces = items[0]
            voxels = edit_region(resolution, mesh=(vertices, faces), border=int(border))
            lo, hi = vertices.min(0).values.tolist(), vertices.max(0).values.tolist()
            return io.NodeOutput(TrellisRegion(voxels, [{"min": lo, "max": hi}]))
        parsed = parse_boxes(boxes)
        if not parsed:
            raise ValueError("boxes: give at least one box (xmin ymin zmin xmax ymax zmax), or link a mesh")
        voxels = edit_region(resolution, boxes=parsed, border=int(border))
        return io.NodeOutput(TrellisRegion(voxels, [{"min": b[:3], "max": b[3:]} for b in parsed]))


class TrellisRegionEdit(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, mode=None, method=None):
        return choice_error(mode=(mode, EDIT_MODES), method=(method, EDIT_METHODS))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisRegionEdit", display_name="TRELLIS Region Edit (delete / add / replace)",
            category="TRELLIS/edit",
            description="Regenerates the part of an asset inside a region from a new condition (replace), grows new "
                        "structure in it (add) or empties it (delete); everything outside stays the original's.",
            inputs=[
                _model_input(),
                COND.Input("cond", tooltip="What the region should become."),
                STRUCTURE.Input("structure", tooltip="The original asset's structure."),
                REGION.Input("region", tooltip="From TrellisEditRegion."),
                io.Combo.Input("mode", options=list(EDIT_MODES), default="replace",
                               tooltip="replace: new structure and latents inside; delete: the region becomes empty; "
                                       "add: new structure grows inside, the original's voxels all stay."),
                io.Combo.Input("method", options=list(EDIT_METHODS), default="repaint",
                               tooltip="repaint: the outside is the original noised to each step's time; inversion: "
                                       "the original's Euler-inverted trajectory (preserves the outside better, one "
                                       "extra pass per stage)."),
                *_sampler_inputs(25, 5.0),
                SLAT.Input("slat", optional=True,
                           tooltip="The original's latents (kept outside the region). Without them (a structure "
                                   "from a mesh) the whole asset gets new latents."),
                COND.Input("source_cond", optional=True,
                           tooltip="The original's condition (for method inversion; default: cond)."),
                INVERSION.Input("inversion", optional=True,
                                tooltip="For method inversion: the asset inverted once by TrellisInvertAsset (same "
                                        "steps and rescale_t), so repeated edits skip the inversion pass."),
            ],
            outputs=[host.output(STRUCTURE, "structure", "The edited structure: the original's voxels outside the "
                                                         "region, new ones inside."),
                     host.output(SLAT, "slat", "The edited latents: the original's outside the region (exactly), new "
                                               "ones inside.")])

    @classmethod
    def execute(cls, model: ModelHandle, cond: TrellisCond, structure: Structure, region: TrellisRegion,
                mode="replace", method="repaint", seed=0, steps=25, cfg=5.0, cfg_interval_start=0.5,
                cfg_interval_end=1.0, rescale_t=3.0, slat=None, source_cond=None, inversion=None):
        _check_cond(model, cond, "TrellisRegionEdit")
        check_choice("mode", mode, EDIT_MODES)
        check_choice("method", method, EDIT_METHODS)
        if inversion is not None and not isinstance(inversion, AssetInversion):
            raise ValueError("TrellisRegionEdit: inversion must come from TrellisInvertAsset")
        if source_cond is not None:
            _check_cond(model, source_cond, "TrellisRegionEdit")
        _single(model, structure, slat, "TrellisRegionEdit")
        params = _params(steps, cfg, cfg_interval_start, cfg_interval_end, rescale_t)
        host.check_interrupt()
        pipeline = model.prepare(["structure", "latent", "structure_encoder"] if structure.latent is None
                                 else ["structure", "latent"], voxels=structure.coords.shape[0])
        device = pipeline.device
        result = region_edit(
            pipeline, cond.on(device), structure.coords.to(device), None if slat is None else slat.slat,
            region.voxels, mode=mode, method=method, seed=int(seed), structure_params=params, slat_params=params,
            structure_latent=structure.latent, source_cond=None if source_cond is None else source_cond.on(device),
            progress=host.step_callback(2 * int(steps)), inversion=inversion)
        edited = Structure(result.coords.cpu(), 1, structure.resolution,
                           latent=None if result.structure_latent is None else result.structure_latent.cpu())
        return io.NodeOutput(edited, TrellisSlat(result.slat, 1))


class TrellisInvertAsset(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisInvertAsset", display_name="TRELLIS Invert Asset (for inversion edits)",
            category="TRELLIS/edit",
            description="Inverts an asset along the flows once (structure latent and latents, under its own "
                        "condition); region edits with method inversion then reuse it instead of inverting every "
                        "time.",
            inputs=[
                _model_input(),
                COND.Input("source_cond", tooltip="The condition the asset was generated from."),
                STRUCTURE.Input("structure", tooltip="The asset's structure."),
                io.Int.Input("steps", default=25, min=1, max=500,
                             tooltip="Must equal the steps of the edits that use this inversion."),
                host.advanced(io.Float, "rescale_t", default=3.0, min=0.1, max=20.0, step=0.1,
                              tooltip="Must equal the edits' rescale_t."),
                SLAT.Input("slat", optional=True, tooltip="The asset's latents (inverted too)."),
            ],
            outputs=[host.output(INVERSION, "inversion", "The asset's Euler-inverted trajectories, for "
                                                         "TrellisRegionEdit with method inversion.")])

    @classmethod
    def execute(cls, model: ModelHandle, source_cond: TrellisCond, structure: Structure, steps=25,
                rescale_t=3.0, slat=None):
        _check_cond(model, source_cond, "TrellisInvertAsset")
        _single(model, structure, slat, "TrellisInvertAsset")
        host.check_interrupt()
        pipeline = model.prepare(["structure", "latent", "structure_encoder"] if structure.latent is None
                                 else ["structure", "latent"], voxels=structure.coords.shape[0])
        device = pipeline.device
        schedule = {"steps": int(steps), "rescale_t": float(rescale_t)}
        return io.NodeOutput(invert_asset(pipeline, structure.coords.to(device), None if slat is None else slat.slat,
                                          source_cond.on(device), structure_latent=structure.latent,
                                          structure_params=schedule, slat_params=schedule,
                                          progress=host.step_callback(2 * int(steps))))


class TrellisDetailVariation(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisDetailVariation", display_name="TRELLIS Detail Variation", category="TRELLIS/edit",
            description="Keeps an asset's structure and regenerates its latents (its look) from a new condition, for "
                        "the whole asset or inside a region; strength < 1 starts from the original's latents.",
            inputs=[
                _model_input(),
                COND.Input("cond", tooltip="The new look."),
                STRUCTURE.Input("structure", tooltip="The asset's structure (kept exactly)."),
                io.Float.Input("strength", default=1.0, min=0.0, max=1.0, step=0.01,
                               tooltip="1: latents from noise; below 1: the original's latents noised to this flow "
                                       "time (needs slat); 0 returns the original."),
                *_sampler_inputs(25, 5.0),
                SLAT.Input("slat", optional=True,
                           tooltip="The original's latents (for strength < 1 or a region)."),
                REGION.Input("region", optional=True,
                             tooltip="Only voxels inside get new latents (needs slat)."),
            ],
            outputs=[host.output(SLAT, "slat", "New latents on the same structure.")])

    @classmethod
    def execute(cls, model: ModelHandle, cond: TrellisCond, structure: Structure, strength=1.0, seed=0,
                steps=25, cfg=5.0, cfg_interval_start=0.5, cfg_interval_end=1.0, rescale_t=3.0, slat=None,
                region=None):
        _check_cond(model, cond, "TrellisDetailVariation")
        _single(model, structure, slat, "TrellisDetailVariation")
        params = _params(steps, cfg, cfg_interval_start, cfg_interval_end, rescale_t)
        host.check_interrupt()
        pipeline = model.prepare(["latent"], voxels=structure.coords.shape[0])
        device = pipeline.device
        result = detail_variation(pipeline, cond.on(device), structure.coords.to(device),
                                  None if slat is None else slat.slat, strength=float(strength),
                                  region=None if region is None else region.voxels, seed=int(seed), params=params,
                                  progress=host.step_callback(int(steps)))
        return io.NodeOutput(TrellisSlat(result.slat, 1))
