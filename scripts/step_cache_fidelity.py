"""How far the step cache moves a trained structure flow's samples (docs/gpu.md, "Step cache").

For held-out procedural objects (their front pictures as conditions) and two seeds each, the
structure is sampled with the model folder's released schedule, uncached and with each step-cache
setting; prints the voxel IoU of each cached structure against the uncached one and the model runs
per flow.

    python scripts/step_cache_fidelity.py --model FOLDER [--objects 4] [--configs 2,1,2 3,1,2 ...]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from trellis_impl.conditioning import preprocess_image  # noqa: E402
from trellis_impl.evaluation import front_camera, picture_of_mesh, textured_procedural_object  # noqa: E402
from trellis_impl.pipelines import ImageTo3DPipeline  # noqa: E402
from trellis_impl.pipelines.generation import Noise  # noqa: E402
from trellis_impl.sampling.flow_euler import time_schedule  # noqa: E402
from trellis_impl.sampling.step_cache import StepCache  # noqa: E402
from trellis_impl.training.procedural import object_plan  # noqa: E402

DEFAULT_CONFIGS = ["2,2,2", "2,1,2", "3,1,6", "4,1,8", "3,1,4", "4,1,6", "4,1,4", "3,1,2", "5,1,6", "3,2,2", "4,2,4"]


def voxels(structure) -> set:
    return {tuple(c) for c in structure.coords[:, 1:].tolist()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True, help="image model folder")
    parser.add_argument("--objects", type=int, default=4, help="held-out objects (two seeds each)")
    parser.add_argument("--configs", nargs="+", default=DEFAULT_CONFIGS, help="interval,order,warmup settings")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    pipeline = ImageTo3DPipeline.from_folder(args.model, device=args.device)
    params = pipeline.sampler_params("sparse_structure_sampler")
    low, high = params.get("cfg_interval", (0.0, 1.0))
    times = [t for t, _ in time_schedule(params["steps"], params.get("rescale_t", 1.0))]
    switches = tuple(i for i in range(1, len(times)) if (low <= times[i] <= high) != (low <= times[i - 1] <= high))
    camera = front_camera(256)
    cases = []
    for kind, seed in object_plan(args.objects, split="held_out"):
        picture = picture_of_mesh(textured_procedural_object(kind, seed), camera, device=args.device)
        pil = Image.fromarray((picture.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().cpu().numpy(), "RGBA")
        cond = pipeline.get_cond([preprocess_image(pil, remover=pipeline.background_remover)])
        for noise_seed in (1, 2):
            cases.append((cond, noise_seed, voxels(pipeline.sample_structure(cond, Noise(noise_seed)))))
    print(f"{len(cases)} structures ({args.objects} objects x 2 seeds), {params['steps']} steps, switches {switches}")
    print("| interval, order, warm-up | model runs | mean IoU | worst IoU |\n|---|---|---|---|")
    for config in args.configs:
        interval, order, warmup = (int(x) for x in config.split(","))
        ious = []
        for cond, noise_seed, reference in cases:
            cache = StepCache(interval=interval, order=order, warmup=warmup)
            cached = voxels(pipeline.sample_structure(cond, Noise(noise_seed), params={"step_cache": cache}))
            ious.append(len(reference & cached) / max(len(reference | cached), 1))
        runs = StepCache(interval=interval, order=order, warmup=warmup).evaluations(params["steps"], switches)
        print(f"| {interval}, {order}, {warmup} | {runs} / {params['steps']} | {sum(ious) / len(ious):.3f} | "
              f"{min(ious):.3f} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
