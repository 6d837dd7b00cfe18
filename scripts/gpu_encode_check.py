"""Time ``encode_asset`` at the released size on CUDA with random weights: the TRELLIS-image-large
SLat encoder (``slat_enc_swin8_B_64l8_fp16`` config) and structure encoder, DINOv2 ViT-L/14 reg4,
150 views of a ~20k-voxel textured asset (``device_bench.bench_asset``: ~0.9M faces, vertex
colours). Prints the time of each phase (voxelize, render, DINOv2, projection, encoders), the
total and the peak GPU memory.

    python scripts/gpu_encode_check.py [--views 150] [--batch-size 16] [--supersample 2]

It encodes twice: DINOv2 in float32 (the official features) and with TF32 matrix products.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from device_bench import _bench_color, bench_asset, random_image_folder  # noqa: E402

from trellis_impl.encoding import TexturedMesh, encode_asset  # noqa: E402
from trellis_impl.models import build_model  # noqa: E402
from trellis_impl.pipelines.model_folder import SLAT_ENCODER_KEY  # noqa: E402
from trellis_impl.pipelines.random_folder import randomise_weights  # noqa: E402

RELEASED = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "conformance" / "released" / \
    "TRELLIS-image-large" / "ckpts"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--views", type=int, default=150)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--supersample", type=int, default=2)
    args = parser.parse_args()
    device = torch.device("cuda")
    generator = torch.Generator(device=device).manual_seed(0)
    folder, dinov2, counts = random_image_folder(device, generator, encoders=True)
    config = json.loads((RELEASED / "slat_enc_swin8_B_64l8_fp16.json").read_text())
    with torch.device(device):
        slat_encoder = build_model(config["name"], **config["args"])
    randomise_weights(slat_encoder, generator)
    folder._models[SLAT_ENCODER_KEY] = slat_encoder.eval().requires_grad_(False)
    mesh, _, voxels64 = bench_asset(256, device=device)
    textured = TexturedMesh.from_arrays(mesh.vertices.cpu().double(), mesh.faces.cpu(),
                                        vertex_colors=_bench_color(mesh.vertices).cpu())
    print(f"asset: {mesh.faces.shape[0]} faces, {voxels64} voxels at 64^3; SLat encoder "
          f"{sum(p.numel() for p in slat_encoder.parameters()) / 1e6:.1f}M parameters")
    options = dict(dinov2=dinov2, device=device, batch_size=args.batch_size, supersample=args.supersample)
    encode_asset(textured, folder, args.batch_size, **options)  # warm-up: kernels, nvdiffrast plugin
    results = {}
    for tf32 in (False, True):  # the official float32 DINOv2, then TF32 matrix products
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        result = results[tf32] = encode_asset(textured, folder, args.views, tf32=tf32, **options)
        total = time.perf_counter() - start
        print(f"{result.coords.shape[0]} voxels, {args.views} views, batch {args.batch_size}, supersample "
              f"{args.supersample}, DINOv2 {'TF32' if tf32 else 'float32'}")
        for phase, seconds in result.timings.items():
            print(f"  {phase:<18s} {seconds:8.3f} s")
        print(f"  {'total':<18s} {total:8.3f} s")
        print(f"peak GPU memory {torch.cuda.max_memory_allocated() / 2 ** 30:.2f} GiB; latents finite: "
              f"{bool(torch.isfinite(result.feats).all())}, std {result.feats.std().item():.3f}")
    for what in ("voxel_features", "feats"):
        exact, fast = getattr(results[False], what), getattr(results[True], what)
        print(f"TF32 vs float32 {what}: max |diff| / max |value| = "
              f"{float((fast - exact).abs().max() / exact.abs().max()):.2e}")

if __name__ == "__main__":
    main()
