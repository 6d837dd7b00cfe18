"""A training-free step cache for the flow samplers: most steps forecast the velocity instead of
running the model.

The model (with its CFG pair) runs at "anchor" steps; between anchors the velocity is extrapolated
in t from the last anchors' velocities with a Taylor polynomial whose derivatives are finite
differences (order 1: the line through the last two anchors; order 2: the parabola through the
last three). This is the forecasting idea of TaylorSeer / HiCache applied to the sampler's output,
which TRELLIS's two flows expose directly. Anchors: the first ``warmup`` steps (the velocity turns
fastest near noise), then every ``interval``-th step, and the last step (the x_0 estimate it
makes is the result). With 25 steps, interval 3, warm-up 2: 10 model evaluations instead of 25.

The sampler's velocity field can switch mid-run: CFG applies only on an interval of t (the released
schedule guides 19 of its 25 steps). No forecast crosses such a switch: the sampler reports each
step's regime (``enter``), and a new regime starts over with two anchors (12 evaluations in all for
the released schedule at interval 3).

The deviation from the uncached sampler is measured, not guaranteed: docs/gpu.md ("Step cache").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple

from ..sparse import SparseTensor

__all__ = ["StepCache"]


def _feats(v):
    return v.feats if isinstance(v, SparseTensor) else v


@dataclass
class StepCache:
    """Velocity forecasting between anchor steps (module docstring).

    Args:
        interval: an anchor every ``interval`` steps after the warm-up (1: every step, no cache).
        order: 1 (linear) or 2 (quadratic) extrapolation; falls back to the order the anchors
            seen so far allow.
        warmup: the first steps, all anchors (at least 2, so a first-order forecast exists).
    """
    interval: int = 3
    order: int = 1
    warmup: int = 2
    _anchors: List[Tuple[float, object]] = field(default_factory=list, init=False, repr=False)
    _regime: object = field(default=None, init=False, repr=False)

    def __post_init__(self):
        if not isinstance(self.interval, int) or self.interval < 1:
            raise ValueError(f"step cache interval must be an integer >= 1, got {self.interval!r}")
        if self.order not in (1, 2):
            raise ValueError(f"step cache order must be 1 or 2, got {self.order!r}")
        if not isinstance(self.warmup, int) or self.warmup < 2:
            raise ValueError(f"step cache warmup must be an integer >= 2, got {self.warmup!r}")

    def reset(self) -> None:
        """Forget the anchors (a new sampling run)."""
        self._anchors, self._regime = [], None

    def enter(self, regime) -> None:
        """The coming step's velocity field (for the CFG-interval sampler: guided or not). A
        change forgets the anchors, so the next two steps run the model: velocities of one field
        say nothing about the other."""
        if regime != self._regime:
            self._anchors, self._regime = [], regime

    def is_anchor(self, step: int, steps: int) -> bool:
        """Whether step ``step`` (index in the full schedule of ``steps``) runs the model: a
        scheduled anchor, or any step while fewer than two anchors were recorded (a run that
        starts part-way, as SDEdit does, skips the warm-up steps)."""
        return self._scheduled(step, steps) or len(self._anchors) < 2

    def _scheduled(self, step: int, steps: int) -> bool:
        return step < self.warmup or step == steps - 1 or (step - self.warmup) % self.interval == self.interval - 1

    def evaluations(self, steps: int, switches: Tuple[int, ...] = ()) -> int:
        """How many steps of a full run of ``steps`` run the model, the regime changing before
        the steps in ``switches``."""
        probe, count = StepCache(self.interval, self.order, self.warmup), 0
        for i in range(steps):  # the sampler's loop, with the rules it uses
            probe.enter(sum(s <= i for s in switches))
            if probe.is_anchor(i, steps):
                probe.record(0.0, None)
                count += 1
        return count

    def record(self, t: float, v) -> None:
        """The model's velocity at anchor time ``t``."""
        self._anchors = (self._anchors + [(t, v)])[-3:]

    def forecast(self, t: float):
        """The velocity at ``t`` extrapolated from the last anchors (same type as they are)."""
        (t1, v1), (t2, v2) = self._anchors[-2:]
        a, b = _feats(v1), _feats(v2)
        slope = (b - a) / (t2 - t1)
        out = b + slope * (t - t2)
        if self.order == 2 and len(self._anchors) == 3:
            t0, v0 = self._anchors[0]
            earlier = (a - _feats(v0)) / (t1 - t0)
            curvature = (slope - earlier) / (t2 - t0)  # second divided difference
            out = out + curvature * (t - t2) * (t - t1)
        return v2.replace(out) if isinstance(v2, SparseTensor) else out

