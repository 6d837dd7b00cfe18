"""Generation on a small random-weight model folder: seeds, determinism, lazy loading, errors."""
from __future__ import annotations

import json

import pytest
import torch

from trellis_impl.pipelines.model_folder import ModelFolder, ModelFolderError
from trellis_impl.pipelines.random_folder import RANDOM_COND_CHANNELS, write_random_model_folder
from trellis_impl.pipelines.trellis_pipeline import TrellisPipeline

FAST = {"steps": 3}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_random_model_folder(tmp_path_factory.mktemp("models") / "TRELLIS-random")


def condition(seed=0, tokens=6):
    cond = torch.randn(1, tokens, RANDOM_COND_CHANNELS["image"], generator=torch.Generator().manual_seed(seed))
    return {"cond": cond, "neg_cond": torch.zeros_like(cond)}


class FirstInput(torch.nn.Module):
    """Wraps a flow model and keeps the x of its first call (the noise at t = 1)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.first = model, None
        self.resolution, self.in_channels = getattr(model, "resolution", None), model.in_channels

    def forward(self, x, t, cond):
        if self.first is None:
            self.first = x
        return self.model(x, t, cond)


def test_noise_is_drawn_like_the_official_pipeline(folder):
    models = ModelFolder(folder)
    pipe = TrellisPipeline(models)
    ss, slat = (FirstInput(models.model(k)) for k in ("sparse_structure_flow_model", "slat_flow_model"))
    models._models.update(sparse_structure_flow_model=ss, slat_flow_model=slat)
    result = pipe.generate(condition(), seed=123, num_samples=2, formats=(), structure_params=FAST, slat_params=FAST)
    torch.manual_seed(123)  # the official order on the global CPU generator
    ss_noise = torch.randn(2, 8, 4, 4, 4)
    slat_noise = torch.randn(result.coords.shape[0], 8)
    assert torch.equal(ss.first, ss_noise)
    assert torch.equal(slat.first.feats, slat_noise)
    assert torch.equal(slat.first.coords, result.coords)


def test_same_seed_same_asset_and_other_seed_differs(folder):
    pipe = TrellisPipeline(ModelFolder(folder))
    a = pipe.generate(condition(), seed=7, formats=("gaussian",), structure_params=FAST, slat_params=FAST)
    b = pipe.generate(condition(), seed=7, formats=("gaussian",), structure_params=FAST, slat_params=FAST)
    c = pipe.generate(condition(), seed=8, formats=("gaussian",), structure_params=FAST, slat_params=FAST)
    assert torch.equal(a.coords, b.coords) and torch.equal(a.slat.feats, b.slat.feats)
    assert torch.equal(a.decoded["gaussian"][0].get_xyz, b.decoded["gaussian"][0].get_xyz)
    assert not (a.coords.shape == c.coords.shape and torch.equal(a.coords, c.coords))


def test_all_formats_and_lazy_loading(folder):
    models = ModelFolder(folder)
    pipe = TrellisPipeline(models)
    coords = pipe.sample_sparse_structure(condition(), torch.Generator().manual_seed(0), sampler_params=FAST)
    assert set(models.loaded()) == {"sparse_structure_flow_model", "sparse_structure_decoder"}
    assert coords.dtype == torch.int32 and coords.shape[1] == 4 and coords.shape[0] > 0
    slat = pipe.sample_slat(condition(), coords, torch.Generator().manual_seed(0), sampler_params=FAST)
    decoded = pipe.decode(slat, ["mesh", "gaussian", "radiance_field"])
    assert decoded["mesh"][0].faces.shape[0] > 0
    assert decoded["gaussian"][0].get_xyz.shape[0] == coords.shape[0] * 8
    assert decoded["radiance_field"][0].position.shape[0] == coords.shape[0]
    with pytest.raises(ValueError, match="unknown format"):
        pipe.decode(slat, ["voxels"])


def test_sampler_parameters_come_from_the_folder_and_can_be_overridden(folder):
    pipe = TrellisPipeline(ModelFolder(folder))
    released = {"steps": 25, "cfg_strength": 5.0, "cfg_interval": [0.5, 1.0], "rescale_t": 3.0}
    assert pipe.sampler_params("slat_sampler") == released
    assert pipe.sampler_params("slat_sampler", {"steps": 12, "cfg_strength": None}) == {**released, "steps": 12}


def test_missing_partial_and_unknown_folders(tmp_path, folder):
    with pytest.raises(ModelFolderError, match="no pipeline.json"):
        ModelFolder(tmp_path)
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "pipeline.json").write_text((folder / "pipeline.json").read_text())
    models = ModelFolder(partial)
    assert len(models.missing_files()) == 12
    with pytest.raises(ModelFolderError, match="incomplete: missing .*ss_flow_random.json"):
        models.model("sparse_structure_flow_model")
    config = json.loads((folder / "pipeline.json").read_text())
    config["name"] = "SomethingElse"
    (partial / "pipeline.json").write_text(json.dumps(config))
    with pytest.raises(ModelFolderError, match="unknown pipeline class 'SomethingElse'"):
        ModelFolder(partial)


def test_random_folder_refuses_to_overwrite(folder):
    with pytest.raises(FileExistsError):
        write_random_model_folder(folder)
