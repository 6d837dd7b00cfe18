"""Euler samplers for the rectified-flow models, with classifier-free guidance (CFG) and the
guidance interval of the released pipelines.

Time runs from 1 (noise) to 0 (data): ``x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) eps``;
the model predicts the velocity ``v`` at time ``1000 t``. The schedule is
``t = r s / (1 + (r - 1) s)``, ``s = linspace(1, 0, steps + 1)`` (float64), ``r = rescale_t``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from ..sparse import SparseTensor, sparse_cat
from .step_cache import StepCache

__all__ = ["FlowEulerSampler", "FlowEulerCfgSampler", "FlowEulerGuidanceIntervalSampler", "SamplerOutput",
           "InversionOutput", "StepCache", "time_schedule", "noised"]

Sample = Union[torch.Tensor, SparseTensor]
# Called after every step with (step index, number of steps, x after the step); may raise to stop.
StepCallback = Callable[[int, int, Sample], None]
# Called after every step with (step index, t, t_prev, x after the step); returns the x to go on
# with (e.g. RePaint: known values outside a mask) or None to keep x.
StepHook = Callable[[int, float, float, Sample], Optional[Sample]]


@dataclass
class SamplerOutput:
    """``samples``: the final x_0; ``pred_x_t`` / ``pred_x_0``: per step, x after the step and
    the model's x_0 estimate."""
    samples: Sample = None
    pred_x_t: List[Sample] = field(default_factory=list)
    pred_x_0: List[Sample] = field(default_factory=list)


def time_schedule(steps: int, rescale_t: float = 1.0) -> List[Tuple[float, float]]:
    """The (t, t_prev) pairs of ``steps`` Euler steps, as Python floats (float64)."""
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if rescale_t <= 0:
        raise ValueError(f"rescale_t must be > 0, got {rescale_t}")
    s = np.linspace(1, 0, steps + 1)
    t = rescale_t * s / (1 + (rescale_t - 1) * s)
    return [(float(t[i]), float(t[i + 1])) for i in range(steps)]


def noised(x0: Sample, eps: Sample, t: float, sigma_min: float) -> Sample:
    """The flow's forward process: ``x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) eps``."""
    return x0 * (1 - t) + eps * (sigma_min + (1 - sigma_min) * t)


@dataclass
class InversionOutput:
    """Euler inversion from t = 0 up: ``times`` ascending (0 first, the schedule's times) and the
    state x at each (``states[0]`` is the given x_0)."""
    times: List[float] = field(default_factory=list)
    states: List[Sample] = field(default_factory=list)

    def at(self, t: float) -> Sample:
        """The state at schedule time t (exact float match, else the nearest time)."""
        i = min(range(len(self.times)), key=lambda k: abs(self.times[k] - t))
        return self.states[i]


def _batch_size(x: Sample) -> int:
    return x.batch_size if isinstance(x, SparseTensor) else x.shape[0]


def _repeat_cond(cond: Any, batch: int) -> Any:
    if isinstance(cond, torch.Tensor) and cond.shape[0] == 1 and batch > 1:
        return cond.repeat(batch, *([1] * (cond.dim() - 1)))
    return cond


def _stack(x: Sample, copies: int) -> Sample:
    """``copies`` batches of x in one; for sparse x the stacked coordinates (and so the model's
    caches for them) are built once and kept in x's cache across sampler steps."""
    if not isinstance(x, SparseTensor):
        return torch.cat([x] * copies)
    key = f"stacked_{copies}"
    if key not in x.cache:
        x.cache[key] = sparse_cat([x] * copies)
    stacked = x.cache[key]
    return stacked.replace(torch.cat([x.feats] * copies))


def _halves(out: Sample, like: Sample) -> Tuple[Sample, Sample]:
    """Split the output of a doubled-batch call back into two outputs shaped like ``like``."""
    if isinstance(like, SparseTensor):
        n = like.feats.shape[0]
        return like.replace(out.feats[:n]), like.replace(out.feats[n:])
    n = like.shape[0]
    return out[:n], out[n:]


