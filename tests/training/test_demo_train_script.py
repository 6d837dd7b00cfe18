"""scripts/demo_train.sh on the CPU, the steps that decide what a device call brings back when a
run fails: ``par`` goes on after a failed step, ``pick`` and ``export`` leave out a run without a
log or checkpoint (the restored folder stands in)."""
from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def demo_train(work: Path, *steps: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "WORK": str(work), "OUT": str(work / "out"), "BUDGET": "100"}
    return subprocess.run(["bash", str(REPO / "scripts" / "demo_train.sh"), *steps], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)


def test_a_failed_parallel_step_does_not_end_the_call(tmp_path):
    done = demo_train(tmp_path, "par train:no_such_run:0.1 train:nor_this_one:0.1")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "a parallel step failed" in done.stdout and done.stdout.rstrip().endswith("done")


def test_pick_and_export_leave_out_a_run_that_failed(tmp_path):
    from trellis_impl.pipelines import write_random_model_folder
    write_random_model_folder(tmp_path / "prev")
    runs = tmp_path / "runs"
    (runs / "trained").mkdir(parents=True)
    (runs / "trained" / "log.jsonl").write_text("\n".join(json.dumps({"step": s, "loss": 0.5}) for s in (1, 2, 3)))
    (runs / "failed").mkdir()  # a run that died before its first log and checkpoint
    done = demo_train(tmp_path, "pick:best:trained,failed", "export:demo:failed")
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert os.readlink(runs / "best") == "trained"
    assert "export: failed has no checkpoint, left out" in done.stdout
    exported = json.loads((tmp_path / "demo" / "pipeline.json").read_text())
    assert exported == json.loads((tmp_path / "prev" / "pipeline.json").read_text())  # the restored folder stands in


def test_a_latent_flow_that_goes_on_keeps_its_normalisation(tmp_path):
    """A SLat flow resumed from the restored folder trains with that folder's latent normalisation,
    not 'auto' recomputed over the session's new objects; a new one (':new') computes it."""
    from trellis_impl.pipelines import write_random_model_folder
    prev = write_random_model_folder(tmp_path / "prev")
    pipeline = json.loads((prev / "pipeline.json").read_text())
    restored = {"mean": [0.5] * 8, "std": [2.0] * 8}
    pipeline["args"]["slat_normalization"] = restored
    (prev / "pipeline.json").write_text(json.dumps(pipeline))
    name = json.loads((REPO / "configs" / "training" / "demo" / "slat_flow.json").read_text())["export"]["denoiser"]
    (prev / "ckpts" / f"{name}.json").write_text("{}")  # the restored folder has this stage
    (tmp_path / "vit").mkdir()
    for fresh, expected in (("", restored), (":new", "auto")):
        done = demo_train(tmp_path, f"train:slat_flow:0.01:60{fresh}")  # no data here: the run itself fails
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        config = json.loads((tmp_path / "configs" / "slat_flow.json").read_text())
        assert config["data"]["normalization"] == expected
        assert ("init" in config) == (fresh == "")
