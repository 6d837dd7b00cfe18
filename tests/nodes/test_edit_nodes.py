"""Edit nodes on the fake host: region from boxes (GLB axes) or a mesh, region edits keep the
outside exactly, detail variation keeps the structure, bad regions are clear errors."""
from __future__ import annotations

import pytest
import torch

from node_fixtures import (host2026_fixture, model_root_fixture, nodes_fixture, pack_fixture,  # noqa: F401
                           run, run_with_ui)
from comfy_host import InterruptProcessingException  # noqa: E402  (on sys.path via node_fixtures)
from test_nodes import STEPS, _image_asset


def _keys(coords):
    return {tuple(c) for c in coords[:, 1:].tolist()}


def test_region_edit_replace_keeps_outside(nodes, host2026):
    model, structure, _, _ = _image_asset(nodes, host2026)
    (slat,) = run(nodes["TrellisLatentSampler"], model, _cond(nodes, model)[0], structure, seed=1,
                                                   multi_image_mode="stochastic", **STEPS)
    assert structure.latent is not None  # the sampled dense latent rides along: no encoder needed
    (region,) = run(nodes["TrellisEditRegion"], model, "-0.5 0.0 -0.5 0.5 0.5 0.5", 0)
    cond, _ = _cond(nodes, model, colour=(0.1, 0.2, 0.9))
    edited, new_slat = run(nodes["TrellisRegionEdit"], model, cond, structure, region, "replace", "repaint",
                                                       seed=3, slat=slat, **STEPS)
    inside = region.voxels
    def outside(coords):
        return {k for k in _keys(coords) if not bool(inside[k])}
    assert outside(edited.coords) == outside(structure.coords)
    # latents outside the region are the original's exactly
    old = {tuple(c): f for c, f in zip(slat.slat.coords[:, 1:].tolist(), slat.slat.feats)}
    for c, f in zip(new_slat.slat.coords[:, 1:].tolist(), new_slat.slat.feats):
        if not bool(inside[tuple(c)]):
            assert torch.equal(f, old[tuple(c)])
    # the edited asset decodes and previews with the region's box
    (asset,) = run(nodes["TrellisDecode"], model, new_slat, True, False, False)
    item = run_with_ui(nodes["TrellisPreview"], asset, "trellis/edit", region).ui["trellis_preview"][0]
    assert item["edit_boxes"] == [{"min": [-0.5, 0.0, -0.5], "max": [0.5, 0.5, 0.5]}]


def _cond(nodes, model, colour=(0.8, 0.3, 0.2)):
    img = torch.zeros(1, 64, 64, 3)
    img[:, 16:48, 16:48] = torch.tensor(colour)
    mask = torch.ones(1, 64, 64)
    mask[:, 16:48, 16:48] = 0
    return run(nodes["TrellisImageCondition"], model, img, "auto", mask)


def test_delete_empties_the_box_and_variation_keeps_structure(nodes, host2026):
    model, structure, _, _ = _image_asset(nodes, host2026)
    cond, _ = _cond(nodes, model)
    (slat,) = run(nodes["TrellisLatentSampler"], model, cond, structure, seed=1, multi_image_mode="stochastic",
                                                   **STEPS)
    (region,) = run(nodes["TrellisEditRegion"], model, "-0.5 -0.5 -0.5 0.5 0.5 0.0", 1)
    edited, _ = run(nodes["TrellisRegionEdit"], model, cond, structure, region, "delete", "repaint", seed=0,
                                                slat=slat, **STEPS)
    assert not any(bool(region.voxels[k]) for k in _keys(edited.coords))
    (varied,) = run(nodes["TrellisDetailVariation"], model, cond, structure, 1.0, seed=9, slat=slat, **STEPS)
    assert torch.equal(varied.slat.coords, slat.slat.coords)
    assert not torch.allclose(varied.slat.feats, slat.slat.feats)


def test_bad_regions_are_clear_errors(nodes, host2026):
    (model,) = run(nodes["TrellisModelLoader"], "random-image")
    with pytest.raises(ValueError, match="six numbers"):
        run(nodes["TrellisEditRegion"], model, "0 0 0 1", 0)
    with pytest.raises(ValueError, match="at least one box"):
        run(nodes["TrellisEditRegion"], model, "# nothing", 0)
    with pytest.raises(ValueError, match="outside"):
        run(nodes["TrellisEditRegion"], model, "2 2 2 3 3 3", 0)


def test_inversion_edit_reuses_a_precomputed_inversion(nodes, host2026):
    model, structure, _, _ = _image_asset(nodes, host2026)
    cond, _ = _cond(nodes, model)
    (slat,) = run(nodes["TrellisLatentSampler"], model, cond, structure, seed=1, multi_image_mode="stochastic",
                                                   **STEPS)
    (region,) = run(nodes["TrellisEditRegion"], model, "-0.5 0.0 -0.5 0.5 0.5 0.5", 0)
    (inversion,) = run(nodes["TrellisInvertAsset"], model, cond, structure, steps=2, rescale_t=3.0, slat=slat)
    new_cond, _ = _cond(nodes, model, colour=(0.1, 0.9, 0.2))
    args = (model, new_cond, structure, region, "replace", "inversion")
    reused = run(nodes["TrellisRegionEdit"], *args, seed=3, slat=slat, source_cond=cond, inversion=inversion,
                                             **STEPS)
    direct = run(nodes["TrellisRegionEdit"], *args, seed=3, slat=slat, source_cond=cond, **STEPS)
    assert torch.equal(reused[0].coords, direct[0].coords)
    assert torch.equal(reused[1].slat.feats, direct[1].slat.feats)
    with pytest.raises(ValueError, match="schedule"):
        run(nodes["TrellisRegionEdit"], *args, seed=3, slat=slat, inversion=inversion, **{**STEPS, "steps": 3})


def test_invert_asset_reports_steps_and_stops_on_interrupt(nodes, host2026):
    model, structure, _, _ = _image_asset(nodes, host2026)
    cond, _ = _cond(nodes, model)
    (slat,) = run(nodes["TrellisLatentSampler"], model, cond, structure, seed=1, multi_image_mode="stochastic",
                                                   **STEPS)
    host2026.progress.clear()
    run(nodes["TrellisInvertAsset"], model, cond, structure, steps=3, rescale_t=3.0, slat=slat)
    steps = [e[1] for e in host2026.progress if e[0] == "abs"]
    assert steps == [1, 2, 3, 1, 2, 3]  # structure inversion, then the latents'
    host2026.checks = 0
    # checks: 1 before, one before every block of the flow model, one after every step: the third
    # falls inside the first step's forward pass, which stops there
    host2026.interrupt_after_checks = 3
    host2026.progress.clear()
    with pytest.raises(InterruptProcessingException):
        run(nodes["TrellisInvertAsset"], model, cond, structure, steps=6, rescale_t=3.0, slat=slat)
    assert host2026.checks == 3 and [e for e in host2026.progress if e[0] == "abs"] == []
