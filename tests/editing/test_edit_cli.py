"""``python -m trellis_impl edit`` / ``vary`` on a slat file written by ``image``, and on a mesh
(small random model folders, CPU)."""
from __future__ import annotations

import pytest
import torch
from PIL import Image, ImageDraw

from trellis_impl.cli import run as cli_run
from trellis_impl.editing import box_region, coords_in_region
from trellis_impl.export import load_slat_file
from trellis_impl.pipelines import write_random_model_folder

STEPS = ["--structure-steps", "3", "--latent-steps", "3"]
FILES = ["--formats", "gaussian", "--files", "ply", "slat"]
TOP = ["-0.5", "0.0", "-0.5", "0.5", "0.5", "0.5"]  # glTF upper half of the unit cube


def picture(path, colour):
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((8, 8, 56, 56), fill=colour)
    image.save(path)
    return str(path)


@pytest.fixture(scope="module")
def asset(tmp_path_factory):
    """An image model folder, two pictures and the slat file of an asset generated from the first."""
    root = tmp_path_factory.mktemp("edit_cli")
    folder = write_random_model_folder(root / "image")
    first, second = picture(root / "thing.png", (200, 60, 60, 255)), picture(root / "other.png", (60, 60, 200, 255))
    assert cli_run(["image", first, "--model", str(folder), "--out", str(root / "gen"), *STEPS, *FILES]) == 0
    return {"folder": str(folder), "first": first, "second": second, "slat": str(root / "gen" / "thing_slat.safetensors")}


def by_voxel(slat_file):
    return {tuple(c): f for c, f in zip(slat_file.coords.tolist(), slat_file.feats)}


def test_generation_stores_the_structure_latent(asset):
    original = load_slat_file(asset["slat"])
    assert original.structure_latent.shape == (1, 8, 4, 4, 4) and original.coords.shape[1] == 3


def test_edit_replace_keeps_the_outside_of_a_slat_file(asset, tmp_path, capsys):
    argv = ["edit", asset["slat"], "--image", asset["second"], "--box", *TOP, "--model", asset["folder"],
            "--out", str(tmp_path), "--seed", "5", *STEPS, *FILES]
    assert cli_run(argv) == 0
    assert "with new latents" in capsys.readouterr().out
    assert cli_run(argv) == 0  # a second run never overwrites: it gets the next free names
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "thing_edit_1_gaussians.ply", "thing_edit_1_slat.safetensors", "thing_edit_gaussians.ply",
        "thing_edit_slat.safetensors"]
    original, edited = load_slat_file(asset["slat"]), load_slat_file(tmp_path / "thing_edit_slat.safetensors")
    region = box_region([float(v) for v in TOP], resolution=16)
    outside, orig_outside = ~coords_in_region(edited.coords, region), ~coords_in_region(original.coords, region)
    assert outside.any() and (~outside).any()  # both parts of the asset are there to compare
    assert set(map(tuple, edited.coords[outside].tolist())) == set(map(tuple, original.coords[orig_outside].tolist()))
    before = by_voxel(original)
    for c, f in zip(edited.coords[outside].tolist(), edited.feats[outside]):
        assert torch.equal(f, before[tuple(c)])
    # the same seed gives the same edit
    assert torch.equal(load_slat_file(tmp_path / "thing_edit_1_slat.safetensors").feats, edited.feats)


def test_edit_delete_needs_no_condition_and_empties_the_box(asset, tmp_path):
    argv = ["edit", asset["slat"], "--mode", "delete", "--box", *TOP, "--border", "1", "--model", asset["folder"],
            "--out", str(tmp_path), *FILES]
    assert cli_run(argv) == 0
    edited, original = load_slat_file(tmp_path / "thing_edit_slat.safetensors"), load_slat_file(asset["slat"])
    region = box_region([float(v) for v in TOP], resolution=16, dilate=1)
    assert not coords_in_region(edited.coords, region).any()
    assert len(edited.coords) == int((~coords_in_region(original.coords, region)).sum())
    assert edited.structure_latent is None  # no latent decodes to a merged structure


