"""Image -> 3D end to end on the small random model folder (CPU), CLI included."""
from __future__ import annotations


import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from trellis_impl.cli import run as cli_run
from trellis_impl.pipelines import ImageTo3DPipeline, ModelFolderError, write_random_model_folder

FAST = {"steps": 4}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model_folder(tmp_path_factory.mktemp("models") / "TRELLIS-random-image")


@pytest.fixture(scope="module")
def pipeline(folder):
    return ImageTo3DPipeline.from_folder(folder)


def object_image(size=(160, 120), angle=0.0) -> Image.Image:
    image = Image.new("RGBA", size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(image)
    draw.ellipse((30, 20, 130, 100), fill=(220, 90, 40, 255))
    draw.rectangle((70, 50, 90, 110), fill=(240, 230, 200, 255))
    return image.rotate(angle)


def test_image_to_all_three_formats(pipeline):
    result = pipeline.run(object_image(), seed=3, structure_params=FAST, slat_params=FAST)
    n = result.coords.shape[0]
    assert n > 0 and result.slat.feats.shape == (n, 8)
    assert result.decoded["gaussian"][0].get_xyz.shape[0] == 8 * n
    assert result.decoded["radiance_field"][0].position.shape[0] == n
    assert result.decoded["mesh"][0].success
    assert set(result.timings) >= {"condition", "structure", "latent", "decode_mesh"}


@pytest.mark.parametrize("mode", ["stochastic", "multidiffusion"])
def test_multi_image_modes(pipeline, mode):
    views = [object_image(), object_image(angle=25), object_image(angle=-25)]
    result = pipeline.run(views, seed=5, multi_image_mode=mode, formats=["gaussian"], structure_params=FAST,
                          slat_params=FAST)
    assert result.coords.shape[0] > 0
    weighted = pipeline.run(views, seed=5, multi_image_mode=mode, view_weights=[1.0, 0.0, 0.0], formats=[],
                            structure_params=FAST, slat_params=FAST)
    single = pipeline.run(views[0], seed=5, formats=[], structure_params=FAST, slat_params=FAST)
    if mode == "multidiffusion":  # all weight on view 0 is exactly the single-view run
        assert torch.equal(weighted.coords, single.coords)
        torch.testing.assert_close(weighted.slat.feats, single.slat.feats)


def test_mask_input_and_bad_images(pipeline):
    rgb = object_image().convert("RGB")
    mask = np.zeros((120, 160), dtype=np.uint8)
    mask[20:100, 30:130] = 255
    assert pipeline.run(rgb, masks=[mask], formats=[], structure_params=FAST, slat_params=FAST).coords.shape[0] > 0
    with pytest.raises(ValueError, match="mask"):
        pipeline.run(rgb, masks=[mask[:50]], formats=[], structure_params=FAST, slat_params=FAST)
    with pytest.raises(ValueError):
        pipeline.run(Image.new("RGBA", (64, 64), (0, 0, 0, 0)), formats=[])  # fully transparent
    with pytest.raises(ValueError):
        pipeline.run(rgb, masks=[np.zeros_like(mask)], formats=[])  # no object left after masking
    with pytest.raises(ValueError):
        pipeline.run(Image.new("RGBA", (1, 1), (255, 0, 0, 128)), formats=[])  # 1x1
    with pytest.raises(ValueError, match="no input image"):
        pipeline.run([], formats=[])


def test_grayscale_and_16_bit_images_are_accepted(pipeline):
    alpha = np.array(object_image())[..., 3]
    gray16 = (np.array(object_image().convert("L")).astype(np.uint16) * 257)
    for image in (Image.fromarray(np.stack([np.array(object_image().convert("L")), alpha], -1), "LA"),
                  Image.fromarray(gray16)):
        masks = None if image.mode == "LA" else [alpha]
        assert pipeline.run(image, masks=masks, formats=[], structure_params=FAST, slat_params=FAST).coords.numel()


def test_text_folder_is_refused_by_the_image_pipeline(tmp_path):
    text_folder = write_random_model_folder(tmp_path / "TRELLIS-random-text", kind="text")
    with pytest.raises(ModelFolderError, match="text-to-3D model folder"):
        ImageTo3DPipeline.from_folder(text_folder)


def test_cli_writes_asset_files_and_never_overwrites(folder, tmp_path, capsys):
    image_path = tmp_path / "thing.png"
    object_image().save(image_path)
    argv = ["image", str(image_path), "--model", str(folder), "--out", str(tmp_path / "out"),
            "--structure-steps", "3", "--latent-steps", "3", "--formats", "gaussian", "mesh", "--texture-size", "512"]
    assert cli_run(argv) == 0
    assert cli_run(argv + ["--bake", "vertex_colors"]) == 0  # a cheaper second run: only the names matter
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["thing.glb", "thing.spz", "thing_1.glb", "thing_1.spz", "thing_1_gaussians.ply",
                     "thing_1_slat.safetensors", "thing_gaussians.ply", "thing_slat.safetensors"]
    out = capsys.readouterr().out
    assert "structure" in out and "latent" in out and "glb_bake" in out and "export" in out
    import trimesh
    geom = list(trimesh.load(tmp_path / "out" / "thing.glb").geometry.values())[0]
    assert geom.visual.material.baseColorTexture.size == (512, 512) and len(geom.faces) > 0
    assert 0.0 <= geom.visual.uv.min() and geom.visual.uv.max() <= 1.0


def test_no_model_runs_the_embedded_demo_model(folder, tmp_path, capsys, monkeypatch):
    from trellis_impl.pipelines import model_folder
    image_path = tmp_path / "thing.png"
    object_image().save(image_path)
    argv = ["image", str(image_path), "--out", str(tmp_path / "out"), "--structure-steps", "2", "--latent-steps", "2",
            "--formats", "gaussian", "--files", "ply"]
    monkeypatch.setattr(model_folder, "DEMO_MODEL_PATH", tmp_path / "absent")
    with pytest.raises(ModelFolderError, match="embedded demo model TRELLIS-demo is not in"):
        cli_run(argv)
    monkeypatch.setattr(model_folder, "DEMO_MODEL_PATH", folder)  # a stand-in with the same layout
    assert cli_run(argv) == 0
    out = capsys.readouterr().out
    assert out.count("no --model given: using the embedded demo model TRELLIS-demo") == 1
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["thing_gaussians.ply"]
    # the same name works wherever a model is named (library, nodes)
    assert ImageTo3DPipeline.from_folder("TRELLIS-demo").folder.path == folder
    with pytest.raises(ValueError, match="give --model .* image-conditioned"):
        cli_run(["text", "a chair", "--out", str(tmp_path / "text")])
