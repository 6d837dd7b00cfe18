"""TF32 tensor cores for float32 work, switched for one block: PyTorch's switches are process-wide,
so library code sets them around its own work and puts them back."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Optional

import torch

__all__ = ["tf32_products"]


@contextmanager
def tf32_products(matmul: bool = True, convolutions: Optional[bool] = None):
    """Inside the block, CUDA float32 matrix products use TF32 tensor cores (inputs rounded to a
    10-bit mantissa, sums in float32) when ``matmul`` is true and exact float32 otherwise; cuDNN
    convolutions likewise when ``convolutions`` is given (None leaves them as they are: PyTorch's
    default is TF32). The previous settings are restored on exit. No effect on CPU work."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = matmul
    if convolutions is not None:
        torch.backends.cudnn.allow_tf32 = convolutions
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved
