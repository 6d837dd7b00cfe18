"""The demo tools added for the device runs refuse bad arguments in one stderr line, before any
model loads, and write nothing: demo_quality.py (earlier figures are never overwritten),
demo_step_profile.py --apply and window_attention_bench.py."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


def refused(script: str, *arguments: str) -> str:
    done = subprocess.run([sys.executable, str(REPO / "scripts" / script), *arguments], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip().count("\n") == 0, done.stderr
    return done.stderr


def test_demo_quality_never_overwrites_and_checks_its_numbers(tmp_path):
    out = tmp_path / "quality"
    out.mkdir()
    (out / "structure.json").write_text("{}")
    assert "already holds structure.json" in refused("demo_quality.py", "--model", str(tmp_path), "--out", str(out),
                                                     "--structure")
    assert (out / "structure.json").read_text() == "{}" and not (out / "structures.png").exists()
    assert "is not a model folder" in refused("demo_quality.py", "--model", str(tmp_path / "none"), "--out",
                                              str(tmp_path / "new"))
    for option in ("--objects", "--ceiling"):
        assert f"{option} must be >= 1" in refused("demo_quality.py", "--model", str(tmp_path), "--out",
                                                   str(tmp_path / "new"), option, "0")
    assert "--meshes: mesh file not found: " + str(tmp_path / "none.obj") in refused(
        "demo_quality.py", "--model", str(tmp_path), "--out", str(tmp_path / "new"), "--meshes", str(tmp_path / "none.obj"))
    (tmp_path / "picture.png").write_bytes(b"png")
    assert "--meshes: " + str(tmp_path / "picture.png") + ": unsupported mesh format '.png'" in refused(
        "demo_quality.py", "--model", str(tmp_path), "--out", str(tmp_path / "new"), "--meshes", str(tmp_path / "picture.png"))
    assert "not --structure" in refused("demo_quality.py", "--model", str(tmp_path), "--out", str(tmp_path / "new"),
                                        "--meshes", str(tmp_path / "none.obj"), "--structure")
    assert not (tmp_path / "new").exists()


def test_demo_step_profile_apply_refuses_a_missing_or_empty_profile(tmp_path):
    config = tmp_path / "config.json"
    config.write_text(json.dumps({"trainer": {"mixed_precision": "none", "batch_size_per_gpu": 16}}))
    before = config.read_text()
    assert "--apply needs a profile" in refused("demo_step_profile.py", str(config), "--apply", str(tmp_path / "none.json"))
    empty = tmp_path / "empty.json"
    empty.write_text(json.dumps({"rows": []}))
    assert "no measured variant" in refused("demo_step_profile.py", str(config), "--apply", str(empty))
    assert "--min-gain must be > 0" in refused("demo_step_profile.py", str(config), "--apply", str(empty),
                                               "--min-gain", "0")
    assert config.read_text() == before


@pytest.mark.parametrize("ratios", ["0.5,2", "two"])
def test_window_bench_refuses_ratios_that_are_not_above_one(ratios):
    assert "--ratios must be numbers > 1" in refused("window_attention_bench.py", "--ratios", ratios)
