"""Low-discrepancy sequences (the official code's Hammersley points: render cameras, Gaussian offsets)."""
from __future__ import annotations

import math
from typing import Sequence, Tuple

__all__ = ["radical_inverse", "hammersley_yaw_pitch"]


def radical_inverse(base: int, n: int) -> float:
    """The base-``base`` digits of n mirrored behind the point (van der Corput), in [0, 1); the
    official ``radical_inverse``, with its order of float roundings."""
    value, weight = 0.0, 1.0 / base
    while n > 0:
        value += (n % base) * weight
        n //= base
        weight /= base
    return value


def hammersley_yaw_pitch(index: int, num_views: int, offset: Sequence[float] = (0.0, 0.0)) -> Tuple[float, float]:
    """(yaw, pitch) in radians of view ``index`` of ``num_views`` (official
    ``sphere_hammersley_sequence``): u = index / num_views + offset[0] / num_views and
    v = radical_inverse_2(index) + offset[1] (Hammersley), u warped piecewise so that the views
    thin out towards the poles, pitch = arccos(1 - 2u) - pi / 2, yaw = 2 pi v."""
    u = index / num_views + offset[0] / num_views
    v = radical_inverse(2, index) + offset[1]
    u = 2 * u if u < 0.25 else 2 / 3 * u + 1 / 3
    return v * 2 * math.pi, math.acos(1 - 2 * u) - math.pi / 2
