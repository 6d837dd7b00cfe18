"""A tiny synthetic training-data folder (16^3 grid: coloured spheres and boxes, rendered with the
project's rasteriser) written with the dataset module's own writers."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from trellis_impl.render.cameras import Camera
from trellis_impl.training.dataset import (ASSET_KINDS, camera_tensors, new_dataset_manifest, write_asset_tensors,
                                           write_json_atomic)

RESOLUTION = 16
IMAGE_SIZE = 32
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 60, 220), (230, 200, 30)]


def _shape(i: int):
    """Asset i: a sphere (even i) or a box (odd i) of growing size in the unit cube, as a mesh
    (vertices float32 [V, 3], faces int32 [F, 3]) and its surface voxels on the 16^3 grid."""
    import trimesh
    from trellis_impl.pipelines.voxelize import voxelize_mesh
    size = (3.0 + i) / RESOLUTION
    mesh = trimesh.creation.icosphere(subdivisions=2, radius=size) if i % 2 == 0 else \
        trimesh.creation.box(extents=[2 * size, 1.6 * size, 1.2 * size])
    vertices = torch.tensor(mesh.vertices, dtype=torch.float32)
    faces = torch.tensor(mesh.faces, dtype=torch.int32)
    return vertices, faces, voxelize_mesh(vertices, faces, RESOLUTION, normalize=False)


def _views(vertices, faces, colour, n: int, seed: int):
    """RGBA renders of the mesh in its colour (shaded by the normal's z so views differ) on
    transparent black, with their cameras: images uint8 [n, S, S, 4], extrinsics, intrinsics."""
    from trellis_impl.render.mesh_raster import render_mesh
    gen = torch.Generator().manual_seed(seed)
    images, cameras = [], []
    for v in range(n):
        yaw, pitch = float(torch.rand((), generator=gen)) * 6.28, float(torch.rand((), generator=gen)) - 0.5
        camera = Camera.orbit(yaw, pitch, 2.0, 40.0, IMAGE_SIZE, IMAGE_SIZE)
        out = render_mesh((vertices, faces), camera)
        shade = 0.75 + 0.25 * out["normal"][2:3].abs()
        rgb = torch.tensor(colour, dtype=torch.float32)[:, None, None] / 255 * shade * out["mask"]
        images.append((torch.cat([rgb, out["mask"]]).permute(1, 2, 0) * 255).round().to(torch.uint8))
        cameras.append(camera)
    return {"images": torch.stack(images), **camera_tensors(cameras)}


def write_synthetic_data(folder: Path, num_assets: int = 4, feature_channels: int = 48) -> Path:
    """Every asset kind a stage may need; latents are smooth functions of the shape so that a flow
    can learn them."""
    folder = Path(folder)
    (folder / "assets").mkdir(parents=True)
    manifest = new_dataset_manifest(RESOLUTION, {"synthetic": True})
    for i in range(num_assets):
        name = f"shape{i}"
        out = folder / "assets" / name
        out.mkdir()
        vertices, faces, coords = _shape(i)
        write_asset_tensors(out / ASSET_KINDS["voxels"], {"coords": coords})
        write_asset_tensors(out / ASSET_KINDS["mesh"], {"vertices": vertices, "faces": faces})
        gen = torch.Generator().manual_seed(i)
        occupancy = torch.zeros(1, 1, RESOLUTION, RESOLUTION, RESOLUTION)
        occupancy[0, 0, coords[:, 0].long(), coords[:, 1].long(), coords[:, 2].long()] = 1
        pooled = torch.nn.functional.avg_pool3d(occupancy, 4)[0]
        latent = torch.cat([pooled * (k + 1) - 0.5 for k in range(8)])
        write_asset_tensors(out / ASSET_KINDS["ss_latent"], {"latent": latent + 0.01 * torch.randn(latent.shape, generator=gen)})
        colour = torch.tensor(COLOURS[i % len(COLOURS)], dtype=torch.float32) / 255
        feats = torch.cat([torch.sin(coords.float()[:, :1] / 3 + k) for k in range(5)] + [colour.expand(len(coords), 3)], 1)
        write_asset_tensors(out / ASSET_KINDS["slat"], {"feats": feats})
        features = (colour.repeat(feature_channels // 3 + 1)[:feature_channels].expand(len(coords), -1)
                    + 0.1 * torch.sin(coords.float().sum(1, keepdim=True)))
        write_asset_tensors(out / ASSET_KINDS["features"], {"patchtokens": features.half()})
        write_asset_tensors(out / ASSET_KINDS["renders"], _views(vertices, faces, COLOURS[i % len(COLOURS)], 4, seed=i))
        write_asset_tensors(out / ASSET_KINDS["cond"], _views(vertices, faces, COLOURS[i % len(COLOURS)], 2, seed=100 + i))
        (out / ASSET_KINDS["caption"]).write_text(json.dumps([f"shape number {i}"]))
        manifest["assets"][name] = {"source": "synthetic", "num_voxels": len(coords)}
    write_json_atomic(folder / "dataset.json", manifest)
    return folder
