"""A prepared training-data folder: what ``prepare-data`` writes and the trainers read.

Layout (every file written whole or not at all: a temporary name, then an atomic rename)::

    DATA/dataset.json                    {"format", "version", "resolution", "settings", "assets": {NAME: {...}},
                                          "failed": {NAME: "why"}}
    DATA/assets/NAME/voxels.safetensors  coords int32 [N, 3] on the SLat grid (x, y, z), sorted
    DATA/assets/NAME/mesh.safetensors    vertices float32 [V, 3] (unit cube, TRELLIS frame), faces int32 [F, 3]
    DATA/assets/NAME/renders.safetensors images uint8 [V, H, W, 4] RGBA, extrinsics float32 [V, 4, 4]
                                         (world-to-camera, OpenCV), intrinsics float32 [V, 3, 3]
                                         (normalised: fx / W, cx / W, fy / H, cy / H, as the official toolkit)
    DATA/assets/NAME/cond.safetensors    the same for the conditioning views (random FoV, as render_cond)
    DATA/assets/NAME/features.safetensors  patchtokens float16 [N, C]: view-averaged image features per voxel
    DATA/assets/NAME/ss_latent.safetensors latent float32 [C, r, r, r] (structure encoder, posterior mean)
    DATA/assets/NAME/slat.safetensors      feats float32 [N, 8] (SLat encoder, posterior mean; decoder space)
    DATA/assets/NAME/caption.json          ["a caption", ...] (text conditioning, optional)

Each file is one "kind"; a stage needs some kinds (``TrainingData.require``).
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

import torch

__all__ = ["TrainingData", "DATASET_FORMAT", "ASSET_KINDS", "write_asset_tensors", "write_json_atomic",
           "new_dataset_manifest", "DatasetError", "stored_camera", "camera_tensors", "merge_training_data"]

DATASET_FORMAT = "trellis-impl-training-data"
DATASET_VERSION = 1
# kind -> file name inside DATA/assets/NAME/
ASSET_KINDS = {
    "voxels": "voxels.safetensors",
    "mesh": "mesh.safetensors",
    "renders": "renders.safetensors",
    "cond": "cond.safetensors",
    "features": "features.safetensors",
    "ss_latent": "ss_latent.safetensors",
    "slat": "slat.safetensors",
    "caption": "caption.json",
}


def stored_camera(extrinsics: torch.Tensor, intrinsics: torch.Tensor, size: int):
    """The Camera of a stored view at ``size`` px: world-to-camera ``extrinsics`` [4, 4] (OpenCV)
    and normalised ``intrinsics`` [3, 3] (fx / W, cx / W, fy / H, cy / H, as the official toolkit)."""
    from ..render.cameras import Camera
    k = intrinsics.double()
    return Camera(extrinsics.double(), float(k[0, 0]) * size, float(k[1, 1]) * size, float(k[0, 2]) * size,
                  float(k[1, 2]) * size, size, size)


def camera_tensors(cameras) -> Dict[str, torch.Tensor]:
    """extrinsics float32 [V, 4, 4] and normalised intrinsics float32 [V, 3, 3] of Cameras (the stored form)."""
    intrinsics = [[[c.fx / c.width, 0.0, c.cx / c.width], [0.0, c.fy / c.height, c.cy / c.height], [0.0, 0.0, 1.0]]
                  for c in cameras]
    return {"extrinsics": torch.stack([c.extrinsics for c in cameras]).float(),
            "intrinsics": torch.tensor(intrinsics, dtype=torch.float32)}


class DatasetError(ValueError):
    """A training-data folder that is missing, malformed or lacks what a stage needs."""


def write_json_atomic(path: Union[str, Path], data) -> None:
    """Write ``data`` as JSON to ``path`` through a temporary file and an atomic rename."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_asset_tensors(path: Union[str, Path], tensors: Dict[str, torch.Tensor]) -> None:
    """Save ``tensors`` as safetensors at ``path`` atomically (no partial file on failure)."""
    from safetensors.torch import save_file
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def new_dataset_manifest(resolution: int, settings: dict) -> dict:
    return {"format": DATASET_FORMAT, "version": DATASET_VERSION, "resolution": resolution, "settings": settings,
            "assets": {}, "failed": {}}


