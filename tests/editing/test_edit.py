"""Edits on the random-weight model folder (16^3 structure grid, 4^3 structure latent)."""
from __future__ import annotations

import pytest
import torch

from trellis_impl.editing import (box_region, coords_in_region, detail_variation, encode_structure, invert_asset,
                                  mesh_region, region_edit)
from trellis_impl.pipelines.model_folder import ModelFolder
from trellis_impl.pipelines.random_folder import RANDOM_COND_CHANNELS, write_random_model_folder
from trellis_impl.pipelines.generation import Noise, Structure, TrellisPipeline
from trellis_impl.sampling import FlowEulerGuidanceIntervalSampler

FAST = {"steps": 3}
TOP = [[-0.5, 0.0, -0.5], [0.5, 0.5, 0.5]]  # glTF upper half = TRELLIS z >= 8


def condition(seed=0):
    cond = torch.randn(1, 6, RANDOM_COND_CHANNELS["image"], generator=torch.Generator().manual_seed(seed))
    return {"cond": cond, "neg_cond": torch.zeros_like(cond)}


@pytest.fixture(scope="module")
def pipe(tmp_path_factory):
    return TrellisPipeline(ModelFolder(write_random_model_folder(tmp_path_factory.mktemp("m") / "random")))


@pytest.fixture(scope="module")
def original(pipe):
    result = pipe.generate(condition(0), seed=3, formats=(), structure_params=FAST, slat_params=FAST)
    assert result.coords.shape[0] > 20
    return result


def keys(coords):
    return {tuple(c) for c in coords[:, 1:].tolist()}


def feats_by_voxel(coords, feats):
    return {tuple(c): f for c, f in zip(coords[:, 1:].tolist(), feats)}


def test_encoder_loads_beside_the_decoder_and_generation_carries_the_latent(pipe, original):
    assert pipe.folder.checkpoint_path("sparse_structure_encoder").name == "ss_enc_random"
    z = encode_structure(pipe, original.coords)
    assert z.shape == (1, 8, 4, 4, 4) and torch.isfinite(z).all()
    assert original.structure_latent.shape == (1, 8, 4, 4, 4)


@pytest.mark.parametrize("method", ["repaint", "inversion"])
def test_region_replace_keeps_the_outside(pipe, original, method):
    region = box_region(TOP, resolution=16)
    out = region_edit(pipe, condition(1), original.coords, original.slat, region, mode="replace", method=method,
                      seed=5, structure_params=FAST, slat_params=FAST)
    outside = ~coords_in_region(out.coords, region)
    orig_outside = ~coords_in_region(original.coords, region)
    assert keys(out.coords[outside]) == keys(original.coords[orig_outside])
    assert not out.regenerated[outside].any() and out.regenerated[~outside].all() and out.regenerated.any()
    before = feats_by_voxel(original.coords, original.slat.feats)
    for c, f in zip(out.coords[outside][:, 1:].tolist(), out.slat.feats[outside]):
        assert (f - before[tuple(c)]).abs().max() <= 1e-5
    assert torch.equal(out.slat.coords, out.coords)
    again = region_edit(pipe, condition(1), original.coords, original.slat, region, mode="replace", method=method,
                        seed=5, structure_params=FAST, slat_params=FAST)
    assert torch.equal(again.coords, out.coords) and torch.equal(again.slat.feats, out.slat.feats)


def test_precomputed_inversion_gives_the_same_edit(pipe, original):
    """invert_asset once, then edits reuse it: the result equals the edit that inverts by itself;
    a different schedule is refused."""
    region = box_region(TOP, resolution=16)
    inversion = invert_asset(pipe, original.coords, original.slat, condition(0), structure_params=FAST,
                             slat_params=FAST)
    common = dict(mode="replace", method="inversion", seed=5, structure_params=FAST, slat_params=FAST,
                  source_cond=condition(0))
    reused = region_edit(pipe, condition(1), original.coords, original.slat, region, inversion=inversion, **common)
    direct = region_edit(pipe, condition(1), original.coords, original.slat, region, **common)
    assert torch.equal(reused.coords, direct.coords) and torch.equal(reused.slat.feats, direct.slat.feats)
    with pytest.raises(ValueError, match="schedule"):
        region_edit(pipe, condition(1), original.coords, original.slat, region, inversion=inversion,
                    **{**common, "structure_params": {"steps": 4}})
    # the voxel order may differ from the inverted one: the trajectories follow the voxels
    order = torch.randperm(original.coords.shape[0], generator=torch.Generator().manual_seed(0))
    shuffled = region_edit(pipe, condition(1), original.coords[order], original.slat, region, inversion=inversion,
                           **common)
    assert torch.equal(shuffled.coords, direct.coords) and torch.equal(shuffled.slat.feats, direct.slat.feats)
    with pytest.raises(ValueError, match="another structure"):
        region_edit(pipe, condition(1), original.coords[1:], original.slat, region, inversion=inversion, **common)



