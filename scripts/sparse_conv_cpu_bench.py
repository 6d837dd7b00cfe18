"""Milliseconds per submanifold convolution of the torch backend's two algorithms side by side on
the CPU: the gathered GEMM (its GPU path) and tap by tap (its CPU path), on the surface voxels of a
procedural object (a CFG pair of them, as the latent flow's input blocks see), 3^3 kernel.

    python scripts/sparse_conv_cpu_bench.py [--kind table] [--resolution 32] [--channels 64,128,256] [--reps 5]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis_impl.backends.sparse_conv import _conv_gathered, _conv_tap_pairs, build_neighbour_map  # noqa: E402
from trellis_impl.pipelines.voxelize import voxelize_mesh  # noqa: E402
from trellis_impl.training.procedural import procedural_object  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kind", default="table")
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--channels", default="64,128,256")
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    mesh = procedural_object(args.kind, 9)
    voxels = voxelize_mesh(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32),
                           torch.as_tensor(np.asarray(mesh.faces)), args.resolution).int()
    coords = torch.cat([torch.cat([torch.full((len(voxels), 1), b, dtype=torch.int32), voxels], 1) for b in (0, 1)])
    neighbours = build_neighbour_map(coords, 3)
    present = float((neighbours.table < coords.shape[0]).sum(1).float().mean())
    print(f"{coords.shape[0]} voxels ({args.kind} at {args.resolution}^3, two items), {present:.1f} of 27 "
          f"neighbours present on average, {torch.get_num_threads()} threads")
    g = torch.Generator().manual_seed(0)
    for channels in (int(c) for c in args.channels.split(",")):
        feats = torch.randn(coords.shape[0], channels, generator=g)
        weight = torch.randn(channels, 3, 3, 3, channels, generator=g) * 0.05
        bias = torch.randn(channels, generator=g)
        times, outs = {}, {}
        for name, conv in (("gathered", _conv_gathered), ("tap by tap", _conv_tap_pairs)):
            outs[name] = conv(feats, neighbours, weight, bias)  # warm-up (and the tap lists, cached)
            started = time.perf_counter()
            for _ in range(args.reps):
                conv(feats, neighbours, weight, bias)
            times[name] = (time.perf_counter() - started) / args.reps * 1000
        diff = float((outs["gathered"] - outs["tap by tap"]).abs().max())
        print(f"C {channels:4d}: gathered {times['gathered']:7.1f} ms, tap by tap {times['tap by tap']:7.1f} ms "
              f"({times['gathered'] / times['tap by tap']:.2f}x), max difference {diff:.1e}")


if __name__ == "__main__":
    main()
