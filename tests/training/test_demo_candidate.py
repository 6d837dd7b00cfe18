"""scripts/demo_candidate_update.py: a device call's packed folder merged into a training candidate,
its run logs into the committed log folder (docs/demo_model.md)."""
from __future__ import annotations

import importlib.util
import json
import tarfile
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[2] / "scripts" / "demo_candidate_update.py"


@pytest.fixture(scope="module")
def update():
    spec = importlib.util.spec_from_file_location("demo_candidate_update", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pack(tmp: Path, name: str, models: dict, files: dict, logs: dict) -> Path:
    """A device call's output: demo/ (pipeline.json, files, logs) as tar parts of 4 KiB."""
    folder = tmp / f"{name}_src" / "demo"
    for path, text in {**files, **{f"logs/{k}.jsonl": v for k, v in logs.items()}}.items():
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        (folder / path).write_text(text)
    (folder / "pipeline.json").write_text(json.dumps({"name": "TrellisImageTo3DPipeline",
                                                      "args": {"models": models, "note": name}}))
    out = tmp / name
    out.mkdir()
    with tarfile.open(tmp / f"{name}.tar", "w") as tar:
        tar.add(folder, arcname="demo")
    data = (tmp / f"{name}.tar").read_bytes()
    for k in range(0, len(data), 4096):
        (out / f"demo.tar.part{k // 4096:02d}").write_bytes(data[k:k + 4096])
    assert len(list(out.iterdir())) > 1
    return out


def test_sessions_merge_into_the_candidate(update, tmp_path):
    candidate = tmp_path / "models" / "demo_candidate"
    logs = tmp_path / "docs" / "demo_logs"
    first = _pack(tmp_path, "first", {"sparse_structure_decoder": "ckpts/ss_dec_conv3d_8l8_demo",
                                      "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_S_8l8_demo"},
                  {"ckpts/ss_dec_conv3d_8l8_demo.json": "dec1", "ckpts/ss_enc_conv3d_8l8_demo.json": "enc1",
                   "ckpts/ss_flow_img_dit_S_8l8_demo.json": "flow1", "dinov2/config.json": "vit1"},
                  {"ss_vae": "a", "ss_flow": "b"})
    assert update.main([str(first), "--session", "s1", "--drop", "ss_flow", "--candidate", str(candidate), "--logs", str(logs)]) == 0
    pipeline = json.loads((candidate / "pipeline.json").read_text())
    assert pipeline["args"]["models"] == {"sparse_structure_decoder": "ckpts/ss_dec_conv3d_8l8_demo"}
    assert sorted(p.name for p in (candidate / "ckpts").iterdir()) == ["ss_dec_conv3d_8l8_demo.json",
                                                                       "ss_enc_conv3d_8l8_demo.json"]
    assert [p.name for p in (logs / "s1").iterdir()] == ["ss_vae.jsonl"]
    assert not (candidate / "logs").exists()  # logs are committed apart from the weights
    (candidate / "README.md").write_text("kept")

    second = _pack(tmp_path, "second", {"sparse_structure_flow_model": "ckpts/ss_flow_img_dit_S_8l8_demo"},
                   {"ckpts/ss_flow_img_dit_S_8l8_demo.json": "flow2"}, {"ss_flow": "c"})
    update.main([str(second), "--session", "s2", "--candidate", str(candidate), "--logs", str(logs)])
    pipeline = json.loads((candidate / "pipeline.json").read_text())
    assert pipeline["args"]["models"] == {"sparse_structure_decoder": "ckpts/ss_dec_conv3d_8l8_demo",
                                          "sparse_structure_flow_model": "ckpts/ss_flow_img_dit_S_8l8_demo"}
    assert pipeline["args"]["note"] == "second"
    assert (candidate / "ckpts" / "ss_flow_img_dit_S_8l8_demo.json").read_text() == "flow2"
    assert (candidate / "ckpts" / "ss_dec_conv3d_8l8_demo.json").read_text() == "dec1"
    assert (candidate / "dinov2" / "config.json").read_text() == "vit1"
    assert (candidate / "README.md").read_text() == "kept"
    assert (logs / "s1" / "ss_vae.jsonl").read_text() == "a"
    assert (logs / "s2" / "ss_flow.jsonl").read_text() == "c"

    # a reused session name, a bad one, an unknown run: refused, the candidate unchanged
    before = {p: p.read_bytes() for root in (candidate, logs) for p in root.rglob("*") if p.is_file()}
    with pytest.raises(FileExistsError, match="s2 exists"):
        update.main([str(second), "--session", "s2", "--candidate", str(candidate), "--logs", str(logs)])
    with pytest.raises(ValueError, match="--session must be a plain folder name"):
        update.main([str(second), "--session", "../x", "--candidate", str(candidate), "--logs", str(logs)])
    with pytest.raises(ValueError, match="--drop names a run without a demo config"):
        update.main([str(second), "--session", "s3", "--drop", "nothing", "--candidate", str(candidate), "--logs", str(logs)])
    with pytest.raises(FileNotFoundError, match="no demo.tar.partNN"):
        update.main([str(tmp_path), "--session", "s3", "--candidate", str(candidate), "--logs", str(logs)])
    assert {p: p.read_bytes() for root in (candidate, logs) for p in root.rglob("*") if p.is_file()} == before
    # no temporary left behind
    assert [p.name for p in candidate.parent.iterdir()] == ["demo_candidate"]
    assert sorted(p.name for p in logs.iterdir()) == ["s1", "s2"]


def test_the_command_line_refuses_in_one_line(tmp_path):
    import subprocess
    import sys
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path), "--session", "s1", "--candidate",
                           str(tmp_path / "candidate"), "--logs", str(tmp_path / "logs")], capture_output=True, text=True)
    assert done.returncode != 0
    assert done.stderr.strip().splitlines() == [f"demo_candidate_update: {tmp_path}: no demo.tar.partNN files"]
    assert not (tmp_path / "candidate").exists() and not (tmp_path / "logs").exists()