def _flow_inputs(pipe, run):
    """The shapes of every flow-transformer forward during ``run()``: the model work it does."""
    shapes = []
    def record(module, args, _out):
        x = args[0]
        shapes.append((type(module).__name__, tuple((x.feats if hasattr(x, "feats") else x).shape)))
    hooks = [pipe.folder.model(key).register_forward_hook(record)
             for key in ("sparse_structure_flow_model", "slat_flow_model")]
    try:
        out = run()
    finally:
        for hook in hooks:
            hook.remove()
    return out, shapes


@pytest.mark.parametrize("precomputed", [False, True])
def test_an_edit_runs_the_forwards_of_a_generation_and_no_more(pipe, original, precomputed):
    """The speed claim on CPU: a repaint edit (and an inversion edit given invert_asset's
    trajectories) runs exactly the flow forwards of one generation of the edited structure, same
    count, same shapes; the rest is bookkeeping (timed on the GPU in docs/gpu.md)."""
    region = box_region(TOP, resolution=16)
    extra = {}
    if precomputed:
        extra = dict(method="inversion", inversion=invert_asset(pipe, original.coords, original.slat, condition(0),
                                                                structure_params=FAST, slat_params=FAST))
    edit, edit_shapes = _flow_inputs(pipe, lambda: region_edit(
        pipe, condition(1), original.coords, original.slat, region, seed=5, structure_params=FAST,
        slat_params=FAST, structure_latent=original.structure_latent, **extra))

    def generation():
        noise = Noise(0)
        pipe.sample_structure(condition(1), noise, params=FAST)
        return pipe.sample_latents(condition(1), Structure(edit.coords, 1, pipe.resolution), noise, params=FAST)
    _, generation_shapes = _flow_inputs(pipe, generation)
    assert edit_shapes == generation_shapes and len(edit_shapes) > 2 * FAST["steps"]


def test_region_edit_with_the_carried_latent_and_add(pipe, original):
    region = box_region(TOP, resolution=16)
    out = region_edit(pipe, condition(2), original.coords, original.slat, region, mode="add", seed=1,
                      structure_params=FAST, slat_params=FAST, structure_latent=original.structure_latent)
    assert keys(original.coords) <= keys(out.coords)  # add keeps every original voxel with its latent
    assert out.regenerated.sum() == out.added.sum() and out.removed.shape[0] == 0
    before = feats_by_voxel(original.coords, original.slat.feats)
    kept = ~out.regenerated
    for c, f in zip(out.coords[kept][:, 1:].tolist(), out.slat.feats[kept]):
        assert torch.equal(f, before[tuple(c)])


def test_delete_empties_the_box(pipe, original):
    region = box_region(TOP, resolution=16)
    out = region_edit(pipe, condition(1), original.coords, original.slat, region, mode="delete")
    assert not coords_in_region(out.coords, region).any()
    orig_outside = ~coords_in_region(original.coords, region)
    assert keys(out.coords) == keys(original.coords[orig_outside])
    assert out.removed.shape[0] == int((~orig_outside).sum()) and not out.regenerated.any()
    before = feats_by_voxel(original.coords, original.slat.feats)
    assert all(torch.equal(f, before[c]) for c, f in zip(map(tuple, out.coords[:, 1:].tolist()), out.slat.feats))


