"""Working-memory estimates: what the nodes ask the host to free before a stage runs."""
from __future__ import annotations

import pytest

from trellis_impl.pipelines.generation import TrellisPipeline
from trellis_impl.pipelines.memory import STAGES, working_memory
from trellis_impl.pipelines.random_folder import write_random_model_folder
from trellis_impl.pipelines.model_folder import ModelFolder


def test_estimates_grow_linearly_with_their_unit():
    for stage in STAGES:
        a, b, c = (working_memory(stage, n) for n in (0, 1000, 2000))
        assert 0 < a < b < c and c - b == pytest.approx(b - a, abs=2), stage
    # the mesh decoder (256^3 subdivision, FlexiCubes) dominates per voxel; a 20k-voxel asset needs GiBs
    assert working_memory("mesh", 20000) > working_memory("latent", 40000) > working_memory("gaussian", 20000)
    assert 2 << 30 < working_memory("mesh", 20000) < 8 << 30
    with pytest.raises(ValueError, match="unknown stage 'texture'"):
        working_memory("texture", 1)


def test_pipeline_counts_the_batched_cfg_rows(tmp_path):
    folder = ModelFolder(write_random_model_folder(tmp_path / "m"))
    batched, apart = TrellisPipeline(folder, batch_cfg=True), TrellisPipeline(folder, batch_cfg=False)
    assert batched.working_memory("latent", voxels=5000) == working_memory("latent", 10000)
    assert apart.working_memory("latent", voxels=5000) == working_memory("latent", 5000)
    assert batched.working_memory("structure", samples=2) == working_memory("structure", 4)
    assert batched.working_memory("mesh", voxels=5000) == apart.working_memory("mesh", voxels=5000) \
        == working_memory("mesh", 5000)
    assert batched.working_memory("condition", images=3) == working_memory("condition", 3)
