"""Output nodes (GLB, splats) and the turntable renderer."""
from __future__ import annotations

import math

import torch

from ..trellis_impl.export.glb_export import BAKE_MODES, PHASES, UNWRAP_METHODS, to_glb
from ..trellis_impl.export.splat_files import save_splat, save_spz
from ..trellis_impl.pipelines.memory import working_memory
from ..trellis_impl.render.turntable import MAX_SIZE, TURNTABLE_MODES, turntable
from . import host
from .generation import TrellisAsset, check_choice, choice_error
from .host import io
from .sockets import ASSET, FILE_3D_GLB, FILE_3D_SPLAT_ANY, MESH, SPLAT

SPLAT_FORMATS = ("ply", "spz", "splat")
ORIGINS = ("center", "base", "none")


def _check_asset(asset, node: str) -> TrellisAsset:
    if not isinstance(asset, TrellisAsset):
        raise ValueError(f"{node}: asset must come from TrellisDecode")
    return asset


def _prefix_input(default: str):
    return io.String.Input("filename_prefix", default=default,
                           tooltip="File name prefix under ComfyUI's output folder; may hold sub-folders "
                                   "('trellis/asset'), never '..' or an absolute path. Files are numbered and never "
                                   "overwritten.")


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class TrellisExportGLB(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, bake=None, unwrap=None, origin=None):
        return choice_error(bake=(bake, BAKE_MODES), unwrap=(unwrap, UNWRAP_METHODS), origin=(origin, ORIGINS))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisExportGLB", display_name="TRELLIS Export GLB", category="TRELLIS/export",
            is_output_node=True,
            inputs=[
                ASSET.Input("asset", tooltip="From TrellisDecode (needs mesh; gaussian for texture baking)."),
                _prefix_input("trellis/asset"),
                io.Float.Input("simplify", default=0.95, min=0.0, max=0.99, step=0.01,
                               tooltip="Fraction of faces removed (0.95 keeps 5%, the official default)."),
                io.Int.Input("texture_size", default=1024, min=512, max=4096, step=256,
                             tooltip="Texture side in texels."),
                io.Combo.Input("bake", options=list(BAKE_MODES), default="fast",
                               tooltip="fast: project Gaussian renders; opt: official optimisation (slow); "
                                       "vertex_colors: no texture; none: geometry only."),
                host.advanced(io.Int, "bake_steps", default=2500, min=1, max=10000,
                              tooltip="Optimisation steps of bake 'opt'."),
                host.advanced(io.Combo, "unwrap", options=list(UNWRAP_METHODS), default="fast",
                              tooltip="UV atlas: fast (built in) or xatlas (official, slower)."),
                io.Combo.Input("origin", options=list(ORIGINS), default="center",
                               tooltip="center: bounding-box centre at 0; base: lowest point at y = 0; none: "
                                       "TRELLIS's unit-cube position (lines up with splats and edit-region boxes)."),
                host.advanced(io.Boolean, "fill_holes", default=True,
                              tooltip="Remove interior faces and fill small holes (visibility clean-up)."),
            ],
            outputs=[host.output(MESH, "mesh", "Core MESH (glTF frame, Y up; textured where the host supports it)."),
                     host.output(FILE_3D_GLB, "glb_file", "Core File3D of the GLB (None on hosts without File3D)."),
                     host.output(io.String, "model_file", "Path of the GLB relative to output/ (connect to core "
                                                          "Preview3D).")])

    @classmethod
    def execute(cls, asset, filename_prefix="trellis/asset", simplify=0.95, texture_size=1024, bake="fast",
                bake_steps=2500, unwrap="fast", origin="center", fill_holes=True):
        asset = _check_asset(asset, "TrellisExportGLB")
        host.check_filename_prefix(filename_prefix)
        check_choice("unwrap", unwrap, UNWRAP_METHODS)  # the library names it unwrap_method
        meshes = asset.decoded.get("mesh")
        if not meshes:
            raise ValueError("TrellisExportGLB: the asset has no mesh; enable 'mesh' in TrellisDecode")
        gaussians = asset.decoded.get("gaussian")
        if gaussians is None and bake in ("fast", "opt"):
            raise ValueError(f"TrellisExportGLB: bake {bake!r} needs the Gaussians; enable 'gaussian' in "
                             "TrellisDecode or use bake 'vertex_colors' / 'none'")
        n = len(meshes)
        host.free_for(working_memory("glb_export", int(texture_size) ** 2))
        unit = 100
        total = n * len(PHASES) * unit
        pbar = host.progress_bar(total)
        results, files = [], []
        for i, mesh in enumerate(meshes):
            if not getattr(mesh, "success", True):
                raise ValueError(f"TrellisExportGLB: the decoded mesh of sample {i} is empty")

            def progress(phase, done, total_steps, i=i):
                host.check_interrupt()
                k = PHASES.index(phase) if phase in PHASES else 0
                frac = done / total_steps if total_steps else 1.0
                pbar.update_absolute(int(((i * len(PHASES)) + k + frac) * unit), total)

            options = dict(simplify=float(simplify), texture_size=int(texture_size), bake=bake,
                           bake_steps=int(bake_steps), unwrap_method=unwrap, origin=origin,
                           fill_holes=bool(fill_holes), progress=progress)
            holder = {}

            def save(path, mesh=mesh, g=None if gaussians is None else gaussians[i]):
                holder["result"] = to_glb(path, mesh, g, **options)
            host.check_interrupt()
            info = host.save_new_output(filename_prefix, "glb", save)
            results.append(holder["result"])
            files.append(info)
        core_mesh = host.make_mesh([{"vertices": r.vertices, "faces": r.faces, **r.material()} for r in results])
        file3d = host.make_file3d(_read(files[0]["path"]), "glb")
        ui = [{"mesh": {k: f[k] for k in ("filename", "subfolder", "type")}, "splat": None} for f in files]
        return io.NodeOutput(core_mesh, file3d, files[0]["relative"], ui={"trellis_preview": ui})


