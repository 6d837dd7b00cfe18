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


# Working memory measured on an H100 (docs/gpu.md, "Speed and memory", 2026-12-07), GiB by voxels.
MEASURED_GIB = {"latent": {4952: 0.78, 10160: 1.06, 16168: 1.38, 19688: 1.57},
                "gaussian": {4952: 0.12, 10160: 0.25, 16168: 0.39, 19688: 0.48},
                "mesh": {4952: 0.84, 10160: 1.62, 16168: 2.62, 19688: 3.17}}


def test_estimates_cover_the_measured_peaks_with_margin(tmp_path):
    pipeline = TrellisPipeline(ModelFolder(write_random_model_folder(tmp_path / "m")), batch_cfg=True)
    assert pipeline.working_memory("structure", samples=1) >= 0.23 * 2 ** 30 * 1.2
    for stage, rows in MEASURED_GIB.items():
        for voxels, gib in rows.items():
            ratio = pipeline.working_memory(stage, voxels=voxels) / (gib * 2 ** 30)
            assert 1.15 < ratio < 1.6, (stage, voxels, ratio)  # a margin, not a gross overestimate
