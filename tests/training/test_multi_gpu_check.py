"""scripts/multi_gpu_check.py on CPU (gloo, 2 processes, a tiny flow, 2 steps): the three runs, the
figures of the summary, and the two-process checkpoint sampled in a copy of a model folder."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .test_trainer import tiny_config, workspace  # noqa: F401  (the module-scoped fixture)

REPO = Path(__file__).parents[2]


def test_multi_gpu_check_on_cpu(workspace, tmp_path):  # noqa: F811
    from trellis_impl.pipelines import write_random_model_folder
    config = tmp_path / "ss_flow.json"
    raw = tiny_config(workspace, "ss_flow").to_json()
    raw["frozen"]["image_encoder"] = "placeholder: --image-encoder fills it"
    config.write_text(json.dumps(raw))
    base = write_random_model_folder(tmp_path / "base")
    out = tmp_path / "check"
    done = subprocess.run([sys.executable, str(REPO / "scripts" / "multi_gpu_check.py"), str(config), "--data",
                           str(workspace["data"]), "--out", str(out), "--steps", "2", "--global-batch", "2",
                           "--device", "cpu", "--log-every", "1", "--image-encoder", str(workspace["dinov2"]), "--base-folder", str(base), "--sample-devices", "cpu"],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    entry = json.loads((out / "summary.json").read_text())["ss_flow"]
    assert [step for step, _ in entry["losses"]["many"]] == [1, 2] == [step for step, _ in entry["losses"]["one"]]
    # two processes on half batches take the one-process step: the same losses up to float sums
    assert entry["gap_many_to_one"] < 1e-4 < entry["gap_seed_to_one"]
    assert entry["throughput_ratio"] > 0
    assert entry["sampling"]["cpu"]["returncode"] == 0, entry["sampling"]["cpu"]["tail"]
    assert any(name.endswith(".ply") for name in entry["sampling"]["cpu"]["files"])


def test_bad_arguments_are_refused_in_one_line(workspace, tmp_path):  # noqa: F811
    script = [sys.executable, str(REPO / "scripts" / "multi_gpu_check.py")]
    existing = tmp_path / "exists"
    existing.mkdir()
    cases = {"not a multiple of --gpus": ["c.json", "--data", str(workspace["data"]), "--out", str(tmp_path / "a"),
                                          "--global-batch", "3"],
             "exists; name a new folder": ["c.json", "--data", str(workspace["data"]), "--out", str(existing),
                                           "--global-batch", "2"],
             "no such file": [str(tmp_path / "missing.json"), "--data", str(workspace["data"]), "--out",
                              str(tmp_path / "b"), "--global-batch", "2"]}
    for message, args in cases.items():
        done = subprocess.run(script + args, cwd=REPO, capture_output=True, text=True)
        assert done.returncode != 0 and message in done.stderr and done.stderr.strip().count("\n") == 0, done.stderr
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
