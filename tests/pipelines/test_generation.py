"""Generation on a small random-weight model folder: seeds, determinism, lazy loading, errors."""
from __future__ import annotations

import json

import pytest
import torch

from trellis_impl.pipelines.model_folder import ModelFolder, ModelFolderError
from trellis_impl.pipelines.random_folder import RANDOM_COND_CHANNELS, write_random_model_folder
from trellis_impl.pipelines.generation import (Noise, TrellisPipeline, structure_from_mesh_file,
                                            structure_from_voxels)

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
    structure = pipe.sample_structure(condition(), Noise(0), params=FAST)
    assert set(models.loaded()) == {"sparse_structure_flow_model", "sparse_structure_decoder"}
    coords = structure.coords
    assert coords.dtype == torch.int32 and coords.shape[1] == 4 and coords.shape[0] > 0
    slat = pipe.sample_latents(condition(), structure, Noise(0), params=FAST)
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


def test_two_stage_calls_give_the_single_call_asset(folder):
    """The nodes' way (structure, handed over on CPU, then latents with the same seed) and the
    library's single call draw the same noise, so they give the same asset."""
    pipe = TrellisPipeline(ModelFolder(folder))
    whole = pipe.generate(condition(), seed=11, num_samples=2, formats=(), structure_params=FAST, slat_params=FAST)
    structure = pipe.sample_structure(condition(), Noise(11), num_samples=2, params=FAST).cpu()
    assert structure.noise_shape == (2, 8, 4, 4, 4) and structure.latent.shape == (2, 8, 4, 4, 4)
    slat = pipe.sample_latents(condition(), structure, Noise.for_latents(11, structure), params=FAST)
    assert torch.equal(structure.coords, whole.coords) and torch.equal(slat.feats, whole.slat.feats)
    other = pipe.sample_latents(condition(), structure, Noise.for_latents(12, structure), params=FAST)
    assert not torch.equal(other.feats, whole.slat.feats)


def test_noise_objects():
    noise = Noise(5)
    g = torch.Generator().manual_seed(5)
    assert torch.equal(noise.structure((1, 2, 3)), torch.randn(1, 2, 3, generator=g))
    assert torch.equal(noise.latents(4, 2), torch.randn(4, 2, generator=g))
    given = Noise.given(latents=torch.ones(3, 2))
    assert torch.equal(given.latents(3, 2), torch.ones(3, 2))
    with pytest.raises(ValueError, match=r"given latents noise has shape \[3, 2\], the stage needs \[4, 2\]"):
        given.latents(4, 2)
    for bad in (-1, 2 ** 64, 1.5, True):
        with pytest.raises(ValueError, match="seed must be an integer"):
            Noise(bad)


def test_structures_from_voxels_and_mesh_files(folder, tmp_path):
    """A structure from voxels is repeated per sample; a mesh file's up axis follows its format
    (the official toolkit's rule): the same shape as a Z-up .ply and a Y-up .obj gives one structure."""
    resolution = ModelFolder(folder).resolution
    xyz = torch.tensor([[0, 1, 2], [3, 2, 1]])
    structure = structure_from_voxels(xyz, resolution, num_samples=2)
    assert structure.coords.tolist() == [[0, 0, 1, 2], [0, 3, 2, 1], [1, 0, 1, 2], [1, 3, 2, 1]]
    assert structure.num_samples == 2 and structure.noise_shape is None
    with pytest.raises(ValueError, match=rf"in \[0, {resolution}\)"):
        structure_from_voxels(xyz + resolution, resolution)
    # a wedge: tall along TRELLIS z (up), so the wrong axis rule gives another structure
    vertices = torch.tensor([[0, 0, 0], [1, 0, 0], [0, 0.3, 0], [0, 0, 2.0]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [0, 1, 3], [0, 3, 2], [1, 2, 3]])
    from trellis_impl.frames import convert
    with open(tmp_path / "wedge.ply", "w") as f:
        f.write("ply\nformat ascii 1.0\nelement vertex 4\nproperty float x\nproperty float y\nproperty float z\n"
                "element face 4\nproperty list uchar int vertex_indices\nend_header\n")
        f.writelines(" ".join(map(str, v.tolist())) + "\n" for v in vertices)
        f.writelines("3 " + " ".join(map(str, t.tolist())) + "\n" for t in faces)
    with open(tmp_path / "wedge.obj", "w") as f:  # the same wedge stored Y up
        f.writelines("v " + " ".join(map(str, v.tolist())) + "\n" for v in convert(vertices, "trellis", "gltf"))
        f.writelines("f " + " ".join(str(i + 1) for i in t.tolist()) + "\n" for t in faces)
    from_ply = structure_from_mesh_file(tmp_path / "wedge.ply", resolution)
    from_obj = structure_from_mesh_file(tmp_path / "wedge.obj", resolution)
    a, b = ({tuple(c) for c in s.coords.tolist()} for s in (from_ply, from_obj))
    assert len(a & b) / len(a | b) > 0.9  # float32 (ply) and decimal (obj) rounding move a few boundary voxels
    z_extent = from_ply.coords[:, 3].max() - from_ply.coords[:, 3].min()
    y_extent = from_ply.coords[:, 2].max() - from_ply.coords[:, 2].min()
    assert z_extent > y_extent  # Z up in the TRELLIS frame


def test_step_cache_through_the_pipeline_and_the_command_line(folder, tmp_path, monkeypatch):
    """A StepCache among the sampler parameters reaches both flows (fewer model runs, the same
    structure shape of result); --step-cache N sets one per stage."""
    from PIL import Image

    from trellis_impl.cli import run as cli_run
    from trellis_impl.sampling import StepCache, flow_euler
    calls = []
    original = flow_euler.FlowEulerSampler._model_call
    monkeypatch.setattr(flow_euler.FlowEulerSampler, "_model_call",
                        lambda self, *a, **k: calls.append(1) or original(self, *a, **k))
    pipe = TrellisPipeline(ModelFolder(folder))
    params = {"steps": 10, "cfg_interval": [0.0, 1.0]}  # CFG at every step: 2 model runs per evaluation
    pipe.generate(condition(), seed=3, formats=(), structure_params=params, slat_params=params)
    full = len(calls)
    calls.clear()
    cached = {**params, "step_cache": StepCache(interval=3)}
    pipe.generate(condition(), seed=3, formats=(), structure_params=cached, slat_params=cached)
    assert full == 2 * 2 * 10 and len(calls) == 2 * 2 * StepCache(interval=3).evaluations(10) == 2 * 2 * 5
    calls.clear()
    image = Image.new("RGBA", (64, 64))
    image.paste((200, 80, 60, 255), (16, 16, 48, 48))
    image.save(tmp_path / "in.png")
    argv = ["image", str(tmp_path / "in.png"), "--model", str(folder), "--out", str(tmp_path / "out"),
            "--formats", "gaussian", "--files", "ply", "--step-cache", "3"]
    for stage in ("structure", "latent"):
        argv += [f"--{stage}-steps", "10", f"--{stage}-cfg-interval", "0", "1"]
    assert cli_run(argv) == 0 and len(calls) == 2 * 2 * 5
