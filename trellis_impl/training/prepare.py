"""A folder of meshes -> a training-data folder (``dataset.TrainingData``), phase by phase:

1. ``meshes``: each mesh read once: normalised (unit cube, as ``encode``/``variant`` take it), its
   surface voxels on the SLat grid, ``num_views`` views on the official Hammersley sphere (radius 2,
   FoV 40 deg) and ``cond_views`` conditioning views with the official random FoV (10-70 deg, the
   object just fitting), unlit base colour (``encoding.render_albedo``);
2. ``features``: each voxel's DINOv2 patch features averaged over the views (``encoding``);
3. ``latents`` (with a model folder holding the encoders): the structure latent and the SLat of
   every asset (posterior means), for training the flows and the decoders on frozen encoders.

Frames: TRELLIS assets are Z up. As the official toolkit's Blender importers do, .glb/.gltf and .obj
files are read as Y up (their conventions) and turned Z up (glTF +Z front -> -Y); .ply and .stl
are taken as they are (``up="auto"``; ``"y"`` / ``"z"`` force one rule for every file).

Each asset file is written whole (temporary file + rename), so an interrupted run resumes where it
stopped: present files are kept. An asset that fails (unreadable, empty, degenerate) is recorded
under ``failed`` in ``dataset.json`` with the reason and its name is logged; the others go on.
Cameras are a function of (seed, asset name), so the data does not depend on the order or number
of assets.
"""
from __future__ import annotations

import logging
import math
import zlib
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch

from ..frames import mesh_file_frame
from ..pipelines.voxelize import voxelize_mesh
from ..readers import MESH_EXTENSIONS
from .dataset import (ASSET_KINDS, TrainingData, camera_tensors, new_dataset_manifest, stored_camera,
                      write_asset_tensors, write_json_atomic)

__all__ = ["prepare_data", "find_meshes", "PREPARE_PHASES", "conditioning_cameras"]

PREPARE_PHASES = ("meshes", "features", "latents")
# Called with (phase, assets done, assets); may raise to interrupt.
PrepareProgress = Callable[[str, int, int], None]
_log = logging.getLogger("trellis_impl")


def find_meshes(sources: Sequence[Union[str, Path]]) -> Dict[str, Path]:
    """Asset name -> mesh file for files and folders (searched recursively) of supported meshes.
    Names are the file stems, made unique with ``_2``, ``_3``... in sorted path order."""
    files: List[Path] = []
    for source in map(Path, sources):
        if source.is_dir():
            files += sorted(p for p in source.rglob("*") if p.suffix.lower() in MESH_EXTENSIONS and p.is_file())
        elif source.is_file():
            if source.suffix.lower() not in MESH_EXTENSIONS:
                raise ValueError(f"{source}: not a mesh file; allowed: {', '.join(MESH_EXTENSIONS)}")
            files.append(source)
        else:
            raise ValueError(f"{source}: no such file or folder")
    names: Dict[str, Path] = {}
    for path in files:
        name, k = path.stem, 1
        while name in names:
            k += 1
            name = f"{path.stem}_{k}"
        names[name] = path
    if not names:
        raise ValueError(f"no mesh files ({', '.join(MESH_EXTENSIONS)}) in {', '.join(map(str, sources))}")
    return names


def _asset_seed(seed: int, name: str) -> int:
    return (seed * 1_000_003 + zlib.crc32(name.encode("utf-8"))) % (2 ** 31)


def conditioning_cameras(num_views: int, seed: int, resolution: int = 512):
    """The official ``render_cond`` cameras: Hammersley yaw/pitch with a random offset; per view
    1/radius^2 uniform between the values for FoV 70 and 10 degrees, and the FoV that makes the
    unit cube's bounding sphere (radius sqrt(3)/2) just fit: ``fov = 2 asin(sqrt(3) / 2 / radius)``."""
    from ..encoding.views import blender_camera, hammersley_yaw_pitch, view_offset
    generator = torch.Generator().manual_seed(seed)
    offset = view_offset(seed)
    half_diagonal = math.sqrt(3) / 2
    k_min = (math.sin(math.radians(10) / 2) / half_diagonal) ** 2
    k_max = (math.sin(math.radians(70) / 2) / half_diagonal) ** 2
    cameras = []
    for i in range(num_views):
        radius = 1 / math.sqrt(k_min + (k_max - k_min) * float(torch.rand((), generator=generator)))
        fov = math.degrees(2 * math.asin(half_diagonal / radius))
        cameras.append(blender_camera(*hammersley_yaw_pitch(i, num_views, offset), radius=radius, fov_degrees=fov,
                                      resolution=resolution))
    return cameras


