"""Milliseconds per windowed self-attention of the sdpa backend, side by side for bucket ratios, on
the surface voxels of procedural objects (one batch of them, as a decoder or the VAE's step sees);
a ratio of 1e9 puts every window longer than one voxel in one batch padded to the longest window (the
layout before the buckets).

    python scripts/window_attention_bench.py [--objects 4] [--resolution 32] [--window 8] [--heads 12] \
        [--channels 64] [--ratios 1e9,1.5,2] [--reps 3] [--device cpu]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trellis_impl.backends.attention as attention  # noqa: E402
from trellis_impl.evaluation import textured_procedural_object  # noqa: E402
from trellis_impl.pipelines.voxelize import voxelize_mesh  # noqa: E402
from trellis_impl.sparse.attention import window_partition  # noqa: E402
from trellis_impl.training.procedural import object_plan  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=4)
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--window", type=int, default=8)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--channels", type=int, default=64, help="per head")
    parser.add_argument("--ratios", default="1e9,1.5,2")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    try:
        ratios = [float(r) for r in args.ratios.split(",")]
    except ValueError:
        ratios = []
    if not ratios or not all(r > 1 for r in ratios):
        sys.exit(f"window_attention_bench: --ratios must be numbers > 1, got {args.ratios!r}")
    if min(args.objects, args.resolution, args.window, args.heads, args.channels, args.reps) < 1:
        sys.exit("window_attention_bench: --objects, --resolution, --window, --heads, --channels and --reps must be >= 1")
    device = torch.device(args.device)
    items = []
    for b, (kind, seed) in enumerate(object_plan(args.objects, split="held_out")):
        mesh = textured_procedural_object(kind, seed)
        voxels = voxelize_mesh(mesh.vertices, mesh.faces, resolution=args.resolution).long()
        items.append(torch.cat([torch.full((voxels.shape[0], 1), b), voxels], 1))
    coords = torch.cat(items).to(device)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(coords.shape[0], args.heads, args.channels, generator=g).to(device) for _ in range(3))
    print(f"{coords.shape[0]} voxels ({args.objects} objects at {args.resolution}^3), windows of {args.window}, "
          f"{args.heads} heads x {args.channels}, {torch.get_num_threads()} threads, {device}")
    for ratio in ratios:
        attention._BUCKET_RATIO = ratio
        row = []
        for shift in (0, args.window // 2):
            order, _, lens = window_partition(coords, args.window, shift)
            lens = attention.SeqLens(lens.lengths)  # a fresh layout for this ratio
            qo, ko, vo = q[order], k[order], v[order]
            attention.varlen_attention(qo, ko, vo, lens, backend="sdpa")  # warm-up, and the layout built
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start = time.perf_counter()
            for _ in range(args.reps):
                attention.varlen_attention(qo, ko, vo, lens, backend="sdpa")
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            row.append((time.perf_counter() - start) / args.reps * 1e3)
        print(f"ratio {ratio:g}: {row[0]:.1f} ms unshifted, {row[1]:.1f} ms shifted", flush=True)


if __name__ == "__main__":
    main()