def test_detail_variation(pipe, original):
    a = detail_variation(pipe, condition(4), original.coords, original.slat, seed=9, params=FAST)
    b = detail_variation(pipe, condition(4), original.coords, original.slat, seed=9, params=FAST)
    assert torch.equal(a.coords, original.coords) and torch.equal(a.slat.coords, original.coords)
    assert (a.slat.feats - original.slat.feats).abs().max() > 1e-2
    assert torch.equal(a.slat.feats, b.slat.feats)
    zero = detail_variation(pipe, condition(4), original.coords, original.slat, strength=0.0, seed=9, params=FAST)
    assert (zero.slat.feats - original.slat.feats).abs().max() < 1e-4
    half = detail_variation(pipe, condition(4), original.coords, original.slat, strength=0.5, seed=9, params=FAST)
    assert torch.equal(half.coords, original.coords)
    assert (half.slat.feats - original.slat.feats).abs().max() > 1e-3


def test_detail_variation_in_a_region_keeps_the_outside_latents(pipe, original):
    region = box_region(TOP, resolution=16)
    out = detail_variation(pipe, condition(4), original.coords, original.slat, region=region, seed=9, params=FAST)
    inside = coords_in_region(original.coords, region)
    assert torch.equal(out.slat.feats[~inside], original.slat.feats[~inside])
    assert (out.slat.feats[inside] - original.slat.feats[inside]).abs().max() > 1e-2


def test_structure_from_a_mesh_has_no_slat(pipe):
    v = torch.tensor([[x, y, z] for x in (-.3, .3) for y in (-.3, .3) for z in (-.3, .3)], dtype=torch.float64)
    quads = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    faces = torch.tensor([t for a, b, c, d in quads for t in ((a, b, c), (a, c, d))])
    coords = mesh_region(v, faces, resolution=16).nonzero().int()  # [N, 3], a solid block
    region = box_region(TOP, resolution=16)
    out = region_edit(pipe, condition(1), coords, None, region, seed=2, structure_params=FAST, slat_params=FAST)
    outside = ~coords_in_region(out.coords, region)
    assert keys(out.coords[outside]) == {tuple(c) for c in coords[~coords_in_region(coords, region)].tolist()}
    assert out.regenerated.all()  # no latent to keep: stage 2 generates all of them
    deleted = region_edit(pipe, condition(1), coords, None, region, mode="delete", with_slat=False)
    assert deleted.slat is None and not coords_in_region(deleted.coords, region).any()
    full = detail_variation(pipe, condition(1), coords, None, seed=2, params=FAST)
    assert torch.equal(full.coords[:, 1:], coords)
    with pytest.raises(ValueError, match="original SLat"):
        detail_variation(pipe, condition(1), coords, None, strength=0.5, params=FAST)


def test_clear_errors(pipe, original):
    empty = torch.zeros(16, 16, 16, dtype=torch.bool)
    with pytest.raises(ValueError, match="empty"):
        region_edit(pipe, condition(1), original.coords, original.slat, empty)
    with pytest.raises(ValueError, match="resolution"):
        region_edit(pipe, condition(1), original.coords, original.slat, torch.ones(8, 8, 8, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode"):
        region_edit(pipe, condition(1), original.coords, original.slat, box_region(TOP, 16), mode="move")
    with pytest.raises(ValueError, match="strength"):
        detail_variation(pipe, condition(1), original.coords, original.slat, strength=1.5)


def test_sampler_defaults_unchanged_start_time_and_inversion(pipe):
    flow = pipe.folder.model("sparse_structure_flow_model")
    sampler = FlowEulerGuidanceIntervalSampler(1e-5)
    noise = torch.randn(1, 8, 4, 4, 4, generator=torch.Generator().manual_seed(0))
    args = dict(**condition(0), steps=3, cfg_strength=2.0, cfg_interval=(0.5, 1.0), rescale_t=3.0)
    plain = sampler.sample(flow, noise, **args)
    hooked = sampler.sample(flow, noise, **args, t_start=1.0, step_hook=lambda i, t, tp, x: None)
    assert torch.equal(plain.samples, hooked.samples)
    assert torch.equal(sampler.sample(flow, noise, **args, t_start=0.0).samples, noise)
    seen = []
    sampler.sample(flow, noise, **args, t_start=0.5, step_hook=lambda i, t, tp, x: seen.append((i, t, tp)))
    assert seen[0][1] == 0.5 and seen[-1][2] == 0.0 and all(tp < 0.5 for _, _, tp in seen)
    inv = sampler.invert(flow, plain.samples, **args)
    assert inv.times[0] == 0.0 and inv.times[-1] == 1.0 and len(inv.states) == 4
    assert torch.equal(inv.at(0.0), plain.samples)
