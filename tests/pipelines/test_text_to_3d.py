"""Text -> 3D and variants end to end on small random model folders (CPU)."""
from __future__ import annotations


import pytest
import torch

pytest.importorskip("transformers")

from trellis_impl.pipelines import ImageTo3DPipeline, TextTo3DPipeline, write_random_model_folder  # noqa: E402
from trellis_impl.pipelines.generation import structure_from_voxels  # noqa: E402

FAST = {"steps": 4}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory):
    return TextTo3DPipeline.from_folder(write_random_model_folder(tmp_path_factory.mktemp("m") / "T", kind="text"))


def test_text_to_all_three_formats(pipeline):
    result = pipeline.run("a red mushroom", seed=2, structure_params=FAST, slat_params=FAST)
    n = result.coords.shape[0]
    assert n > 0
    assert result.decoded["gaussian"][0].get_xyz.shape[0] == 8 * n
    assert result.decoded["radiance_field"][0].position.shape[0] == n
    assert result.decoded["mesh"][0].success
    again = pipeline.run("a red mushroom", seed=2, formats=[], structure_params=FAST, slat_params=FAST)
    assert torch.equal(again.slat.feats, result.slat.feats)


def test_neg_cond_is_the_empty_prompt_and_bad_prompts_are_refused(pipeline, caplog):
    cond = pipeline.get_cond(["a chair"])
    assert torch.equal(cond["neg_cond"], pipeline.encoder.null_cond)
    with pytest.raises(ValueError, match="empty"):
        pipeline.run("   ", formats=[])
    long_prompt = " ".join(["chair"] * 120)
    with caplog.at_level("WARNING", logger="trellis_impl"):
        pipeline.get_cond([long_prompt])
        pipeline.get_cond([long_prompt])
    assert sum("truncated" in r.message for r in caplog.records) == 1


def test_text_variant_keeps_the_structure(pipeline):
    g = torch.Generator().manual_seed(0)
    coords = torch.unique(torch.randint(0, 16, (60, 3), generator=g), dim=0).int()
    structure = structure_from_voxels(coords, pipeline.resolution, num_samples=2)
    result = pipeline.run_variant(structure, "a golden statue", seed=4, slat_params=FAST, formats=["gaussian"])
    assert torch.equal(result.coords[:, 1:], coords.repeat(2, 1))
    assert result.coords[:, 0].tolist() == [0] * len(coords) + [1] * len(coords)
    assert len(result.decoded["gaussian"]) == 2
    with pytest.raises(ValueError, match=r"in \[0, 16\)"):
        structure_from_voxels(coords + 16, pipeline.resolution)


def test_image_variant(tmp_path):
    from PIL import Image, ImageDraw
    pipe = ImageTo3DPipeline.from_folder(write_random_model_folder(tmp_path / "I"))
    image = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((10, 10, 50, 50), fill=(255, 0, 0, 255))
    coords = torch.tensor([[1, 2, 3], [4, 5, 6], [7, 8, 9]], dtype=torch.int32)
    structure = structure_from_voxels(coords, pipe.resolution)
    a = pipe.run_variant(structure, image, seed=1, slat_params=FAST, formats=[])
    b = pipe.run_variant(structure, image, seed=2, slat_params=FAST, formats=[])
    assert torch.equal(a.coords, b.coords) and not torch.equal(a.slat.feats, b.slat.feats)
