"""tf32_products sets PyTorch's process-wide TF32 switches for its block only."""
import pytest
import torch

from trellis_impl.backends.precision import tf32_products


def test_switches_hold_inside_the_block_and_come_back():
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        with tf32_products():
            assert torch.backends.cuda.matmul.allow_tf32 is True and torch.backends.cudnn.allow_tf32 is True
        with tf32_products(matmul=False, convolutions=False):
            assert torch.backends.cuda.matmul.allow_tf32 is False and torch.backends.cudnn.allow_tf32 is False
        with pytest.raises(RuntimeError):
            with tf32_products(convolutions=False):
                raise RuntimeError("a failing step")
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == (False, True)
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before
