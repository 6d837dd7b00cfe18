"""The sampler conformance cases, run through the pipeline on a model folder assembled from the
fixture checkpoints (released pipeline.json layout, the cases' sampler settings)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from conftest import assert_rel_close, ckpt_path, load_case
from trellis_impl.pipelines import ModelFolder, ModelFolderError, TrellisPipeline
from trellis_impl.pipelines.generation import Noise, Structure


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    path = tmp_path_factory.mktemp("fixture_models") / "TRELLIS-fixture"
    (path / "ckpts").mkdir(parents=True)
    for name in ("ss_flow", "slat_flow", "ss_dec"):
        for ext in (".json", ".safetensors"):
            shutil.copy(ckpt_path(name) + ext, path / "ckpts" / f"{name}{ext}")
    ss, ss_meta = load_case("sampler_ss")
    slat, slat_meta = load_case("sampler_slat")
    config = {"name": "TrellisImageTo3DPipeline", "args": {
        "models": {"sparse_structure_flow_model": "ckpts/ss_flow", "slat_flow_model": "ckpts/slat_flow",
                   "sparse_structure_decoder": "ckpts/ss_dec"},
        "sparse_structure_sampler": {"name": ss_meta["sampler"], "args": ss_meta["sampler_args"],
                                     "params": ss_meta["params"]},
        "slat_sampler": {"name": slat_meta["sampler"], "args": slat_meta["sampler_args"], "params": slat_meta["params"]},
        "slat_normalization": {"mean": slat["slat_norm_mean"].tolist(), "std": slat["slat_norm_std"].tolist()},
    }}
    (path / "pipeline.json").write_text(json.dumps(config))
    return path


@pytest.mark.parametrize("batch_cfg", [False, True])
def test_sampler_ss_inside_the_pipeline(folder, batch_cfg):
    t, _ = load_case("sampler_ss")
    pipe = TrellisPipeline(ModelFolder(folder), batch_cfg=batch_cfg)
    flow = pipe.folder.model("sparse_structure_flow_model")
    cond = {"cond": t["cond"], "neg_cond": t["neg_cond"]}
    samples = pipe._run_sampler("sparse_structure_sampler", flow, t["noise"], cond, None, None, None)
    assert_rel_close(samples, t["samples"], 1e-3, "samples")


@pytest.mark.parametrize("batch_cfg", [False, True])
def test_sampler_slat_inside_the_pipeline(folder, batch_cfg):
    t, _ = load_case("sampler_slat")
    pipe = TrellisPipeline(ModelFolder(folder), batch_cfg=batch_cfg)
    structure = Structure(t["coords"], int(t["coords"][:, 0].max()) + 1, pipe.resolution)
    slat = pipe.sample_latents({"cond": t["cond"], "neg_cond": t["neg_cond"]}, structure,
                               Noise.given(latents=t["noise_feats"]))
    assert torch.equal(slat.coords, t["coords"])
    assert_rel_close(slat.feats, t["slat_feats"], 1e-3, "slat (denormalised)")


def test_unknown_sampler_is_named(folder, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(folder, bad)
    config = json.loads((bad / "pipeline.json").read_text())
    config["args"]["slat_sampler"]["name"] = "DDIMSampler"
    (bad / "pipeline.json").write_text(json.dumps(config))
    t, _ = load_case("sampler_slat")
    with pytest.raises(ModelFolderError, match="unknown sampler 'DDIMSampler'"):
        pipe = TrellisPipeline(ModelFolder(bad))
        pipe.sample_latents({"cond": t["cond"], "neg_cond": t["neg_cond"]}, Structure(t["coords"], int(t["coords"][:, 0].max()) + 1, pipe.resolution),
                            Noise(0))