def test_inversion_edit_with_the_source_image(asset, tmp_path):
    argv = ["edit", asset["slat"], "--image", asset["second"], "--method", "inversion", "--source-image",
            asset["first"], "--box", *TOP, "--model", asset["folder"], "--out", str(tmp_path), *STEPS, *FILES]
    assert cli_run(argv) == 0
    assert (tmp_path / "thing_edit_slat.safetensors").is_file()


def test_vary_keeps_the_coords_and_changes_the_latents(asset, tmp_path):
    argv = ["vary", asset["slat"], "--image", asset["second"], "--strength", "0.5", "--model", asset["folder"],
            "--out", str(tmp_path), *STEPS[2:], *FILES]
    assert cli_run(argv) == 0
    original, varied = load_slat_file(asset["slat"]), load_slat_file(tmp_path / "thing_variation_slat.safetensors")
    assert torch.equal(varied.coords, original.coords)
    assert not torch.allclose(varied.feats, original.feats, atol=1e-3)
    assert torch.equal(varied.structure_latent, original.structure_latent)


def test_edit_on_a_mesh_regenerates_every_latent(tmp_path, capsys):
    pytest.importorskip("transformers")
    folder = write_random_model_folder(tmp_path / "text", kind="text")
    cube = tmp_path / "box.obj"
    corners = [(x, y, z) for z in (0, 1) for y in (0, 1) for x in (0, 1)]
    quads = [(0, 2, 3, 1), (4, 5, 7, 6), (0, 1, 5, 4), (2, 6, 7, 3), (0, 4, 6, 2), (1, 3, 7, 5)]
    cube.write_text("".join(f"v {x} {y} {z}\n" for x, y, z in corners)
                    + "".join(f"f {a + 1} {b + 1} {c + 1}\nf {a + 1} {c + 1} {d + 1}\n" for a, b, c, d in quads))
    argv = ["edit", str(cube), "--prompt", "a stone box", "--box", *TOP, "--model", str(folder),
            "--out", str(tmp_path / "out"), *STEPS, *FILES]
    assert cli_run(argv) == 0
    assert "0 voxels kept with their latents" in capsys.readouterr().out
    assert (tmp_path / "out" / "box_edit_slat.safetensors").is_file()


@pytest.mark.parametrize("extra, message", [
    (["--image", "IMG"], "needs a region"),
    (["--image", "IMG", "--box", "2", "2", "2", "3", "3", "3"], "outside the unit cube"),
    (["--box", *TOP], "needs the new condition"),
    (["--image", "IMG", "--box", *TOP, "--num-samples", "2"], "num-samples"),
])
def test_bad_edit_arguments_are_clear_errors_and_write_nothing(asset, tmp_path, extra, message):
    extra = [asset["second"] if v == "IMG" else v for v in extra]
    with pytest.raises(ValueError, match=message):
        cli_run(["edit", asset["slat"], *extra, "--model", asset["folder"], "--out", str(tmp_path / "out"), *STEPS])
    assert not (tmp_path / "out").exists()


def test_a_file_that_is_not_a_slat_file_is_refused(asset, tmp_path):
    from safetensors.torch import save_file
    other = tmp_path / "weights.safetensors"
    save_file({"weight": torch.zeros(2, 2)}, str(other))
    garbage = tmp_path / "cut_slat.safetensors"
    garbage.write_bytes(b"\x00" * 5)
    for path, message in ((other, "not a TRELLIS slat file"), (garbage, "not a safetensors file")):
        with pytest.raises(ValueError, match=message):
            cli_run(["vary", str(path), "--image", asset["second"], "--model", asset["folder"]])
    with pytest.raises(ValueError, match="missing_slat.safetensors: no such file"):
        cli_run(["vary", str(tmp_path / "missing_slat.safetensors"), "--image", asset["second"],
                 "--model", asset["folder"]])