class _Preparer:
    def __init__(self, out: Path, meshes: Dict[str, Path], settings: dict, device: torch.device,
                 progress: Optional[PrepareProgress]):
        self.out, self.meshes, self.settings, self.device, self.progress = out, meshes, settings, device, progress
        manifest_path = out / "dataset.json"
        if manifest_path.is_file():
            data = TrainingData(out)
            if data.manifest["settings"] != settings:
                raise ValueError(f"{out} was prepared with other settings {data.manifest['settings']}; give a new "
                                 f"--out or the same options to resume it")
            self.manifest = data.manifest
        elif out.exists() and any(out.iterdir()):
            raise ValueError(f"{out} exists and is not a training-data folder; choose a new --out")
        else:
            (out / "assets").mkdir(parents=True, exist_ok=True)
            self.manifest = new_dataset_manifest(settings["resolution"], settings)
            self.save_manifest()

    def save_manifest(self) -> None:
        write_json_atomic(self.out / "dataset.json", self.manifest)

    def file(self, name: str, kind: str) -> Path:
        return self.out / "assets" / name / ASSET_KINDS[kind]

    def pending(self) -> List[str]:
        return [n for n in self.meshes if n not in self.manifest["failed"]]

    def run_phase(self, phase: str, kinds: Sequence[str], work: Callable[[str], None]) -> None:
        names = self.pending()
        for done, name in enumerate(names, 1):
            if not all(self.file(name, kind).is_file() for kind in kinds):
                try:
                    work(name)
                except (KeyboardInterrupt, SystemExit):
                    raise
                except Exception as error:  # one bad asset never stops the run
                    message = f"{phase}: {type(error).__name__}: {error}"
                    _log.warning("[trellis] prepare-data: skipping %s (%s)", name, message)
                    self.manifest["failed"][name] = message
                    self.manifest["assets"].pop(name, None)
                    self.save_manifest()
            if self.progress is not None:
                self.progress(phase, done, len(names))

    def meshes_phase(self, name: str) -> None:
        """Read the mesh once: its normalised geometry, its voxels, its views and conditioning views."""
        from ..encoding import load_textured_mesh
        from ..encoding.albedo import render_albedo, to_rgba8
        from ..encoding.views import hammersley_cameras
        s = self.settings
        mesh = load_textured_mesh(self.meshes[name], up=s["up"])
        if not self.file(name, "voxels").is_file():
            coords = voxelize_mesh(mesh.vertices, mesh.faces, resolution=s["resolution"])
            (self.out / "assets" / name).mkdir(exist_ok=True)
            normalized = mesh.normalized()
            write_asset_tensors(self.file(name, "mesh"), {"vertices": normalized.vertices.float(),
                                                          "faces": normalized.faces.int()})
            write_asset_tensors(self.file(name, "voxels"), {"coords": coords.int()})
        if name not in self.manifest["assets"]:  # also after a stop between the voxels and the manifest
            from safetensors import safe_open
            with safe_open(str(self.file(name, "voxels")), "pt") as f:
                count = f.get_slice("coords").get_shape()[0]
            self.manifest["assets"][name] = {"source": str(self.meshes[name]), "num_voxels": int(count)}
            self.save_manifest()
        mesh = mesh.normalized()
        seed = _asset_seed(s["seed"], name)
        for kind, cameras in (("renders", hammersley_cameras(s["num_views"], seed=seed, resolution=s["render_size"])),
                              ("cond", conditioning_cameras(s["cond_views"], seed + 1, s["render_size"]))):
            if self.file(name, kind).is_file():
                continue
            images = []
            for start in range(0, len(cameras), s["batch_size"]):
                batch = cameras[start:start + s["batch_size"]]
                images.append(torch.as_tensor(to_rgba8(render_albedo(mesh, batch, s["supersample"], self.device))))
            write_asset_tensors(self.file(name, kind), {"images": torch.cat(images), **camera_tensors(cameras)})