class TrellisExportSplat(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, format=None):
        return choice_error(format=(format, SPLAT_FORMATS))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisExportSplat", display_name="TRELLIS Export Splat", category="TRELLIS/export",
            is_output_node=True,
            inputs=[
                ASSET.Input("asset", tooltip="From TrellisDecode (needs gaussian)."),
                _prefix_input("trellis/splat"),
                io.Combo.Input("format", options=list(SPLAT_FORMATS), default="ply",
                               tooltip="ply: official 3DGS PLY (full precision); spz: Niantic compressed; splat: "
                                       "antimatter15 web format."),
            ],
            outputs=[host.output(SPLAT, "splat", "Core SPLAT (3DGS frame, activated values; None on hosts without "
                                                 "SPLAT)."),
                     host.output(FILE_3D_SPLAT_ANY, "splat_file", "Core File3D of the written file (None on hosts "
                                                                  "without File3D)."),
                     host.output(io.String, "splat_path", "Path of the file relative to output/.")])

    @classmethod
    def execute(cls, asset, filename_prefix="trellis/splat", format="ply"):
        asset = _check_asset(asset, "TrellisExportSplat")
        host.check_filename_prefix(filename_prefix)
        check_choice("format", format, SPLAT_FORMATS)
        gaussians = asset.decoded.get("gaussian")
        if not gaussians:
            raise ValueError("TrellisExportSplat: the asset has no Gaussians; enable 'gaussian' in TrellisDecode")
        writers = {"ply": lambda g, p: g.save_ply(p), "spz": lambda g, p: save_spz(g, p),
                   "splat": lambda g, p: save_splat(g, p)}
        files = []
        for g in gaussians:
            host.check_interrupt()
            files.append(host.save_new_output(filename_prefix, format, lambda p, g=g: writers[format](g, p)))
        splat = host.make_splat(list(gaussians))
        file3d = host.make_file3d(_read(files[0]["path"]), format)
        ui = [{"mesh": None, "splat": {k: f[k] for k in ("filename", "subfolder", "type")}, "splat_format": format}
              for f in files]
        return io.NodeOutput(splat, file3d, files[0]["relative"], ui={"trellis_preview": ui})


class TrellisTurntable(io.ComfyNode):
    @classmethod
    def validate_inputs(cls, mode=None):
        return choice_error(mode=(mode, TURNTABLE_MODES))

    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="TrellisTurntable", display_name="TRELLIS Turntable", category="TRELLIS/render",
            inputs=[
                ASSET.Input("asset", tooltip="From TrellisDecode."),
                io.Int.Input("frames", default=36, min=1, max=720, tooltip="Number of views around the object."),
                io.Int.Input("resolution", default=512, min=16, max=MAX_SIZE, step=16,
                             tooltip="Square image side in pixels."),
                io.Combo.Input("mode", options=list(TURNTABLE_MODES), default="gaussian",
                               tooltip="gaussian: splat render; mesh_normals: normal map of the mesh; side_by_side: "
                                       "both."),
                host.advanced(io.Float, "pitch", default=14.3, min=-89.0, max=89.0, step=0.1,
                              tooltip="Camera elevation in degrees (official video: 0.25 rad = 14.3)."),
                host.advanced(io.Float, "radius", default=2.0, min=0.1, max=100.0, step=0.1,
                              tooltip="Camera distance from the centre (object fits a unit cube)."),
                host.advanced(io.Float, "fov", default=40.0, min=1.0, max=179.0, step=0.5,
                              tooltip="Vertical field of view in degrees."),
            ],
            outputs=[host.output(io.Image, "images", "Turntable frames [N, H, W, 3] (side_by_side: twice as wide); "
                                                     "samples one after another.")])

    @classmethod
    def execute(cls, asset, frames=36, resolution=512, mode="gaussian", pitch=14.3, radius=2.0, fov=40.0):
        asset = _check_asset(asset, "TrellisTurntable")
        gaussians = asset.decoded.get("gaussian") or [None] * asset.batch_size
        meshes = asset.decoded.get("mesh") or [None] * asset.batch_size
        total = asset.batch_size * int(frames)
        pbar = host.progress_bar(total)
        out = []
        for i in range(asset.batch_size):
            def frame_done(frame, _frames, i=i):  # Cancel is honoured after every frame
                host.check_interrupt()
                pbar.update_absolute(i * int(frames) + frame, total)
            host.check_interrupt()
            out.append(turntable(gaussians[i], meshes[i], frames=int(frames), size=int(resolution),
                                 pitch=math.radians(float(pitch)), radius=float(radius), fov_degrees=float(fov),
                                 mode=mode, progress=frame_done).cpu())
        return io.NodeOutput(torch.cat(out).float().clamp(0, 1).contiguous())


__all__ = ["TrellisExportGLB", "TrellisExportSplat", "TrellisTurntable"]
