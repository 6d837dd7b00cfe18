"""Seconds per view of the PyTorch Gaussian rasteriser for tile sizes side by side, on a scene
shaped like a decoded demo asset: 16 Gaussians in each surface voxel of a procedural object on a
32^3 grid, sized like the demo decoder's, rendered at the GLB bake's 512 px from its orbit cameras.

    python scripts/gaussian_raster_cpu_bench.py [--tiles 16,8] [--views 4] [--kind table] [--size 512]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis_impl.export.texture_bake import bake_cameras  # noqa: E402
from trellis_impl.pipelines.voxelize import voxelize_mesh  # noqa: E402
from trellis_impl.render.gaussian_raster import _render_torch, gaussian_tensors  # noqa: E402
from trellis_impl.training.procedural import procedural_object  # noqa: E402


def scene(kind: str, resolution: int = 32, per_voxel: int = 16, seed: int = 0) -> dict:
    mesh = procedural_object(kind, seed)
    coords = voxelize_mesh(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
                           torch.as_tensor(np.asarray(mesh.faces)), resolution)
    g = torch.Generator().manual_seed(seed)
    n = coords.shape[0] * per_voxel
    centres = (coords.float().repeat_interleave(per_voxel, 0) + torch.rand(n, 3, generator=g)) / resolution - 0.5
    # scales and opacities spread like a decoded demo asset's (median scale 0.0034, opacity 0.93)
    return {"xyz": centres, "scaling": 0.11 / resolution * torch.exp(0.6 * torch.randn(n, 3, generator=g)),
            "rotation": torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1),
            "opacity": 0.5 + 0.5 * torch.rand(n, 1, generator=g), "colors": torch.rand(n, 3, generator=g)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiles", default="16,8", help="tile sizes in px, comma-separated; the first is the baseline")
    parser.add_argument("--views", type=int, default=4)
    parser.add_argument("--kind", default="table")
    parser.add_argument("--size", type=int, default=512)
    args = parser.parse_args()
    gaussians = gaussian_tensors(scene(args.kind))
    cameras = bake_cameras(args.views, args.size)
    render = _render_torch  # one view, with the tile size as an option
    background = torch.zeros(3)
    print(f"{gaussians['xyz'].shape[0]} Gaussians, {args.views} views at {args.size} px, "
          f"{torch.get_num_threads()} threads")
    baseline = None
    for tile in (int(t) for t in args.tiles.split(",")):
        with torch.no_grad():
            started = time.perf_counter()
            images = [render(gaussians, camera, background, tile=tile)["color"] for camera in cameras]
            seconds = (time.perf_counter() - started) / len(cameras)
        if baseline is None:
            baseline = (seconds, images)
        diff = max(float((a - b).abs().max()) for a, b in zip(images, baseline[1]))
        print(f"tile {tile:3d}: {seconds:.3f} s/view ({baseline[0] / seconds:.2f}x the first), "
              f"max colour difference {diff:.1e}")


if __name__ == "__main__":
    main()
