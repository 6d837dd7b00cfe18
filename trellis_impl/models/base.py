"""What every TRELLIS model shares: the torso precision switch and its backend choices."""
from __future__ import annotations

from typing import Callable, Dict, Iterable, Optional

import torch
import torch.nn as nn
import torch.utils.checkpoint

from ..backends.registry import backends_in_scope
from ..sparse import SparseConv3d, SparseTensor

__all__ = ["TrellisModel"]

# Layers whose weights live in the torso dtype (the official convert_module_to_f16 set); norms,
# embeddings and buffers stay float32 and compute in float32. A host's layer classes
# (``operations=``, modules.ops) subclass these, so isinstance finds them too.
_TORSO_LAYERS = (nn.Linear, nn.Conv3d, nn.ConvTranspose3d, SparseConv3d)


class TrellisModel(nn.Module):
    """Base of the model classes.

    The "torso" (transformer blocks, residual blocks, upsampling blocks) holds its Linear/Conv
    weights in ``self.dtype`` and runs their products in it; input/output layers, norms, the
    timestep embedder and buffers stay float32, as in the official models. ``use_fp16=True`` in
    a config means a float16 torso (the released layout); the constructors' ``dtype`` argument
    and ``set_compute_dtype`` choose any dtype. Unlike the official models, the activations
    between the products (the residual stream, norms, modulation) stay float32 in every torso
    dtype: in bfloat16 this halves the error against the float32 reference (docs/gpu.md).

    Every constructor also takes ``device`` (where the weights are created) and ``operations``
    (the layer classes, ``modules.ops``), as ComfyUI's model ports do; with a host's classes the
    products run as those classes do (ComfyUI's ``manual_cast``: in the activations' float32).
    """

    dtype: torch.dtype = torch.float32
    #: Backends this model's calls use, {family: name} (``backends.registry.FAMILIES``), e.g.
    #: ``{"attention": "sdpa"}``; empty (the default): the process's choice. A host sets it per model.
    backends: Dict[str, str] = {}
    #: Called before each block (``run_block``); it may raise to stop a long forward pass, e.g. a
    #: host's Cancel (the released decoders take tens of seconds per call on a CPU).
    block_hook: Optional[Callable[[], None]] = None
    # Recompute each block's activations in the backward pass instead of storing them (the configs'
    # ``use_checkpoint``; training only, inference is unaffected).
    use_checkpoint: bool = False

    def __call__(self, *args, **kwargs):
        if not self.backends:
            return super().__call__(*args, **kwargs)
        with backends_in_scope(self.backends):
            return super().__call__(*args, **kwargs)

    def run_block(self, block: nn.Module, *args):
        """``block(*args)``, gradient-checkpointed when ``use_checkpoint`` and training with grad;
        ``block_hook`` first."""
        if self.block_hook is not None:
            self.block_hook()
        if self.use_checkpoint and self.training and torch.is_grad_enabled():
            return torch.utils.checkpoint.checkpoint(block, *args, use_reentrant=False)
        return block(*args)

    def torso(self) -> Iterable[nn.Module]:
        raise NotImplementedError

    @property
    def device(self) -> torch.device:
        """Where the weights are."""
        return next(self.parameters()).device

    @device.setter
    def device(self, value) -> None:
        # Hosts record where they moved a model by assigning it (ComfyUI's ModelPatcher sets
        # ``model.device`` after moving the weights); the weights stay the answer, so it is checked only.
        torch.device(value)

    def set_compute_dtype(self, dtype: torch.dtype) -> "TrellisModel":
        """Store and compute the torso in ``dtype`` (float32, float16 or bfloat16)."""
        if dtype not in (torch.float32, torch.float16, torch.bfloat16):
            raise ValueError(f"compute dtype must be float32, float16 or bfloat16, got {dtype}")
        for part in self.torso():
            for layer in part.modules():
                if isinstance(layer, _TORSO_LAYERS):
                    for p in layer.parameters():
                        p.data = p.data.to(dtype)
        self.dtype = dtype
        return self

    def _check_coords(self, x: SparseTensor, resolution: int) -> None:
        """Voxel coordinates must lie on the model's grid (checked once per coordinate set)."""
        if "max_coord" not in x.cache:
            x.cache["max_coord"] = int(x.coords[:, 1:].max()) if x.coords.shape[0] else -1
        if x.cache["max_coord"] >= resolution:
            raise ValueError(f"{type(self).__name__}: voxel coordinates must be in [0, {resolution}), "
                             f"got a maximum of {x.cache['max_coord']}")

    @staticmethod
    def _check_cond(cond: torch.Tensor, batch: int, channels: int, model: str) -> None:
        if cond.dim() != 3 or cond.shape[0] != batch or cond.shape[2] != channels:
            raise ValueError(f"{model}: cond must be [{batch}, tokens, {channels}], got {list(cond.shape)}")

    def _init_precision(self, use_fp16: bool, dtype: Optional[torch.dtype] = None) -> None:
        """Torso in ``dtype``; None: float16 when ``use_fp16`` (the config's), else float32."""
        self.use_fp16 = use_fp16
        self.set_compute_dtype(dtype or (torch.float16 if use_fp16 else torch.float32))
