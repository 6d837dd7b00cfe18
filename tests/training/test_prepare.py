"""prepare-data: meshes -> a training-data folder; deterministic, resumable, bad assets skipped by name."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from trellis_impl.export.mesh_files import from_gltf_frame
from trellis_impl.pipelines.voxelize import voxelize_mesh
from trellis_impl.readers import load_mesh
from trellis_impl.training.dataset import TrainingData
from trellis_impl.training.prepare import conditioning_cameras, prepare_data

from encoding.meshes import BLUE, RED, coloured_box, write  # tests/ is on sys.path (the training package)

OPTIONS = dict(resolution=16, num_views=3, cond_views=2, render_size=32, supersample=1, batch_size=2, device="cpu")


@pytest.fixture(scope="module")
def sources(tmp_path_factory):
    from trellis_impl.pipelines import write_random_model_folder
    root = tmp_path_factory.mktemp("prepare")
    meshes = root / "meshes"
    meshes.mkdir()
    write(coloured_box(RED), meshes / "red_box.ply")
    write(coloured_box(BLUE, kind="face"), meshes / "blue_box.glb")
    (meshes / "broken.obj").write_text("v 0 0 0\nv 1 0 0\nf 1 2 7\n")  # a face on a vertex that does not exist
    model = write_random_model_folder(root / "random")
    return {"root": root, "meshes": meshes, "model": model}


def test_prepare_writes_every_kind_and_skips_a_bad_asset(sources, caplog):
    out = sources["root"] / "data"
    with caplog.at_level(logging.WARNING, logger="trellis_impl"):
        data = prepare_data([sources["meshes"]], out, model=sources["model"], **OPTIONS)
    assert data.names == ["blue_box", "red_box"]
    assert "broken" in data.manifest["failed"] and "broken" in caplog.text
    for name, source in (("red_box", "red_box.ply"), ("blue_box", "blue_box.glb")):
        coords = data.tensors(name, "voxels")["coords"]
        vertices, faces = load_mesh(sources["meshes"] / source)
        if source.endswith(".glb"):  # glTF is Y up; TRELLIS assets Z up (as the official Blender import)
            vertices = from_gltf_frame(vertices)
        assert torch.equal(coords, voxelize_mesh(vertices, faces, resolution=16))
        renders = data.tensors(name, "renders")
        assert renders["images"].shape == (3, 32, 32, 4) and renders["images"].dtype == torch.uint8
        assert data.tensors(name, "cond")["images"].shape == (2, 32, 32, 4)
        features = data.tensors(name, "features")["patchtokens"]
        assert features.shape == (coords.shape[0], 48) and features.dtype == torch.float16
        assert data.tensors(name, "ss_latent")["latent"].shape == (8, 4, 4, 4)
        assert data.tensors(name, "slat")["feats"].shape == (coords.shape[0], 8)
    # the colours reach the renders: the red box's covered pixels are red, the blue box's blue
    for name, channel in (("red_box", 0), ("blue_box", 2)):
        images = data.tensors(name, "renders")["images"].float()
        covered = images[..., 3] > 0
        mean = images[..., :3][covered].mean(0)
        assert int(mean.argmax()) == channel, (name, mean)
    # and the features depend on them
    red, blue = (data.tensors(n, "features")["patchtokens"].float().mean(0) for n in ("red_box", "blue_box"))
    assert not torch.allclose(red, blue)


def test_prepare_is_deterministic_and_resumes(sources):
    options = dict(OPTIONS, dinov2=sources["model"] / "dinov2")
    first = prepare_data([sources["meshes"]], sources["root"] / "again", **options)
    second_path = sources["root"] / "resumed"
    prepare_data([sources["meshes"]], second_path, **options)
    features = second_path / "assets" / "red_box" / "features.safetensors"
    kept = second_path / "assets" / "blue_box" / "renders.safetensors"
    features.unlink()
    kept_time = kept.stat().st_mtime_ns
    second = prepare_data([sources["meshes"]], second_path, **options)
    assert features.is_file() and kept.stat().st_mtime_ns == kept_time  # only the missing file was made
    for name in first.names:
        for kind in ("voxels", "renders", "cond", "features"):
            a, b = (load_file(str(d.file(name, kind))) for d in (first, second))
            assert all(torch.equal(a[k], b[k]) for k in a), (name, kind)
    with pytest.raises(ValueError, match="other settings"):
        prepare_data([sources["meshes"]], second_path, **{**options, "num_views": 4})


def test_prepare_bad_inputs(sources, tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        prepare_data([tmp_path / "missing"], tmp_path / "out", **OPTIONS)
    (tmp_path / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="not a mesh file"):
        prepare_data([tmp_path / "notes.txt"], tmp_path / "out", **OPTIONS)
    with pytest.raises(ValueError, match="num_views"):
        prepare_data([sources["meshes"]], tmp_path / "out", **{**OPTIONS, "num_views": 0})
    assert not (tmp_path / "out").exists()


def test_conditioning_cameras_follow_the_official_ranges():
    cameras = conditioning_cameras(16, seed=3)
    for camera in cameras:
        fov = 2 * torch.atan(torch.tensor(camera.width / (2 * camera.fx))).rad2deg()
        radius = float(camera.position.norm())
        assert 10 - 1e-6 <= float(fov) <= 70 + 1e-6
        # the unit cube's bounding sphere just fits: sin(fov / 2) = (sqrt(3) / 2) / radius
        assert abs(torch.sin(torch.deg2rad(fov) / 2) * radius - 3 ** 0.5 / 2) < 1e-6


def test_the_whole_chain_through_the_cli(sources, tmp_path):
    """prepare-data -> train the VAEs -> export the encoders -> prepare-data --model (latents) ->
    train a flow -> export-folder: a model folder that load_model reads."""
    import json

    from trellis_impl.cli import run
    from trellis_impl.pipelines.model_folder import SLAT_ENCODER_KEY, ModelFolder
    configs = Path(__file__).parents[2] / "configs" / "training" / "tiny"
    dinov2 = str(sources["model"] / "dinov2")

    def config(stage: str) -> str:
        data = json.loads((configs / f"{stage}.json").read_text())
        data["trainer"].update(max_steps=2, batch_size_per_gpu=1)
        if "image_encoder" in data.get("frozen", {}):
            data["frozen"]["image_encoder"] = dinov2
        path = tmp_path / f"{stage}.json"
        path.write_text(json.dumps(data))
        return str(path)

    data = tmp_path / "data"
    prepare = ["prepare-data", str(sources["meshes"]), "--out", str(data), "--resolution", "16", "--views", "3",
               "--cond-views", "2", "--render-size", "32", "--supersample", "1", "--device", "cpu", "--dinov2", dinov2]
    assert run(prepare) == 0
    for stage in ("ss_vae", "slat_vae_gs"):
        assert run(["train", config(stage), "--data", str(data), "--out", str(tmp_path / stage), "--device", "cpu"]) == 0
    encoders = tmp_path / "encoders"
    assert run(["export-folder", str(tmp_path / "ss_vae"), str(tmp_path / "slat_vae_gs"), "--out", str(encoders)]) == 0
    folder = ModelFolder(encoders)
    assert folder.checkpoint_path(SLAT_ENCODER_KEY).name == "slat_enc_tiny"
    assert run(prepare + ["--model", str(encoders)]) == 0  # resumes: only the latents are new
    prepared = TrainingData(data)
    assert all(prepared.file(n, kind).is_file() for n in prepared.names for kind in ("ss_latent", "slat"))
    assert run(["train", config("slat_flow"), "--data", str(data), "--out", str(tmp_path / "slat_flow"),
                "--device", "cpu"]) == 0
    model = tmp_path / "model"
    assert run(["export-folder", str(tmp_path / "ss_vae"), str(tmp_path / "slat_vae_gs"), str(tmp_path / "slat_flow"),
                "--out", str(model)]) == 0
    pipeline = json.loads((model / "pipeline.json").read_text())
    assert set(pipeline["args"]["models"]) == {"sparse_structure_decoder", "slat_decoder_gs", "slat_flow_model"}
    assert len(pipeline["args"]["slat_normalization"]["std"]) == 8  # from the flow run's data
    flow = ModelFolder(model).model("slat_flow_model")
    assert flow.resolution == 16 and (model / "dinov2" / "model.safetensors").is_file()


def test_merge_moves_the_assets_of_parts_prepared_apart(tmp_path):
    from trellis_impl.training.dataset import DatasetError, merge_training_data
    from .synthetic import write_synthetic_data
    a = write_synthetic_data(tmp_path / "a", num_assets=2)
    b = write_synthetic_data(tmp_path / "b", num_assets=2)
    with pytest.raises(DatasetError, match="asset shape0 is in both"):
        merge_training_data([a, b], tmp_path / "merged")
    assert not (tmp_path / "merged").exists()
    for name in ("shape0", "shape1"):  # the second part's assets under other names
        (b / "assets" / name).rename(b / "assets" / f"b_{name}")
    manifest = json.loads((b / "dataset.json").read_text())
    manifest["assets"] = {f"b_{k}": v for k, v in manifest["assets"].items()}
    (b / "dataset.json").write_text(json.dumps(manifest))
    voxels = (a / "assets" / "shape1" / "voxels.safetensors").read_bytes()
    merged = merge_training_data([a, b], tmp_path / "merged")
    assert merged.names == ["b_shape0", "b_shape1", "shape0", "shape1"]
    assert (merged.path / "assets" / "shape1" / "voxels.safetensors").read_bytes() == voxels
    assert not any((a / "assets").iterdir()) and json.loads((a / "dataset.json").read_text())["assets"] == {}
    with pytest.raises(DatasetError, match="exists"):
        merge_training_data([a], tmp_path / "merged")
    other = write_synthetic_data(tmp_path / "c", num_assets=1)
    manifest = json.loads((other / "dataset.json").read_text())
    manifest["settings"] = {"synthetic": False}
    (other / "dataset.json").write_text(json.dumps(manifest))
    with pytest.raises(DatasetError, match="other settings"):
        merge_training_data([merged.path, other], tmp_path / "merged2")


def test_latents_of_a_folder_with_one_encoder(sources, tmp_path):
    """Stages trained in turn: a folder with only the structure encoder gives the structure latents;
    the SLat comes later from a folder that has its encoder, without redoing the rest."""
    import shutil
    partial = tmp_path / "partial"
    shutil.copytree(sources["model"], partial)
    for path in (partial / "ckpts").glob("slat_enc*"):
        path.unlink()
    shutil.rmtree(partial / "dinov2")  # not needed once the features are there
    out = tmp_path / "data"
    prepare_data([sources["meshes"]], out, dinov2=sources["model"] / "dinov2", **OPTIONS)
    data = prepare_data([sources["meshes"]], out, model=partial, **OPTIONS)
    for name in data.names:
        assert data.file(name, "ss_latent").is_file() and not data.file(name, "slat").is_file()
    latent = data.file("red_box", "ss_latent").read_bytes()
    data = prepare_data([sources["meshes"]], out, model=sources["model"], **OPTIONS)
    assert data.file("red_box", "slat").is_file() and data.file("red_box", "ss_latent").read_bytes() == latent
    # only some kinds: the structure latents from a full folder (its SLat encoder about to be replaced)
    from trellis_impl.pipelines.model_folder import ModelFolder
    from trellis_impl.training.prepare import _latent_kinds
    assert _latent_kinds(ModelFolder(sources["model"], device="cpu"), ["ss_latent"]) == ("ss_latent",)
    # structure latents alone from a folder with an image encoder: no features are computed for them
    only = prepare_data([sources["meshes"]], tmp_path / "structure_only", model=sources["model"],
                        latents=["ss_latent"], **OPTIONS)
    assert all(only.file(n, "ss_latent").is_file() and not only.file(n, "features").is_file() for n in only.names)
    with pytest.raises(ValueError, match="lacks the encoder of a wanted latent"):
        prepare_data([sources["meshes"]], tmp_path / "data2", model=partial, latents=["slat"], **OPTIONS)
    with pytest.raises(ValueError, match="latents must name some of"):
        prepare_data([sources["meshes"]], tmp_path / "data2", model=partial, latents=["features"], **OPTIONS)
    for path in (partial / "ckpts").glob("ss_enc*"):
        path.unlink()
    with pytest.raises(ValueError, match="neither encoder"):
        prepare_data([sources["meshes"]], tmp_path / "data2", model=partial, **OPTIONS)
    assert not (tmp_path / "data2").exists()  # refused before any work