class TrainingData:
    """Read side of a prepared folder.

    Args:
        path: the folder holding ``dataset.json``.

    Attributes:
        names: the assets prepared without error, sorted (indices used by the trainers refer to it).
        resolution: the SLat grid side the voxels live on (64 for the released models).
    """

    def __init__(self, path: Union[str, Path]):
        self.path = Path(path)
        manifest_path = self.path / "dataset.json"
        if not manifest_path.is_file():
            raise DatasetError(f"{self.path}: no dataset.json; make the folder with "
                               f"`python -m trellis_impl prepare-data MESHES --out {self.path}`")
        try:
            self.manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except ValueError as e:
            raise DatasetError(f"{manifest_path}: not valid JSON ({e})") from None
        if self.manifest.get("format") != DATASET_FORMAT:
            raise DatasetError(f"{manifest_path}: not a training-data manifest (format {self.manifest.get('format')!r})")
        self.resolution = int(self.manifest["resolution"])
        self.names: List[str] = sorted(self.manifest.get("assets", {}))

    def __len__(self) -> int:
        return len(self.names)

    def file(self, name: str, kind: str) -> Path:
        return self.path / "assets" / name / ASSET_KINDS[kind]

    def require(self, kinds: Sequence[str], stage: str) -> None:
        """Raise DatasetError unless every asset has every kind in ``kinds`` (names the first gaps)."""
        if not self.names:
            raise DatasetError(f"{self.path}: no prepared asset (failed: {len(self.manifest.get('failed', {}))})")
        for kind in kinds:
            missing = [n for n in self.names if not self.file(n, kind).is_file()]
            if missing:
                hint = ("encode the latents with `prepare-data ... --model FOLDER` (a folder with the trained "
                        "encoders)") if kind in ("ss_latent", "slat") else "re-run prepare-data"
                raise DatasetError(f"stage {stage} needs {kind!r} for every asset; missing for "
                                   f"{', '.join(missing[:5])}{' ...' if len(missing) > 5 else ''}: {hint}")

    def tensors(self, name: str, kind: str, keys: Optional[Sequence[str]] = None) -> Dict[str, torch.Tensor]:
        """All (or ``keys``) tensors of one asset file."""
        from safetensors import safe_open
        with safe_open(str(self.file(name, kind)), "pt") as f:
            return {k: f.get_tensor(k) for k in (keys or f.keys())}

    def view(self, name: str, kind: str, index: int) -> Dict[str, torch.Tensor]:
        """One view of ``renders`` / ``cond`` without reading the others: image uint8 [H, W, 4],
        extrinsics [4, 4], intrinsics [3, 3]."""
        from safetensors import safe_open
        with safe_open(str(self.file(name, kind)), "pt") as f:
            return {k: f.get_slice(k)[index:index + 1][0] for k in ("images", "extrinsics", "intrinsics")}

    def num_views(self, name: str, kind: str) -> int:
        from safetensors import safe_open
        with safe_open(str(self.file(name, kind)), "pt") as f:
            return f.get_slice("images").get_shape()[0]

    def captions(self, name: str) -> List[str]:
        return json.loads(self.file(name, "caption").read_text(encoding="utf-8"))


def merge_training_data(parts: Sequence[Union[str, Path]], out: Union[str, Path]) -> TrainingData:
    """Move the assets of several data folders prepared with the same settings (e.g. by several
    ``prepare-data`` processes or machines on disjoint meshes) into one new folder ``out``.

    The parts are emptied of their assets (moved, not copied: the data can be large); ``out`` must
    not exist. Raises DatasetError when settings differ or an asset name occurs twice, before
    anything is moved.
    """
    out = Path(out)
    if out.exists():
        raise DatasetError(f"{out} exists; give a new folder (nothing is overwritten)")
    datas = [TrainingData(p) for p in parts]
    if not datas:
        raise DatasetError("merge_training_data: no data folder given")
    first = datas[0].manifest
    seen: Dict[str, Path] = {}
    for data in datas:
        if data.manifest["settings"] != first["settings"] or data.resolution != datas[0].resolution:
            raise DatasetError(f"{data.path} was prepared with other settings than {datas[0].path}: "
                               f"{data.manifest['settings']} vs {first['settings']}")
        for name in list(data.manifest["assets"]) + list(data.manifest.get("failed", {})):
            if name in seen:
                raise DatasetError(f"asset {name} is in both {seen[name]} and {data.path}")
            seen[name] = data.path
    manifest = new_dataset_manifest(datas[0].resolution, first["settings"])
    for data in datas:
        manifest["assets"].update(data.manifest["assets"])
        manifest["failed"].update(data.manifest.get("failed", {}))
    (out / "assets").mkdir(parents=True)
    write_json_atomic(out / "dataset.json", manifest)  # first, so no moved asset is ever unlisted
    for data in datas:
        for name in data.manifest["assets"]:
            shutil.move(str(data.path / "assets" / name), str(out / "assets" / name))
        data.manifest["assets"] = {}
        write_json_atomic(data.path / "dataset.json", data.manifest)
    return TrainingData(out)
