"""backends.transfer.to_device on the CPU: values and types as torch.as_tensor gives them (the
GPU side, that nothing synchronises, is tests/backends/test_gpu_backends.py)."""
from __future__ import annotations

import numpy as np
import torch

from trellis_impl.backends.transfer import to_device


def test_to_device_keeps_values_and_types():
    assert to_device(0.5, "cpu", torch.float32).dtype == torch.float32
    assert to_device([[1, 2], [3, 4]], torch.device("cpu"), torch.long).tolist() == [[1, 2], [3, 4]]
    array = np.arange(6, dtype=np.int32).reshape(2, 3)
    moved = to_device(array, "cpu")
    assert moved.dtype == torch.int32 and moved.shape == (2, 3) and moved.tolist() == array.tolist()
    assert to_device([1.0, 0.0], "cpu", torch.float64).dtype == torch.float64
