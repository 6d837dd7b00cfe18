"""The layer classes the models are built from, replaceable by a host (``operations=``).

Every model class and building block takes ``operations=None``, as ComfyUI's own model ports do,
and builds each layer as ``operations.Linear(..., dtype=dtype, device=device)``, so a host can
pass its own namespace (``comfy.ops.manual_cast``, ``comfy.ops.disable_weight_init``) to cast
and offload the weights without patching classes at run time.

A namespace is any object (usually a class) with these attributes:

* ``Linear``, ``Conv2d`` (DINOv2 only), ``Conv3d``, ``LayerNorm``, ``GroupNorm``: required;
  subclasses of the torch layers of the same name (the same constructor arguments and
  parameter names, so state dicts load unchanged, and ``isinstance`` still finds the torso
  layers, ``models.base``).
* ``SparseConv3d``, ``SparseGroupNorm32``: optional; subclasses of the project's classes
  (``trellis_impl.sparse``). Where a namespace lacks one (ComfyUI's have none), ``TrellisOps``'s
  is used.

Parameters outside these layers (QK-norm gamma, DINOv2's tokens and LayerScale) are plain
parameters, moved with the module.

Compute dtype: the TRELLIS models' norms run in float32 (``modules.norm.norm32``) whatever the
class.
``TrellisOps``'s Linear and Conv3d cast their input to the weight dtype (a float16 torso runs
its products in float16); a host's classes decide for themselves: ComfyUI's ``manual_cast``
casts the weights to the input (the float32 activations), and layers that do not cast at all
need a float32 torso (``TrellisModel.set_compute_dtype``).
"""
from __future__ import annotations

import torch.nn as nn

from ..sparse import SparseConv3d, SparseGroupNorm32
from . import layers

__all__ = ["TrellisOps", "resolve_operations", "REQUIRED_LAYERS", "SPARSE_LAYERS"]

REQUIRED_LAYERS = ("Linear", "Conv2d", "Conv3d", "LayerNorm", "GroupNorm")
SPARSE_LAYERS = ("SparseConv3d", "SparseGroupNorm32")


class TrellisOps:
    """The default namespace: the layers the released models were written with."""
    Linear = layers.Linear
    Conv2d = nn.Conv2d
    Conv3d = layers.Conv3d
    LayerNorm = nn.LayerNorm
    GroupNorm = nn.GroupNorm
    SparseConv3d = SparseConv3d
    SparseGroupNorm32 = SparseGroupNorm32


class _WithSparseDefaults:
    """A host namespace completed with ``TrellisOps``'s sparse layers where it has none."""

    def __init__(self, operations):
        for name in REQUIRED_LAYERS + SPARSE_LAYERS:
            setattr(self, name, getattr(operations, name, None) or getattr(TrellisOps, name))


def resolve_operations(operations=None):
    """The namespace to build from: ``TrellisOps`` for None, else ``operations`` (completed
    with the default sparse layers when it lacks them). TypeError when a required layer is missing."""
    if operations is None:
        return TrellisOps
    missing = [name for name in REQUIRED_LAYERS if not hasattr(operations, name)]
    if missing:
        raise TypeError(f"operations {operations!r} has no {', '.join(missing)} "
                        f"(needs {', '.join(REQUIRED_LAYERS)}; see trellis_impl.modules.ops)")
    if all(hasattr(operations, name) for name in SPARSE_LAYERS):
        return operations
    return _WithSparseDefaults(operations)