def prepare_data(sources: Sequence[Union[str, Path]], out: Union[str, Path], *, resolution: int = 64,
                 num_views: int = 150, cond_views: int = 24, render_size: int = 512, supersample: int = 2,
                 seed: int = 0, batch_size: int = 16, up: str = "auto", dinov2: Union[str, Path, None] = None,
                 model: Union[str, Path, None] = None, latents: Optional[Sequence[str]] = None, device=None,
                 progress: Optional[PrepareProgress] = None) -> TrainingData:
    """Prepare (or resume preparing) the training-data folder ``out`` from mesh files/folders.

    Args:
        sources: mesh files and folders (.obj .ply .stl .glb .gltf, searched recursively).
        resolution: the SLat grid (64 released).
        num_views / cond_views / render_size: views per asset, conditioning views, their size in px.
        supersample: render samples per pixel side.
        up: which axis is up in the files: 'auto' (glTF and OBJ: Y, PLY and STL: Z, as the official
            toolkit's Blender import), 'y' or 'z'.
        dinov2: the image encoder for the features (a DINOv2 folder or .pth); default the model
            folder's when its SLat latents are computed (they need the features); without both
            the features phase is skipped.
        model: a model folder with the structure and / or SLat encoders: adds the ``latents`` phase
            (``ss_latent`` and / or ``slat``, whichever encoders it holds).
        latents: the latent kinds to compute (default every kind the folder's encoders give), e.g.
            ``["ss_latent"]`` while its SLat encoder is still to be replaced.
        device: where to render and encode (default CUDA when available).
        progress: ``(phase, assets done, assets)`` after each asset of each phase; may raise to interrupt.
    Returns:
        the folder, read back.
    """
    for value, what in ((resolution, "resolution"), (num_views, "num_views"), (cond_views, "cond_views"),
                        (render_size, "render_size"), (supersample, "supersample"), (batch_size, "batch_size")):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{what} must be an int >= 1, got {value!r}")
    mesh_file_frame("", up)  # the one check of up (its error names the allowed values), before any file is read
    meshes = find_meshes(sources)
    device = torch.device(device) if device is not None else torch.device("cuda" if torch.cuda.is_available() else "cpu")
    settings = {"resolution": resolution, "num_views": num_views, "cond_views": cond_views, "render_size": render_size,
                "supersample": supersample, "seed": seed, "batch_size": batch_size, "up": up}
    folder = _model_folder(model, device)  # the encoders are found (or refused) before any work
    latent_kinds = () if folder is None else _latent_kinds(folder, latents)
    job = _Preparer(Path(out), meshes, settings, device, progress)
    # the image encoder is needed (and loaded, before any work) only while features are missing, and
    # the folder's own only when its SLat latents need them: structure latents alone need no features
    needs_features = any(not job.file(name, "features").is_file() for name in job.pending()) and \
        (dinov2 is not None or folder is None or "slat" in latent_kinds)
    encoder = _feature_encoder(dinov2, folder, device) if needs_features else None
    job.run_phase("meshes", ("voxels", "mesh", "renders", "cond"), job.meshes_phase)
    if encoder is not None:
        job.run_phase("features", ("features",), lambda name: _features(job, name, encoder))
    if folder is not None:
        job.run_phase("latents", latent_kinds, lambda name: _latents(job, name, folder, latent_kinds))
    return TrainingData(job.out)


