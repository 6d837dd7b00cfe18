"""The sampler cases of the conformance fixtures, and the sampler's own contract."""
from __future__ import annotations

import pytest
import torch

from conftest import assert_rel_close, ckpt_path, load_case
from trellis_impl.models import load_model
from trellis_impl.sampling import FlowEulerCfgSampler, FlowEulerGuidanceIntervalSampler, FlowEulerSampler, time_schedule
from trellis_impl.sparse import SparseTensor

SAMPLER_TOL = 1e-3


class Recorder(torch.nn.Module):
    """Wraps a model and records (t, cond is neg_cond) of each call."""

    def __init__(self, model, neg_cond):
        super().__init__()
        self.model, self.neg_cond, self.calls = model, neg_cond, []

    def forward(self, x, t, cond):
        self.calls.append((t[0].item(), int(torch.equal(cond, self.neg_cond.expand_as(cond)))))
        return self.model(x, t, cond)


@pytest.mark.parametrize("batch_cfg", [False, True])
def test_sampler_ss(batch_cfg):
    t, meta = load_case("sampler_ss")
    model = Recorder(load_model(ckpt_path(meta["model"])), t["neg_cond"])
    sampler = FlowEulerGuidanceIntervalSampler(**meta["sampler_args"], batch_cfg=batch_cfg)
    out = sampler.sample(model, t["noise"], cond=t["cond"], neg_cond=t["neg_cond"], **meta["params"])
    assert_rel_close(out.samples, t["samples"], SAMPLER_TOL, "samples")
    for k in range(meta["params"]["steps"]):
        assert_rel_close(out.pred_x_t[k], t[f"step{k}.pred_x_prev"], SAMPLER_TOL, f"step{k}.pred_x_prev")
        assert_rel_close(out.pred_x_0[k], t[f"step{k}.pred_x_0"], SAMPLER_TOL, f"step{k}.pred_x_0")
    if not batch_cfg:  # the official call order: cond first, then neg_cond, inside the interval
        times = torch.tensor([c[0] for c in model.calls])
        assert_rel_close(times, t["model_call_t"], 1e-6, "model_call_t")
        assert [c[1] for c in model.calls] == t["model_call_is_neg"].tolist()


@pytest.mark.parametrize("batch_cfg", [False, True])
def test_sampler_slat(batch_cfg):
    t, meta = load_case("sampler_slat")
    model = load_model(ckpt_path(meta["model"]))
    sampler = FlowEulerGuidanceIntervalSampler(**meta["sampler_args"], batch_cfg=batch_cfg)
    noise = SparseTensor(t["noise_feats"], t["coords"])
    out = sampler.sample(model, noise, cond=t["cond"], neg_cond=t["neg_cond"], **meta["params"])
    assert torch.equal(out.samples.coords, t["coords"])
    assert_rel_close(out.samples.feats, t["samples_feats"], SAMPLER_TOL, "samples")
    slat = out.samples * t["slat_norm_std"] + t["slat_norm_mean"]
    assert_rel_close(slat.feats, t["slat_feats"], SAMPLER_TOL, "slat")
    for k in range(meta["params"]["steps"]):
        assert_rel_close(out.pred_x_t[k].feats, t[f"step{k}.pred_x_prev_feats"], SAMPLER_TOL, f"step{k}")
        assert_rel_close(out.pred_x_0[k].feats, t[f"step{k}.pred_x_0_feats"], SAMPLER_TOL, f"step{k} x0")


def test_time_schedule_released_defaults():
    pairs = time_schedule(25, 3.0)
    assert pairs[0][0] == 1.0 and pairs[-1][1] == 0.0
    assert all(a > b for a, b in pairs)
    # 19 of the 25 released steps fall in the guidance interval [0.5, 1]
    assert sum(0.5 <= a <= 1.0 for a, _ in pairs) == 19


def test_schedule_rejects_bad_values():
    with pytest.raises(ValueError, match="steps"):
        time_schedule(0)
    with pytest.raises(ValueError, match="rescale_t"):
        time_schedule(5, 0.0)
    with pytest.raises(ValueError, match="cfg_interval"):
        FlowEulerGuidanceIntervalSampler(1e-5).sample(lambda x, t, c: x, torch.zeros(1, 2), cond=None,
                                                      neg_cond=None, steps=2, cfg_interval=(0.9, 0.1))


def test_cfg_sampler_guides_every_step_and_plain_sampler_never():
    calls = []

    def model(x, t, cond):
        calls.append(float(cond[0, 0]))
        return x * 0 + cond[:, :1]

    noise = torch.ones(2, 1)
    cond, neg = torch.ones(1, 1), torch.zeros(1, 1)
    out = FlowEulerCfgSampler(0.0).sample(model, noise, cond=cond, neg_cond=neg, steps=3, cfg_strength=2.0)
    assert calls == [1.0, 0.0] * 3
    # v = (1 + 2) * 1 - 2 * 0 = 3 at every step, integrated over t in [1, 0]
    assert torch.allclose(out.samples, noise - 3.0)
    calls.clear()
    FlowEulerSampler(0.0).sample(model, noise, cond=cond, steps=4)
    assert calls == [1.0] * 4


def test_callback_sees_every_step_and_can_interrupt():
    seen = []

    class Stop(Exception):
        pass

    def callback(i, n, x):
        seen.append((i, n))
        if i == 1:
            raise Stop

    with pytest.raises(Stop):
        FlowEulerSampler(1e-5).sample(lambda x, t, c: x, torch.ones(1, 3), steps=5, callback=callback)
    assert seen == [(0, 5), (1, 5)]


def test_multi_view_modes_follow_the_official_semantics():
    seen = []

    def model(x, t, cond):
        seen.append(float(cond[0, 0]))
        return x * 0 + cond[:, :1]

    views = torch.tensor([[1.0], [2.0], [4.0]])
    neg = torch.zeros(1, 1)
    sampler = FlowEulerGuidanceIntervalSampler(0.0)
    # stochastic: step k uses view k % N, then the neg call inside the interval
    sampler.sample(model, torch.zeros(1, 1), cond=views, neg_cond=neg, steps=4, cfg_strength=1.0,
                   cfg_interval=(0.0, 1.0), views_mode="stochastic")
    assert seen == [1.0, 0.0, 2.0, 0.0, 4.0, 0.0, 1.0, 0.0]
    # multidiffusion: the conditional velocity is the mean over views
    out = sampler.sample(model, torch.zeros(1, 1), cond=views, neg_cond=neg, steps=2, cfg_strength=0.0,
                         views_mode="multidiffusion")
    assert torch.allclose(out.samples, torch.tensor([[-7.0 / 3.0]]))
    weighted = sampler.sample(model, torch.zeros(1, 1), cond=views, neg_cond=neg, steps=2, cfg_strength=0.0,
                              views_mode="multidiffusion", view_weights=[0.0, 1.0, 1.0])
    assert torch.allclose(weighted.samples, torch.tensor([[-3.0]]))
    seen.clear()
    sampler.sample(model, torch.zeros(1, 1), cond=views, neg_cond=None, steps=6, views_mode="stochastic",
                   view_weights=[2.0, 1.0, 0.0])
    assert sorted(seen) == [1.0] * 4 + [2.0] * 2
    with pytest.raises(ValueError, match="view_weights"):
        sampler.sample(model, torch.zeros(1, 1), cond=views, steps=2, views_mode="stochastic", view_weights=[1.0])
