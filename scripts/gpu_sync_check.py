"""Where the flows' forward passes wait for the GPU (host synchronisations), the obstacle to CUDA
graphs (docs/gpu.md, "Speed and memory").

The released structure and latent flows (random weights, float16 torso) run once on a fixed input
(the latent flow on the benchmark's 19,688-voxel shell, so its per-coordinate-set caches fill), then
again under ``torch.cuda.set_sync_debug_mode('warn')``: every synchronising call of the second
forward is reported with the project source line that made it.

    python scripts/gpu_sync_check.py
"""
from __future__ import annotations

import collections
import sys
import traceback
import warnings
from pathlib import Path

import torch

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE.parent), str(HERE)]

from benchmark import JOB_SHELL  # noqa: E402
from device_bench import random_released_model, sphere_shell  # noqa: E402
from trellis_impl.sparse import SparseTensor  # noqa: E402

FLOWS = {"structure flow": "ckpts/ss_flow_img_dit_L_16l8_fp16", "latent flow": "ckpts/slat_flow_img_dit_L_64l8p2_fp16"}


def _project_frame(stack) -> str:
    """The innermost frame in trellis_impl: 'file:line code'."""
    for frame in reversed(stack):
        if "trellis_impl" in frame.filename:
            return f"{frame.filename.split('trellis_impl')[-1]}:{frame.lineno} {frame.line}"
    return "(outside trellis_impl)"


def main() -> int:
    generator = torch.Generator(device="cuda").manual_seed(0)
    cond = torch.randn(2, 1374, 1024, device="cuda", generator=generator)
    t = torch.full((2,), 800.0, device="cuda")
    print(torch.cuda.get_device_name(), torch.__version__)
    for label, rel in FLOWS.items():
        model = random_released_model(rel, generator)
        if label == "structure flow":
            x = torch.randn(2, 8, 16, 16, 16, device="cuda", generator=generator)
        else:
            coords = sphere_shell(inner=JOB_SHELL[0], outer=JOB_SHELL[1])
            coords = torch.cat([coords, coords.clone().index_fill_(1, torch.tensor([0], device="cuda"), 1)])
            x = SparseTensor(torch.randn(coords.shape[0], 8, device="cuda", generator=generator), coords,
                             batch_size=2)
        with torch.no_grad():
            model(x, t, cond)  # fills the per-coordinate-set caches
            torch.cuda.synchronize()
            sites = collections.Counter()

            def record(*_args, **_kwargs):  # called at the warning's site: the stack shows who synced
                sites[_project_frame(traceback.extract_stack())] += 1
            with warnings.catch_warnings():
                warnings.simplefilter("always")
                warnings.showwarning = record
                torch.cuda.set_sync_debug_mode("warn")
                try:
                    model(x, t, cond)
                finally:
                    torch.cuda.set_sync_debug_mode("default")
        print(f"\n{label}: {sum(sites.values())} synchronising calls in the second forward")
        for site, count in sites.most_common(20):
            print(f"  {count:4d}  {site}")
        del model
        torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    sys.exit(main())
