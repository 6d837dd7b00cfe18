"""Variants from a mesh file through the command line, on small random model folders (CPU)."""
from __future__ import annotations


import pytest
from PIL import Image, ImageDraw

from trellis_impl.cli import run as cli_run
from trellis_impl.pipelines import write_random_model_folder

CUBE_OBJ = """v 0 0 0
v 1 0 0
v 1 1 0
v 0 1 0
v 0 0 1
v 1 0 1
v 1 1 1
v 0 1 1
f 1 3 2
f 1 4 3
f 5 6 7
f 5 7 8
f 1 2 6
f 1 6 5
f 2 3 7
f 2 7 6
f 3 4 8
f 3 8 7
f 4 1 5
f 4 5 8
"""


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    return {"image": write_random_model_folder(root / "image"),
            "text": write_random_model_folder(root / "text", kind="text")}


@pytest.fixture
def cube(tmp_path):
    path = tmp_path / "cube.obj"
    path.write_text(CUBE_OBJ)
    return path


def test_variant_from_a_mesh_with_a_prompt(models, cube, tmp_path, capsys):
    pytest.importorskip("transformers")
    argv = ["variant", str(cube), "--prompt", "a stone cube", "--model", str(models["text"]),
            "--out", str(tmp_path / "out"), "--latent-steps", "3", "--formats", "gaussian", "mesh",
            "--files", "ply", "mesh_ply", "slat", "--bake", "vertex_colors"]
    assert cli_run(argv) == 0
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["cube_variant_gaussians.ply", "cube_variant_mesh.ply", "cube_variant_slat.safetensors"]
    # the structure is the cube's surface shell on the model's 16^3 grid: 16^3 - 14^3 voxels
    assert capsys.readouterr().out.startswith(f"{16 ** 3 - 14 ** 3} voxels")


def test_variant_from_a_mesh_with_an_image(models, cube, tmp_path):
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((10, 10, 50, 50), fill=(90, 90, 200, 255))
    image.save(tmp_path / "look.png")
    argv = ["variant", str(cube), "--image", str(tmp_path / "look.png"), "--model", str(models["image"]),
            "--out", str(tmp_path / "out"), "--latent-steps", "3", "--formats", "gaussian"]
    assert cli_run(argv) == 0
    assert (tmp_path / "out" / "cube_variant_gaussians.ply").is_file()


def test_bad_mesh_file_is_a_clear_error(models, tmp_path):
    bad = tmp_path / "mesh.xyz"
    bad.write_text("nothing")
    with pytest.raises(ValueError, match="xyz"):
        cli_run(["variant", str(bad), "--prompt", "x", "--model", str(models["image"])])