def _latent_kinds(folder, wanted: Optional[Sequence[str]] = None) -> tuple:
    """The latents the folder's encoders give: ``ss_latent`` (structure encoder) and / or ``slat``
    (SLat encoder); a folder may hold one of them, e.g. while the stages are trained in turn.
    ``wanted`` (default both) restricts them; a wanted kind without its encoder is refused."""
    from ..pipelines.model_folder import ENCODER_KEY, SLAT_ENCODER_KEY, ModelFolderError
    known = ("ss_latent", "slat")
    if wanted is not None and (not wanted or set(wanted) - set(known)):
        raise ValueError(f"latents must name some of {', '.join(known)}, got {list(wanted)!r}")
    kinds, reasons = [], []
    for kind, key in (("ss_latent", ENCODER_KEY), ("slat", SLAT_ENCODER_KEY)):
        if wanted is not None and kind not in wanted:
            continue
        try:
            missing = folder.missing_files([key])
        except ModelFolderError as error:
            missing = [error]
        if missing:
            reasons.append(f"{kind}: {missing[0]}")
        else:
            kinds.append(kind)
    if wanted is not None and reasons:
        raise ValueError(f"{folder.path} lacks the encoder of a wanted latent ({'; '.join(reasons)})")
    if not kinds:
        raise ValueError(f"{folder.path} has neither encoder for the latents ({'; '.join(reasons)})")
    return tuple(kinds)


def _model_folder(model, device):
    if model is None:
        return None
    from ..pipelines.model_folder import ModelFolder
    return ModelFolder(model, device=device)


def _feature_encoder(dinov2, folder, device):
    from ..conditioning import load_dinov2
    if dinov2 is not None:
        return load_dinov2(str(dinov2), device=device)
    if folder is not None:
        from ..pipelines.encoders import image_encoder_path
        return load_dinov2(str(image_encoder_path(folder)), device=device)
    _log.warning("[trellis] prepare-data: no DINOv2 given (--dinov2 or --model): the features phase is skipped")
    return None


@torch.no_grad()
def _features(job: _Preparer, name: str, dinov2) -> None:
    """The asset's voxel features from its stored renders (official extract_feature.py)."""
    from safetensors.torch import load_file

    from ..encoding.features import FeatureAccumulator, voxel_centers
    views = load_file(str(job.file(name, "renders")))
    points = voxel_centers(load_file(str(job.file(name, "voxels")))["coords"], job.settings["resolution"])
    size, batch = views["images"].shape[1], job.settings["batch_size"]
    features = FeatureAccumulator()
    for start in range(0, views["images"].shape[0], batch):
        cameras = [stored_camera(e, k, size) for e, k in zip(views["extrinsics"][start:start + batch],
                                                             views["intrinsics"][start:start + batch])]
        features.add_views(dinov2, views["images"][start:start + batch].numpy(), cameras, points.to(job.device))
    write_asset_tensors(job.file(name, "features"), {"patchtokens": features.mean().half()})


@torch.no_grad()
def _latents(job: _Preparer, name: str, folder, kinds: Sequence[str]) -> None:
    from safetensors.torch import load_file

    from ..pipelines.model_folder import ENCODER_KEY, SLAT_ENCODER_KEY
    from ..sparse import SparseTensor
    coords = load_file(str(job.file(name, "voxels")))["coords"].int()
    full = torch.cat([torch.zeros_like(coords[:, :1]), coords], 1).to(job.device)
    if "ss_latent" in kinds and not job.file(name, "ss_latent").is_file():
        grid = job.settings["resolution"]
        occupancy = torch.zeros((1, 1, grid, grid, grid), device=job.device)
        occupancy[0, 0, full[:, 1].long(), full[:, 2].long(), full[:, 3].long()] = 1.0
        latent = folder.model(ENCODER_KEY)(occupancy, sample_posterior=False)
        write_asset_tensors(job.file(name, "ss_latent"), {"latent": latent[0].float()})
    if "slat" in kinds and not job.file(name, "slat").is_file():
        feats = load_file(str(job.file(name, "features")))["patchtokens"].float()
        slat = folder.model(SLAT_ENCODER_KEY)(SparseTensor(feats.to(job.device), full, batch_size=1),
                                              sample_posterior=False)
        write_asset_tensors(job.file(name, "slat"), {"feats": slat.feats.float()})
