"""encode_asset, the model folder's SLat encoder and the ``encode`` verb on a small random folder (CPU)."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from meshes import BLUE, RED, coloured_box, textured_quad, write  # noqa: E402

from trellis_impl.cli import run as cli_run
from trellis_impl.encoding import encode_asset, load_textured_mesh
from trellis_impl.export import load_slat_file
from trellis_impl.frames import from_gltf_frame
from trellis_impl.pipelines import ModelFolder, write_random_model_folder
from trellis_impl.pipelines.model_folder import SLAT_ENCODER_KEY, ModelFolderError
from trellis_impl.pipelines.voxelize import voxelize_mesh
from trellis_impl.readers import load_mesh

FAST = dict(num_views=3, resolution=48, supersample=1, batch_size=2)


@pytest.fixture(scope="module", name="folder")
def folder_fixture(tmp_path_factory):
    return write_random_model_folder(tmp_path_factory.mktemp("encode") / "image")


@pytest.fixture(scope="module", name="meshes")
def meshes_fixture(tmp_path_factory):
    root = tmp_path_factory.mktemp("meshes")
    return {"red": write(coloured_box(RED), root / "red.ply"), "blue": write(coloured_box(BLUE), root / "blue.ply"),
            "quad": write(textured_quad(), root / "quad.glb")}


def test_folder_finds_the_slat_encoder(folder, tmp_path):
    model_folder = ModelFolder(folder)
    assert model_folder.checkpoint_path(SLAT_ENCODER_KEY) == folder / "ckpts" / "slat_enc_random"
    assert model_folder.model(SLAT_ENCODER_KEY).in_channels == 48
    # listed under args.models it is taken from there
    listed = shutil.copytree(folder, tmp_path / "listed")
    (listed / "ckpts" / "slat_enc_random.json").rename(listed / "ckpts" / "my_encoder.json")
    (listed / "ckpts" / "slat_enc_random.safetensors").rename(listed / "ckpts" / "my_encoder.safetensors")
    with pytest.raises(ModelFolderError, match="no SLat encoder"):
        ModelFolder(listed).checkpoint_path(SLAT_ENCODER_KEY)
    config = json.loads((listed / "pipeline.json").read_text())
    config["args"]["models"][SLAT_ENCODER_KEY] = "ckpts/my_encoder"
    (listed / "pipeline.json").write_text(json.dumps(config))
    assert ModelFolder(listed).missing_files([SLAT_ENCODER_KEY]) == []
    # two candidates and none listed: ambiguous
    shutil.copy(folder / "ckpts" / "slat_enc_random.json", tmp_path / "listed" / "ckpts" / "slat_enc_a.json")
    shutil.copy(folder / "ckpts" / "slat_enc_random.json", tmp_path / "listed" / "ckpts" / "slat_enc_b.json")
    del config["args"]["models"][SLAT_ENCODER_KEY]
    (listed / "pipeline.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="several SLat encoders"):
        ModelFolder(listed).checkpoint_path(SLAT_ENCODER_KEY)


def test_encode_gives_the_voxeliser_structure_and_colour_dependent_latents(folder, meshes):
    calls = []
    red = encode_asset(meshes["red"], folder, **FAST, progress=lambda *a: calls.append(a))
    assert calls == [("views", 2, 3), ("views", 3, 3), ("encoders", 1, 1)]
    expected = voxelize_mesh(*load_mesh(meshes["red"]), resolution=16)
    assert torch.equal(red.coords, expected) and red.coords.dtype == torch.int32
    assert red.feats.shape == (len(expected), 8) and torch.isfinite(red.feats).all()
    assert red.structure_latent.shape == (1, 8, 4, 4, 4)
    assert torch.equal(red.voxel_features, red.voxel_features.half().float())  # stored as float16, as official
    blue = encode_asset(meshes["blue"], folder, **FAST)
    assert torch.equal(blue.coords, red.coords) and torch.equal(blue.structure_latent, red.structure_latent)
    assert (blue.feats - red.feats).abs().max() > 1e-2  # same geometry, other colour: other latents
    again = encode_asset(load_textured_mesh(meshes["red"]), folder, **FAST)
    assert torch.equal(again.feats, red.feats)  # deterministic; a loaded mesh = its file
    assert set(red.timings) == {"voxelize", "render", "dinov2", "projection", "slat_encoder", "structure_encoder"}


def test_progress_can_interrupt(folder, meshes):
    class Stop(Exception):
        pass

    def stop(phase, done, total):
        raise Stop

    with pytest.raises(Stop):
        encode_asset(meshes["quad"], folder, **FAST, progress=stop)


def test_bad_arguments(folder, meshes, tmp_path):
    with pytest.raises(ValueError, match="num_views must be an int >= 1"):
        encode_asset(meshes["red"], folder, num_views=0)
    with pytest.raises(ValueError, match="batch_size"):
        encode_asset(meshes["red"], folder, num_views=2, batch_size=0)
    bare = shutil.copytree(folder, tmp_path / "bare")
    for suffix in (".json", ".safetensors"):
        (bare / "ckpts" / f"slat_enc_random{suffix}").unlink()
    with pytest.raises(ModelFolderError, match="no SLat encoder.*slat_enc_swin8_B_64l8_fp16"):
        encode_asset(meshes["red"], bare, **FAST)


def test_cli_encode_then_edit_and_vary(folder, meshes, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["encode", str(meshes["quad"]), "--model", str(folder), "--out", str(out), "--views", "2"]
    assert cli_run(argv) == 0
    written = out / "quad_slat.safetensors"
    assert str(written) in capsys.readouterr().out
    encoded = load_slat_file(written)
    # a .glb is Y up: the command line reads it into the TRELLIS frame, as prepare-data does
    vertices, faces = load_mesh(meshes["quad"])
    assert torch.equal(encoded.coords, voxelize_mesh(from_gltf_frame(vertices), faces, resolution=16))
    assert encoded.feats.shape[1] == 8 and encoded.structure_latent.shape == (1, 8, 4, 4, 4)
    assert cli_run(argv + ["--name", "named"]) == 0 and cli_run(argv) == 0  # never overwritten
    assert sorted(p.name for p in out.iterdir()) == ["named_slat.safetensors", "quad_1_slat.safetensors",
                                                     "quad_slat.safetensors"]
    image = tmp_path / "cond.png"
    from PIL import Image, ImageDraw
    picture = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    ImageDraw.Draw(picture).ellipse((4, 4, 28, 28), fill=(200, 50, 50, 255))
    picture.save(image)
    steps = ["--structure-steps", "2", "--latent-steps", "2", "--formats", "gaussian", "--files", "slat"]
    assert cli_run(["vary", str(written), "--image", str(image), "--strength", "0.5", "--model", str(folder),
                    "--out", str(tmp_path / "vary"), "--latent-steps", "2", "--formats", "gaussian",
                    "--files", "slat"]) == 0
    assert load_slat_file(tmp_path / "vary" / "quad_variation_slat.safetensors").coords.shape == encoded.coords.shape
    assert cli_run(["edit", str(written), "--image", str(image), "--box", "-0.5", "0.0", "-0.5", "0.5", "0.5", "0.5",
                    "--model", str(folder), "--out", str(tmp_path / "edit"), *steps]) == 0
    assert (tmp_path / "edit" / "quad_edit_slat.safetensors").is_file()


@pytest.mark.parametrize("case", ["missing", "extension", "views", "no_encoder"])
def test_cli_bad_input_writes_nothing(folder, meshes, tmp_path, case, capsys):
    from trellis_impl.cli import main
    mesh, model, views = str(meshes["red"]), str(folder), "2"
    if case == "missing":
        mesh = str(tmp_path / "nothing.obj")
    elif case == "extension":
        mesh = str(tmp_path / "mesh.fbx")
        Path(mesh).write_text("")
    elif case == "views":
        views = "0"
    else:
        model = str(shutil.copytree(folder, tmp_path / "bare"))
        for suffix in (".json", ".safetensors"):
            (Path(model) / "ckpts" / f"slat_enc_random{suffix}").unlink()
    out = tmp_path / "out"
    sys_argv = sys.argv
    sys.argv = ["trellis_impl", "encode", mesh, "--model", model, "--out", str(out), "--views", views]
    try:
        with pytest.raises(SystemExit) as exit_info:
            main()
    finally:
        sys.argv = sys_argv
    assert exit_info.value.code == 2 and not out.exists()
    message = capsys.readouterr().err.strip().splitlines()
    assert len(message) == 1 and message[0].startswith("error: ")
    assert {"missing": "not found", "extension": "unsupported mesh format", "views": "--views",
            "no_encoder": "no SLat encoder"}[case] in message[0]


def test_a_folder_without_a_slat_flow_encodes_on_its_encoders_grid(folder, meshes, tmp_path):
    # a training state: the VAEs are trained, the SLat flow is not yet
    state = shutil.copytree(folder, tmp_path / "state")
    config = json.loads((state / "pipeline.json").read_text())
    flow = config["args"]["models"].pop("slat_flow_model")
    for suffix in (".json", ".safetensors"):
        (state / f"{flow}{suffix}").unlink()
    (state / "pipeline.json").write_text(json.dumps(config))
    encoded = encode_asset(meshes["red"], state, **FAST)
    assert torch.equal(encoded.feats, encode_asset(meshes["red"], folder, **FAST).feats)
