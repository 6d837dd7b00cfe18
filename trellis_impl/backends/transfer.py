"""Host -> device copies that do not make the host wait for the device.

``torch.tensor(values, device="cuda")`` copies from pageable memory and then synchronises the
stream: the host waits for every kernel queued before it and can no longer run ahead of the GPU
(a training step that builds small constants per object waits that way once per constant). An
asynchronous copy from pageable memory is staged by the driver at once, so the host buffer may be
freed straight after, and nothing waits.
"""
from __future__ import annotations

from typing import Optional

import torch

__all__ = ["to_device"]


def to_device(values, device, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """``values`` (a number, a nested sequence, a NumPy array or a CPU tensor) as a tensor of
    ``dtype`` (default: inferred as ``torch.as_tensor`` does) on ``device``, copied without
    synchronising."""
    return torch.as_tensor(values, dtype=dtype).to(device, non_blocking=True)
