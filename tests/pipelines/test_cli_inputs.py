"""Bad input on the command line: refused before any model loads, in one line naming the option
and what is allowed, with nothing written; a run's files named as one set."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image

from trellis_impl.cli import run as cli_run
from trellis_impl.pipelines import write_random_model_folder


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli_inputs")
    folder = write_random_model_folder(root / "model")
    image = Image.new("RGBA", (96, 80))
    image.paste((200, 80, 60, 255), (30, 20, 70, 60))
    image.save(root / "ok.png")
    (root / "not_an_image.png").write_text("hello")
    (root / "empty.png").write_bytes(b"")
    (root / "folder.png").mkdir()
    (root / "truncated.png").write_bytes((root / "ok.png").read_bytes()[:60])
    (root / "a_file").write_text("x")
    return root, folder


CASES = [
    (["not_an_image.png"], "image .*not_an_image.png: not a readable image"),
    (["empty.png"], "image .*empty.png: the file is empty"),
    (["folder.png"], "image .*folder.png: is a folder"),
    (["missing.png"], "image .*missing.png: no such file"),
    (["truncated.png"], "image .*truncated.png: not a readable image"),
    (["ok.png", "--texture-size", "100000"], r"texture_size must be an integer in \[512, 4096\]"),
    (["ok.png", "--simplify", "1.0"], r"simplify .* must be in \[0, 1\)"),
    (["ok.png", "--latent-steps", "0"], r"--latent steps must be an integer in \[1, 1000\]"),
    (["ok.png", "--num-samples", "0"], r"--num-samples must be an integer in \[1, 64\]"),
    (["ok.png", "--step-cache", "0"], r"--step-cache must be an integer in \[1, 50\]"),
    (["ok.png", "--seed", str(2 ** 64)], r"--seed must be an integer in \[0, 2\^64 - 1\]"),
    (["ok.png", "--structure-cfg-interval", "0.8", "0.2"], "CFG interval must be LOW HIGH"),
    (["ok.png", "--out", "{root}/a_file"], "--out .*a_file: is a file; give a folder"),
    (["ok.png", "--formats", "gaussian", "--files", "glb"], r"files glb \(needs mesh\) cannot be made"),
    (["ok.png", "--mask", "not_an_image.png"], "--mask .*not_an_image.png: not a readable image"),
]


@pytest.mark.parametrize("extra, message", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_bad_input_is_refused_before_any_model_runs(setup, tmp_path, extra, message, monkeypatch):
    root, folder = setup
    monkeypatch.chdir(root)
    import trellis_impl.pipelines.image_and_text as image_and_text
    monkeypatch.setattr(image_and_text, "open_model_folder", lambda *a, **k: pytest.fail("a model was opened"))
    argv = ["image", *[e.format(root=root) for e in extra], "--model", str(folder)]
    if "--out" not in extra:
        argv += ["--out", str(tmp_path / "out")]
    with pytest.raises(ValueError, match=message):
        cli_run(argv)
    assert not (tmp_path / "out").exists()


def test_device_without_cuda_is_refused(setup, tmp_path, monkeypatch):
    root, folder = setup
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="--device cuda: (this torch is a CPU build|no GPU is visible); use --device cpu"):
        cli_run(["image", str(root / "ok.png"), "--model", str(folder), "--device", "cuda", "--out", str(tmp_path)])


def test_a_runs_files_share_one_name(setup, tmp_path):
    root, folder = setup
    out = tmp_path / "out"
    out.mkdir()
    (out / "thing.glb").write_bytes(b"from another run")  # only one of the names is taken
    argv = ["image", str(root / "ok.png"), "--model", str(folder), "--out", str(out), "--name", "thing",
            "--structure-steps", "2", "--latent-steps", "2", "--formats", "gaussian", "--files", "ply", "spz", "slat"]
    assert cli_run(argv) == 0
    assert sorted(p.name for p in out.iterdir()) == ["thing.glb", "thing_1.spz", "thing_1_gaussians.ply",
                                                     "thing_1_slat.safetensors"]
    assert (out / "thing.glb").read_bytes() == b"from another run"


def test_ctrl_c_is_one_line(setup, tmp_path, monkeypatch, capsys):
    import trellis_impl.cli as cli

    def interrupted(argv=None):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "run", interrupted)
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    assert exit_info.value.code == 130 and capsys.readouterr().err == "interrupted\n"


@pytest.mark.parametrize("damage", ["truncated", "missing", "bad_json", "wrong_shape"])
def test_a_damaged_late_checkpoint_fails_before_sampling(setup, tmp_path, damage, monkeypatch):
    """The mesh decoder is used last; its damage is found when the folder opens."""
    import json
    import shutil
    from safetensors.torch import save_file
    root, folder = setup
    broken = tmp_path / "model"
    shutil.copytree(folder, broken)
    base = broken / json.loads((broken / "pipeline.json").read_text())["args"]["models"]["slat_decoder_mesh"]
    weights, config = Path(f"{base}.safetensors"), Path(f"{base}.json")
    if damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "missing":
        weights.unlink()
    elif damage == "bad_json":
        config.write_text("{not json")
    else:
        save_file({"out_layer.weight": torch.zeros(3, 3)}, str(weights))
    from trellis_impl.sampling import flow_euler
    monkeypatch.setattr(flow_euler.FlowEulerSampler, "_model_call", lambda *a, **k: pytest.fail("sampling started"))
    with pytest.raises(ValueError, match=base.name):
        cli_run(["image", str(root / "ok.png"), "--model", str(broken), "--out", str(tmp_path / "out")])
    assert not (tmp_path / "out").exists()
