"""Sparse-structure VAE: dense occupancy -> latent -> occupancy logits (official SparseStructureVaeTrainer).

Loss: ``dice`` (official config), ``bce`` or ``l1`` on the decoded occupancy, plus
``lambda_kl * KL`` of the posterior (official 1e-3); the encoder samples its posterior.
"""
from __future__ import annotations

from typing import Dict, List

import torch
import torch.nn as nn
import torch.nn.functional as F

from .. import losses
from .base import Stage, per_sample_normal

__all__ = ["StructureVAEStage", "occupancy_grid"]

LOSS_TYPES = ("dice", "bce", "l1")


def occupancy_grid(coords: torch.Tensor, resolution: int) -> torch.Tensor:
    """Voxels int [N, 3] -> float32 occupancy [1, R, R, R] (1 at the voxels)."""
    grid = torch.zeros(1, resolution, resolution, resolution)
    c = coords.long()
    grid[0, c[:, 0], c[:, 1], c[:, 2]] = 1.0
    return grid


class StructureVAEStage(Stage):
    name = "ss_vae"
    roles = ("encoder", "decoder")
    pipeline_keys = {"decoder": "sparse_structure_decoder"}
    data_kinds = ("voxels",)

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.loss_type = config.loss.get("loss_type", "dice")
        if self.loss_type not in LOSS_TYPES:
            raise ValueError(f"{config.source}: loss.loss_type must be one of {LOSS_TYPES}, got {self.loss_type!r}")
        self.lambda_kl = float(config.loss.get("lambda_kl", 1e-3))

    def initialise(self, role: str, model: nn.Module) -> None:
        pass  # the official SS VAE keeps torch's default Conv3d / norm initialisation

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        name = self.names[index]
        return {"ss": occupancy_grid(self.data.tensors(name, "voxels")["coords"], self.data.resolution)}

    def collate(self, items: List[dict]) -> dict:
        return {"ss": torch.stack([i["ss"] for i in items]), "generators": [i["generator"] for i in items]}

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        ss = batch["ss"].to(self.device)
        _, mean, logvar = models["encoder"](ss, sample_posterior=False, return_raw=True)
        noise = torch.stack(per_sample_normal(batch["generators"], [tuple(mean.shape[1:])] * ss.shape[0]))
        z = mean + torch.exp(0.5 * logvar) * noise.to(self.device)
        logits = models["decoder"](z).float()
        terms = {}
        if self.loss_type == "bce":
            terms["bce"] = losses.occupancy_bce(logits, ss)
        elif self.loss_type == "l1":
            terms["l1"] = F.l1_loss(torch.sigmoid(logits), ss)
        else:
            terms["dice"] = losses.occupancy_dice(logits, ss)
        terms["kl"] = losses.kl_diagonal_gaussian(mean.float(), logvar.float())
        terms["loss"] = terms[self.loss_type] + self.lambda_kl * terms["kl"]
        return terms
