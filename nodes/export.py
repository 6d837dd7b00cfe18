"""Output nodes (GLB, splats) and the turntable renderer."""
from __future__ import annotations

import math

import torch

from ..trellis_impl.export.glb_export import BAKE_MODES, PHASES, UNWRAP_METHODS, to_glb
from ..trellis_impl.export.splat_files import save_splat, save_spz
from ..trellis_impl.render.turntable import MAX_SIZE, TURNTABLE_MODES, turntable
from . import host
from .generation import TrellisAsset

SPLAT_FORMATS = ("ply", "spz", "splat")


def _check_asset(asset, node: str) -> TrellisAsset:
    if not isinstance(asset, TrellisAsset):
        raise ValueError(f"{node}: asset must come from TrellisDecode")
    return asset


def _prefix_input(default: str):
    return ("STRING", {"default": default, "tooltip": "File name prefix under ComfyUI's output folder; may hold "
                                                      "sub-folders ('trellis/asset'), never '..' or an absolute "
                                                      "path. Files are numbered and never overwritten."})


def _read(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read()


class TrellisExportGLB:
    CATEGORY = "TRELLIS/export"
    FUNCTION = "export"
    OUTPUT_NODE = True
    RETURN_TYPES = ("MESH", "FILE_3D_GLB", "STRING")
    RETURN_NAMES = ("mesh", "glb_file", "model_file")
    OUTPUT_TOOLTIPS = ("Core MESH (glTF frame, Y up; textured where the host supports it).",
                       "Core File3D of the GLB (None on hosts without File3D).",
                       "Path of the GLB relative to output/ (connect to core Preview3D).")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "asset": ("TRELLIS_V1_ASSET", {"tooltip": "From TrellisDecode (needs mesh; gaussian for texture baking)."}),
            "filename_prefix": _prefix_input("trellis/asset"),
            "simplify": ("FLOAT", {"default": 0.95, "min": 0.0, "max": 0.99, "step": 0.01,
                                   "tooltip": "Fraction of faces removed (0.95 keeps 5%, the official default)."}),
            "texture_size": ("INT", {"default": 1024, "min": 512, "max": 4096, "step": 256,
                                     "tooltip": "Texture side in texels."}),
            "bake": (list(BAKE_MODES), {"default": "fast",
                                        "tooltip": "fast: project Gaussian renders; opt: official optimisation "
                                                   "(slow); vertex_colors: no texture; none: geometry only."}),
            "bake_steps": ("INT", {"advanced": True, "default": 2500, "min": 1, "max": 10000,
                                   "tooltip": "Optimisation steps of bake 'opt'."}),
            "unwrap": (list(UNWRAP_METHODS), {"advanced": True, "default": "fast",
                                              "tooltip": "UV atlas: fast (built in) or xatlas (official, slower)."}),
            "origin": (["center", "base", "none"], {"default": "center",
                                            "tooltip": "center: bounding-box centre at 0; base: lowest point at "
                                                       "y = 0; none: TRELLIS's unit-cube position (lines up with "
                                                       "splats and edit-region boxes)."}),
            "fill_holes": ("BOOLEAN", {"advanced": True, "default": True,
                                       "tooltip": "Remove interior faces and fill small holes (visibility "
                                                  "clean-up)."}),
        }}

    def export(self, asset, filename_prefix="trellis/asset", simplify=0.95, texture_size=1024, bake="fast",
               bake_steps=2500, unwrap="fast", origin="center", fill_holes=True):
        asset = _check_asset(asset, "TrellisExportGLB")
        host.check_filename_prefix(filename_prefix)
        meshes = asset.decoded.get("mesh")
        if not meshes:
            raise ValueError("TrellisExportGLB: the asset has no mesh; enable 'mesh' in TrellisDecode")
        gaussians = asset.decoded.get("gaussian")
        if gaussians is None and bake in ("fast", "opt"):
            raise ValueError(f"TrellisExportGLB: bake {bake!r} needs the Gaussians; enable 'gaussian' in "
                             "TrellisDecode or use bake 'vertex_colors' / 'none'")
        n = len(meshes)
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
        return {"ui": {"trellis_preview": ui}, "result": (core_mesh, file3d, files[0]["relative"])}


class TrellisExportSplat:
    CATEGORY = "TRELLIS/export"
    FUNCTION = "export"
    OUTPUT_NODE = True
    RETURN_TYPES = ("SPLAT", "FILE_3D_SPLAT_ANY", "STRING")
    RETURN_NAMES = ("splat", "splat_file", "splat_path")
    OUTPUT_TOOLTIPS = ("Core SPLAT (3DGS frame, activated values; None on hosts without SPLAT).",
                       "Core File3D of the written file (None on hosts without File3D).",
                       "Path of the file relative to output/.")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "asset": ("TRELLIS_V1_ASSET", {"tooltip": "From TrellisDecode (needs gaussian)."}),
            "filename_prefix": _prefix_input("trellis/splat"),
            "format": (list(SPLAT_FORMATS), {"default": "ply",
                                             "tooltip": "ply: official 3DGS PLY (full precision); spz: Niantic "
                                                        "compressed; splat: antimatter15 web format."}),
        }}

    def export(self, asset, filename_prefix="trellis/splat", format="ply"):
        asset = _check_asset(asset, "TrellisExportSplat")
        host.check_filename_prefix(filename_prefix)
        if format not in SPLAT_FORMATS:
            raise ValueError(f"format must be one of {SPLAT_FORMATS}, got {format!r}")
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
        return {"ui": {"trellis_preview": ui}, "result": (splat, file3d, files[0]["relative"])}


class TrellisTurntable:
    CATEGORY = "TRELLIS/render"
    FUNCTION = "render"
    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    OUTPUT_TOOLTIPS = ("Turntable frames [N, H, W, 3] (side_by_side: twice as wide); samples one after another.",)

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "asset": ("TRELLIS_V1_ASSET", {"tooltip": "From TrellisDecode."}),
            "frames": ("INT", {"default": 36, "min": 1, "max": 720, "tooltip": "Number of views around the object."}),
            "resolution": ("INT", {"default": 512, "min": 16, "max": MAX_SIZE, "step": 16,
                                   "tooltip": "Square image side in pixels."}),
            "mode": (list(TURNTABLE_MODES), {"default": "gaussian",
                                             "tooltip": "gaussian: splat render; mesh_normals: normal map of the "
                                                        "mesh; side_by_side: both."}),
            "pitch": ("FLOAT", {"advanced": True, "default": 14.3, "min": -89.0, "max": 89.0, "step": 0.1,
                                "tooltip": "Camera elevation in degrees (official video: 0.25 rad = 14.3)."}),
            "radius": ("FLOAT", {"advanced": True, "default": 2.0, "min": 0.1, "max": 100.0, "step": 0.1,
                                 "tooltip": "Camera distance from the centre (object fits a unit cube)."}),
            "fov": ("FLOAT", {"advanced": True, "default": 40.0, "min": 1.0, "max": 179.0, "step": 0.5,
                              "tooltip": "Vertical field of view in degrees."}),
        }}

    def render(self, asset, frames=36, resolution=512, mode="gaussian", pitch=14.3, radius=2.0, fov=40.0):
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
        return (torch.cat(out).float().clamp(0, 1).contiguous(),)


__all__ = ["TrellisExportGLB", "TrellisExportSplat", "TrellisTurntable"]