class FlowEulerSampler:
    """Plain Euler sampler (no guidance).

    Args:
        sigma_min: noise scale at t = 0 (1e-5 in the released pipelines).
    """

    def __init__(self, sigma_min: float):
        self.sigma_min = sigma_min

    def _v_to_xstart(self, x_t: Sample, t: float, v: Sample) -> Sample:
        return (1 - self.sigma_min) * x_t - (self.sigma_min + (1 - self.sigma_min) * t) * v

    def _model_call(self, model, x_t: Sample, t: float, cond: Any, **kwargs) -> Sample:
        batch = _batch_size(x_t)
        t_model = torch.full((batch,), 1000 * t, device=x_t.device, dtype=torch.float32)
        return model(x_t, t_model, _repeat_cond(cond, batch), **kwargs)

    def _velocity(self, model, x_t: Sample, t: float, step: int, cond: Any, **kwargs) -> Sample:
        return self._model_call(model, x_t, t, cond, **kwargs)

    def _regime(self, t: float, **kwargs):
        """Which velocity field step time ``t`` samples (one, without guidance)."""
        return None

    @torch.no_grad()
    def sample_once(self, model, x_t: Sample, t: float, t_prev: float, cond: Any = None, step: int = 0, **kwargs):
        """One Euler step from t to t_prev (``step``: its index); returns (x_{t_prev}, x_0 estimate)."""
        return self._euler_step(x_t, t, t_prev, self._velocity(model, x_t, t, step, cond, **kwargs))

    def _euler_step(self, x_t: Sample, t: float, t_prev: float, v: Sample):
        """(x_{t_prev}, x_0 estimate) from the velocity at t."""
        return x_t - (t - t_prev) * v, self._v_to_xstart(x_t, t, v)

    @torch.no_grad()
    def sample(self, model, noise: Sample, cond: Any = None, steps: int = 50, rescale_t: float = 1.0,
               verbose: bool = False, callback: Optional[StepCallback] = None, t_start: float = 1.0,
               step_hook: Optional[StepHook] = None, step_cache: Optional[StepCache] = None,
               **kwargs) -> SamplerOutput:
        """Integrate from ``noise`` (t = 1) to t = 0.

        Args:
            model: ``model(x, t [B] in 0..1000, cond) -> v`` (dense tensor or SparseTensor).
            noise: x at t = 1: dense [B, ...] or SparseTensor (x at ``t_start`` when given).
            cond: condition [B or 1, L, C] (batch 1 is repeated to B).
            steps, rescale_t: the schedule (``time_schedule``).
            verbose: print a progress bar (tqdm when installed).
            callback: called after every step (progress bars, interrupts).
            t_start: start at this time (SDEdit): only the schedule below t_start is integrated,
                the first step going from t_start to the next schedule time (1.0: the full run;
                0: no step, ``noise`` is returned). Step indices stay those of the full schedule.
            step_hook: ``hook(i, t, t_prev, x) -> x or None`` after every step; may replace x.
            step_cache: forecast the velocity at most steps instead of running the model
                (``StepCache``; None: the model at every step, the official sampler).
        """
        pairs = time_schedule(steps, rescale_t)
        if not 0.0 <= t_start <= 1.0:
            raise ValueError(f"t_start must be in [0, 1], got {t_start}")
        indexed = list(enumerate(pairs))
        if t_start < 1.0:
            indexed = [(i, (min(t, t_start), t_prev)) for i, (t, t_prev) in indexed if t_prev < t_start]
        out = SamplerOutput()
        x = noise
        if step_cache is not None:
            step_cache.reset()
        for k, (i, (t, t_prev)) in enumerate(_progress(indexed, verbose)):
            if step_cache is not None:
                step_cache.enter(self._regime(t, **kwargs))
            if step_cache is None or step_cache.is_anchor(i, steps):
                v = self._velocity(model, x, t, i, cond, **kwargs)
                if step_cache is not None:
                    step_cache.record(t, v)
            else:
                v = step_cache.forecast(t)
            x, x0 = self._euler_step(x, t, t_prev, v)
            if step_hook is not None:
                replaced = step_hook(i, t, t_prev, x)
                x = x if replaced is None else replaced
            out.pred_x_t.append(x)
            out.pred_x_0.append(x0)
            if callback is not None:
                callback(k, len(indexed), x)
        out.samples = x
        return out

    @torch.no_grad()
    def invert(self, model, x0: Sample, cond: Any = None, steps: int = 50, rescale_t: float = 1.0,
               t_end: float = 1.0, callback: Optional[StepCallback] = None, **kwargs) -> InversionOutput:
        """Euler inversion: integrate ``dx/dt = v(x, t)`` from ``x0`` (t = 0) up through the
        schedule's times to ``t_end`` (the schedule reversed; the velocity is taken at the lower
        end of each step, with the same guidance options as ``sample``). One model evaluation
        (pair with CFG) per step, as many as a sampling run."""
        times = [t for _, t in reversed(time_schedule(steps, rescale_t))] + [1.0]  # 0 ... 1 ascending
        times = [t for t in times if t <= t_end]
        out = InversionOutput(times=[times[0]], states=[x0])
        n = len(times) - 1
        x = x0
        for k in range(n):
            t, t_next = times[k], times[k + 1]
            v = self._velocity(model, x, t, steps - 1 - k, cond, **kwargs)
            x = x + (t_next - t) * v
            out.times.append(t_next)
            out.states.append(x)
            if callback is not None:
                callback(k, n, x)
        return out


