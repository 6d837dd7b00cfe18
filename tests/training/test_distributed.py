"""Two processes under torchrun (gloo on CPU) take exactly the step one process takes on the
doubled batch: same samples, same per-sample noise, gradients averaged by DDP."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file

from .test_trainer import tiny_config, workspace  # noqa: F401  (the module-scoped fixture)

REPO = Path(__file__).parents[2]


def _train(config_path: Path, data: Path, run: Path, processes: int) -> None:
    launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"] \
        if processes > 1 else [sys.executable]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    result = subprocess.run(launcher + ["-m", "trellis_impl", "train", str(config_path), "--data", str(data),
                                        "--out", str(run), "--device", "cpu"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-4000:]


def test_two_process_step_equals_the_doubled_batch(workspace, tmp_path):  # noqa: F811
    weights = {}
    for processes, batch in ((2, 1), (1, 2)):
        config = tiny_config(workspace, "ss_flow", max_steps=1, batch_size_per_gpu=batch,
                             optimizer={"name": "SGD", "args": {"lr": 0.5}}, grad_clip=None).to_json()
        path = tmp_path / f"config_{processes}.json"
        path.write_text(json.dumps(config))
        run = tmp_path / f"run_{processes}"
        _train(path, workspace["data"], run, processes)
        weights[processes] = load_file(str(run / "checkpoints" / "step_0000001" / "models.safetensors"))
    moved = 0
    for key, single in weights[1].items():
        assert torch.allclose(weights[2][key], single, rtol=1e-5, atol=1e-7), key
        moved += int(key.startswith("denoiser.out_layer") and bool(single.abs().max() > 0))
    assert moved, "the zero-initialised output layer should have moved in the SGD step"
