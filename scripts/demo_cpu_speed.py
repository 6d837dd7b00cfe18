"""CPU time of the README's main command on the demo model's architecture (configs/training/demo/),
before or without the trained weights: a model folder of those sizes with random weights (as
``random-folder`` writes them), then ``python -m trellis_impl image`` on it, timed per stage.

    python scripts/demo_cpu_speed.py [--image assets/example.png] [--keep FOLDER]

The target (issue 12): under 60 s on an idle 2-core CPU, GLB included. Generation time does not
depend on the weights' values except through the number of active voxels, which random weights
do not control: the structure decoder's output bias is set so that about ``--occupancy`` of the
32^3 grid is active, as the procedural objects (2,380 voxels on average, 7%).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from trellis_impl.conditioning import save_dinov2  # noqa: E402
from trellis_impl.pipelines.random_folder import randomise_weights, target_occupancy  # noqa: E402
from trellis_impl.training.config import load_config  # noqa: E402
from trellis_impl.training.export import SAMPLER_DEFAULTS, write_checkpoint  # noqa: E402
from trellis_impl.training.stages import STAGES  # noqa: E402
from trellis_impl.training.stages.encoder_distill import DistillStudent  # noqa: E402


def write_initial_demo_folder(out: Path, occupancy: float) -> Path:
    from trellis_impl.models import build_model
    generator = torch.Generator().manual_seed(0)
    models = {}
    (out / "ckpts").mkdir(parents=True)
    for path in sorted((REPO / "configs" / "training" / "demo").glob("*.json")):
        config = load_config(path)
        stage = STAGES[config.stage]
        for role, spec in config.models.items():
            if config.stage == "vit_distill":
                save_dinov2(DistillStudent(**spec["args"]).vit, out / "dinov2", dtype=torch.float16)
                continue
            model = build_model(spec["name"], **spec["args"]).float()
            randomise_weights(model, generator)  # as the random folders: bounded activations, non-trivial outputs
            if config.stage == "ss_vae" and role == "decoder":
                target_occupancy(model, generator, occupancy)
            write_checkpoint(out / "ckpts" / config.export[role], spec, model.state_dict(), torch.float16)
            key = stage.pipeline_keys.get(role)
            if key:
                models[key] = f"ckpts/{config.export[role]}"
    pipeline = {"name": "TrellisImageTo3DPipeline",
                "args": {"models": models, "sparse_structure_sampler": SAMPLER_DEFAULTS, "slat_sampler": SAMPLER_DEFAULTS,
                         "slat_normalization": {"mean": [0.0] * 8, "std": [1.0] * 8},
                         "image_cond_model": "demo ViT-S/14-reg4 192x6"}}
    (out / "pipeline.json").write_text(json.dumps(pipeline, indent=4))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=str(REPO / "assets" / "example.png"))
    parser.add_argument("--occupancy", type=float, default=0.07)
    parser.add_argument("--keep", default=None, help="write the folder here and keep it")
    args = parser.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp()) / "demo-initial"
    folder = write_initial_demo_folder(root, args.occupancy)
    out = Path(tempfile.mkdtemp())
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "trellis_impl", "image", args.image, "--model", str(folder), "--out", str(out)],
                   check=True, cwd=REPO)
    print(f"total wall time {time.perf_counter() - start:.1f} s (process start and model loading included)")


if __name__ == "__main__":
    main()