class FlowEulerGuidanceIntervalSampler(FlowEulerSampler):
    """Euler with CFG ``(1 + w) v(cond) - w v(neg_cond)`` applied only when
    ``cfg_interval[0] <= t <= cfg_interval[1]``; plain ``v(cond)`` elsewhere.

    The cond and neg_cond forwards run as two calls, cond first (the official order). With
    ``batch_cfg=True`` they run as one call on a doubled batch: the same values, faster on GPU.

    Several views (``cond`` of N rows for one asset, ``views_mode``): 'stochastic' conditions
    step k on one view, 'multidiffusion' averages the conditional velocities of all views (the
    official pipelines' multi-image modes). ``view_weights`` (N non-negative numbers) extends
    both: the share of steps each view gets, or the weights of the average; None (equal weights)
    reproduces the official result exactly.
    """

    def __init__(self, sigma_min: float, batch_cfg: bool = False):
        super().__init__(sigma_min)
        self.batch_cfg = batch_cfg

    def _conditional(self, model, x_t: Sample, t: float, step: int, cond: Any, views_mode: Optional[str],
                     view_weights: Optional[Sequence[float]], **kwargs) -> Sample:
        if views_mode is None:
            return self._model_call(model, x_t, t, cond, **kwargs)
        if views_mode == "stochastic":
            i = _view_of_step(step, cond.shape[0], view_weights)
            return self._model_call(model, x_t, t, cond[i:i + 1], **kwargs)
        preds = [self._model_call(model, x_t, t, cond[i:i + 1], **kwargs) for i in range(cond.shape[0])]
        if view_weights is None:
            return sum(preds) / len(preds)
        total = float(sum(view_weights))
        return sum(p * (w / total) for p, w in zip(preds, view_weights))

    def _regime(self, t: float, neg_cond: Any = None, cfg_interval: Sequence[float] = (0.0, 1.0), **kwargs):
        """Guided or not: the velocity field switches where the CFG interval ends."""
        return neg_cond is not None and cfg_interval[0] <= t <= cfg_interval[1]

    def _velocity(self, model, x_t: Sample, t: float, step: int, cond: Any, neg_cond: Any = None,
                  cfg_strength: float = 0.0, cfg_interval: Sequence[float] = (0.0, 1.0),
                  views_mode: Optional[str] = None, view_weights: Optional[Sequence[float]] = None,
                  **kwargs) -> Sample:
        guided = self._regime(t, neg_cond, cfg_interval)
        if guided and self.batch_cfg and views_mode is None:
            batch = _batch_size(x_t)
            both = torch.cat([_repeat_cond(cond, batch), _repeat_cond(neg_cond, batch)])
            pred, neg_pred = _halves(self._model_call(model, _stack(x_t, 2), t, both, **kwargs), x_t)
            return (1 + cfg_strength) * pred - cfg_strength * neg_pred
        pred = self._conditional(model, x_t, t, step, cond, views_mode, view_weights, **kwargs)
        if not guided:
            return pred
        neg_pred = self._model_call(model, x_t, t, neg_cond, **kwargs)
        return (1 + cfg_strength) * pred - cfg_strength * neg_pred

    @torch.no_grad()
    def sample(self, model, noise: Sample, cond: Any = None, neg_cond: Any = None, steps: int = 50,
               rescale_t: float = 1.0, cfg_strength: float = 3.0, cfg_interval: Sequence[float] = (0.0, 1.0),
               verbose: bool = False, callback: Optional[StepCallback] = None, views_mode: Optional[str] = None,
               view_weights: Optional[Sequence[float]] = None, **kwargs) -> SamplerOutput:
        """As ``FlowEulerSampler.sample`` plus ``neg_cond``, ``cfg_strength`` (w), ``cfg_interval``
        and the multi-view options (class docstring)."""
        if len(cfg_interval) != 2 or not cfg_interval[0] <= cfg_interval[1]:
            raise ValueError(f"cfg_interval must be [low, high] with low <= high, got {list(cfg_interval)}")
        if views_mode not in (None, "stochastic", "multidiffusion"):
            raise ValueError(f"views_mode must be None, 'stochastic' or 'multidiffusion', got {views_mode!r}")
        if view_weights is not None:
            if views_mode is None or len(view_weights) != cond.shape[0] or min(view_weights) < 0 \
                    or sum(view_weights) <= 0:
                raise ValueError(f"view_weights must be {cond.shape[0]} non-negative numbers, not all zero, "
                                 f"with a views_mode; got {list(view_weights)}")
        return super().sample(model, noise, cond, steps, rescale_t, verbose, callback, neg_cond=neg_cond,
                              cfg_strength=cfg_strength, cfg_interval=cfg_interval, views_mode=views_mode,
                              view_weights=view_weights, **kwargs)


