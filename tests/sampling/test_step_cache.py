"""The step cache: which steps run the model, exact forecasts of polynomial velocities, the sampler
path with and without it, and its deviation on a random-weight flow."""
from __future__ import annotations

import pytest
import torch

from trellis_impl.sampling import FlowEulerGuidanceIntervalSampler, StepCache
from trellis_impl.sparse import SparseTensor


class Counting(torch.nn.Module):
    """A flow whose velocity is a given function of t (model scale 0..1000), counting its calls."""

    def __init__(self, velocity):
        super().__init__()
        self.velocity, self.calls = velocity, 0

    def forward(self, x, t, cond):
        self.calls += 1
        v = self.velocity(t[0].item() / 1000.0) * torch.ones_like(x.feats if isinstance(x, SparseTensor) else x)
        return x.replace(v) if isinstance(x, SparseTensor) else v


def test_anchor_schedule():
    cache = StepCache(interval=3, warmup=2)
    assert [i for i in range(25) if cache._scheduled(i, 25)] == [0, 1, 4, 7, 10, 13, 16, 19, 22, 24]
    assert cache.evaluations(25) == 10 and StepCache(interval=1).evaluations(25) == 25
    assert StepCache(interval=2).evaluations(25) == 14
    for bad in ({"interval": 0}, {"order": 3}, {"warmup": 1}):
        with pytest.raises(ValueError, match="step cache"):
            StepCache(**bad)


@pytest.mark.parametrize("order, velocity", [(1, lambda t: 2.0 - 3.0 * t), (2, lambda t: 1.0 + t - 4.0 * t * t)])
def test_a_polynomial_velocity_is_forecast_exactly(order, velocity):
    """Velocities of the forecast's degree are predicted exactly (once order + 1 anchors exist:
    the warm-up), so the cached run equals the full one with the model at 10 or 11 of 25 steps."""
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    noise = torch.randn(2, 3, generator=torch.Generator().manual_seed(0))
    full_model, cached_model = Counting(velocity), Counting(velocity)
    full = sampler.sample(full_model, noise, cond=None, steps=25, rescale_t=3.0).samples
    cache = StepCache(interval=3, order=order, warmup=order + 1)
    cached = sampler.sample(cached_model, noise, cond=None, steps=25, rescale_t=3.0, step_cache=cache).samples
    assert full_model.calls == 25 and cached_model.calls == cache.evaluations(25) <= 11
    torch.testing.assert_close(cached, full, rtol=1e-6, atol=1e-6)


class Guided(torch.nn.Module):
    """A flow whose velocity is linear in t but differs by condition (cond: 1 + 2t, the zero
    neg_cond: -1 + t), so CFG's guided field differs from the unguided one; counts its calls."""

    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x, t, cond):
        self.calls += 1
        tt = (t / 1000.0).reshape(-1, *[1] * (x.dim() - 1))
        negative = (cond == 0).flatten(1).all(1).reshape(tt.shape)
        return torch.where(negative, -1.0 + tt, 1.0 + 2.0 * tt).expand_as(x).clone()


def test_no_forecast_crosses_the_end_of_the_cfg_interval():
    """The released schedule guides t >= 0.5 only (steps 0-18 of 25): the cache starts over at
    step 19 with two anchors, so piecewise-linear velocities are still forecast exactly."""
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    noise = torch.randn(1, 4, generator=torch.Generator().manual_seed(0))
    cond = {"cond": torch.ones(1, 2, 3), "neg_cond": torch.zeros(1, 2, 3), "cfg_strength": 5.0,
            "cfg_interval": (0.5, 1.0), "rescale_t": 3.0, "steps": 25}
    full_model, cached_model = Guided(), Guided()
    full = sampler.sample(full_model, noise, **cond).samples
    cache = StepCache(interval=3)
    cached = sampler.sample(cached_model, noise, **cond, step_cache=cache).samples
    torch.testing.assert_close(cached, full, rtol=1e-6, atol=1e-6)
    # guided anchors run the CFG pair: two calls each; unguided ones one call
    anchors = [i for i in range(25) if cache._scheduled(i, 25) or i in (19, 20)]
    assert cached_model.calls == sum(2 if i < 19 else 1 for i in anchors)
    assert cache.evaluations(25, switches=(19,)) == len(anchors) == 11


def test_sparse_samples_and_sdedit_start():
    """A sparse run keeps its coordinates; a run starting part-way (t_start) anchors its first two
    steps whatever the schedule says."""
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    coords = torch.tensor([[0, 1, 2, 3], [0, 4, 5, 6]], dtype=torch.int32)
    noise = SparseTensor(torch.randn(2, 4, generator=torch.Generator().manual_seed(1)), coords)
    model = Counting(lambda t: 0.5 - t)
    out = sampler.sample(model, noise, cond=None, steps=25, rescale_t=3.0, t_start=0.5,
                         step_cache=StepCache(interval=4)).samples
    assert torch.equal(out.coords, coords)
    reference = sampler.sample(Counting(lambda t: 0.5 - t), noise, cond=None, steps=25, rescale_t=3.0,
                               t_start=0.5).samples
    torch.testing.assert_close(out.feats, reference.feats, rtol=1e-6, atol=1e-6)
    assert model.calls < 25


def test_deviation_on_a_random_weight_flow():
    """On a random-weight structure flow with CFG (the released schedule, 25 steps), the cached
    latent stays close to the full one: relative L2 error recorded in docs/gpu.md."""
    from trellis_impl.models import build_model
    torch.manual_seed(0)
    flow = build_model("SparseStructureFlowModel", resolution=8, in_channels=8, out_channels=8, model_channels=64,
                       cond_channels=32, num_blocks=2, num_heads=2, mlp_ratio=2, patch_size=1, pe_mode="ape",
                       qk_rms_norm=True, use_fp16=False).eval()
    for p in flow.parameters():  # the zero-initialised output layers would make every velocity 0
        p.data.normal_(0, 0.05)
    g = torch.Generator().manual_seed(2)
    noise, cond = torch.randn(1, 8, 8, 8, 8, generator=g), torch.randn(1, 6, 32, generator=g)
    sampler = FlowEulerGuidanceIntervalSampler(sigma_min=1e-5)
    params = dict(cond=cond, neg_cond=torch.zeros_like(cond), steps=25, rescale_t=3.0, cfg_strength=5.0,
                  cfg_interval=(0.5, 1.0))
    full = sampler.sample(flow, noise, **params).samples
    errors = {}
    for order in (1, 2):
        cached = sampler.sample(flow, noise, step_cache=StepCache(interval=3, order=order), **params).samples
        errors[order] = float((cached - full).norm() / full.norm())
    print("relative L2 error, interval 3:", errors)
    assert errors[1] < 0.1 and errors[2] < 0.1
