"""The whole image -> GLB job under a GPU memory cap that counts the CUDA context (docs/gpu.md).

Released architectures with random weights (the folder ``scripts/benchmark.py`` writes), a random
DINOv2 ViT-L/14 reg4, a 518 px image: condition, stage 1, stage 2 on the benchmark's
19,688-voxel shell, Gaussians + mesh, GLB export with a 1024 texture (fast bake). Each
configuration runs in its own process with ``torch.cuda.set_per_process_memory_fraction`` set to
the cap minus that process's CUDA context; prints, per configuration, whether the job finished, the
stage that ran out of memory otherwise, and the peak (allocator reserve + context). Runs: no cap
(all resident, and low-VRAM), then each cap in the low-VRAM mode, with PyTorch's default caching
allocator and with expandable segments (``PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True``, which
keeps freed blocks reusable for larger requests). The parent process never touches the GPU: the
context figure assumes this process is alone on the device.

    python scripts/memory_cap.py [--weights DIR] [--caps 6 4]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from benchmark import SEED, context_gib, write_inputs  # noqa: E402
from device_bench import random_dinov2  # noqa: E402

DEFAULT_WEIGHTS = Path(tempfile.gettempdir()) / "trellis_bench" / "TRELLIS-image-large"
ALLOCATORS = ["", "expandable_segments:True"]  # PyTorch's default, and expandable segments


def job(weights: Path, cap_gib: float, low_vram: bool) -> dict:
    from trellis_impl.export.glb_export import to_glb
    from trellis_impl.pipelines import ImageTo3DPipeline, ModelFolder
    from trellis_impl.pipelines.generation import Noise, Structure

    torch.zeros(1, device="cuda")
    context = context_gib()
    total = torch.cuda.get_device_properties(0).total_memory
    if cap_gib:
        torch.cuda.set_per_process_memory_fraction(max((cap_gib - context) * 2 ** 30 / total, 1e-3))
    inputs = torch.load(weights / "inputs.pt")
    folder = ModelFolder(weights, device="cuda", offload=low_vram)
    encoder = random_dinov2(torch.Generator().manual_seed(0)).to("cpu" if folder.offload else "cuda")
    pipeline = ImageTo3DPipeline(folder, encoder, batch_cfg=True)
    image = torch.rand(1, 3, 518, 518, generator=torch.Generator().manual_seed(1))
    stage, times = "load", {}
    out = Path(tempfile.mkdtemp()) / "asset.glb"
    try:
        start = time.perf_counter()
        stage = "condition"
        cond = pipeline.get_cond(image)
        noise = Noise(SEED)
        stage = "structure"
        pipeline.sample_structure(cond, noise)
        stage = "latent"
        slat = pipeline.sample_latents(cond, Structure(inputs["job_shell"].cuda(), 1, pipeline.resolution), noise)
        stage = "decode"
        decoded = pipeline.decode(slat, ["gaussian", "mesh"])
        stage = "glb"
        to_glb(out, decoded["mesh"][0], decoded["gaussian"][0], texture_size=1024, bake="fast")
        torch.cuda.synchronize()
        times["job"] = time.perf_counter() - start
        finished, failed = True, None
    except torch.OutOfMemoryError as e:
        finished, failed = False, f"{stage}: {str(e).splitlines()[0][:200]}"
    return {"device": torch.cuda.get_device_name(), "cap_gib": cap_gib, "low_vram": low_vram, "finished": finished, "out_of_memory_in": failed,
            "context_gib": context, "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2 ** 30,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "peak_with_context_gib": torch.cuda.max_memory_reserved() / 2 ** 30 + context, **times}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    parser.add_argument("--caps", type=float, nargs="+", default=[6.0, 4.0], help="caps in GiB, context included")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    weights = Path(args.weights)
    if args.child == "inputs":
        write_inputs(weights)
        return 0
    if args.child:
        cap, low_vram = json.loads(args.child)
        print(json.dumps(job(weights, cap, low_vram)))
        return 0

    def child(spec: str, allocator: str = "") -> subprocess.CompletedProcess:
        env = dict(os.environ)
        if allocator:
            env["PYTORCH_CUDA_ALLOC_CONF"] = allocator
        return subprocess.run([sys.executable, __file__, "--weights", str(weights), "--child", spec],
                              capture_output=True, text=True, env=env)

    done = child("inputs")
    if done.returncode != 0:
        print(done.stderr[-3000:])
        return 1
    rows = []
    # uncapped (the peaks), then each cap in the low-VRAM mode (the mode the caps are for)
    configs = [(0, False, ""), (0, True, "")] + [(c, True, a) for c in args.caps for a in ALLOCATORS]
    for cap, low_vram, allocator in configs:
        done = child(json.dumps([cap, low_vram]), allocator)
        if done.returncode != 0:
            print(f"cap {cap} low_vram {low_vram} allocator '{allocator}' failed:\n{done.stderr[-3000:]}")
            continue
        rows.append({**json.loads(done.stdout.strip().splitlines()[-1]), "allocator": allocator or "default"})
    print(rows[0]["device"] if rows else "no run finished")
    print("| cap (GiB, context counted) | mode | allocator | finished | peak reserved + context | peak allocated | job |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['cap_gib'] or 'none'} | {'low-VRAM' if r['low_vram'] else 'all resident'} | {r['allocator']} | "
              f"{'yes' if r['finished'] else 'no: ' + r['out_of_memory_in']} | {r['peak_with_context_gib']:.2f} GiB | "
              f"{r['peak_allocated_gib']:.2f} GiB | {r.get('job', float('nan')):.2f} s |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