def _view_of_step(step: int, num_views: int, weights: Optional[Sequence[float]]) -> int:
    """Which view conditions ``step`` in 'stochastic' mode: ``step % N`` for equal weights (the
    official order); otherwise a deterministic weighted round robin (each view gets a share of
    the steps proportional to its weight, spread evenly)."""
    if weights is None:
        return step % num_views
    total = float(sum(weights))
    credit = [0.0] * num_views
    chosen = 0
    for _ in range(step + 1):
        credit = [c + w / total for c, w in zip(credit, weights)]
        chosen = max(range(num_views), key=lambda i: credit[i])
        credit[chosen] -= 1.0
    return chosen


class FlowEulerCfgSampler(FlowEulerGuidanceIntervalSampler):
    """Euler with CFG at every step (the official sampler). A ``cfg_interval`` given explicitly
    (the nodes always pass one) limits guidance as in ``FlowEulerGuidanceIntervalSampler``."""

    @torch.no_grad()
    def sample(self, model, noise: Sample, cond: Any = None, neg_cond: Any = None, steps: int = 50,
               rescale_t: float = 1.0, cfg_strength: float = 3.0, verbose: bool = False,
               callback: Optional[StepCallback] = None, cfg_interval: Sequence[float] = (0.0, 1.0),
               **kwargs) -> SamplerOutput:
        return super().sample(model, noise, cond, neg_cond, steps, rescale_t, cfg_strength, cfg_interval, verbose,
                              callback, **kwargs)


def _progress(items, verbose: bool):
    if not verbose:
        return items
    try:
        from tqdm import tqdm
    except ImportError:
        return items
    return tqdm(items, desc="Sampling")
