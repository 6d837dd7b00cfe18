"""The trainable stages by config name."""
from typing import Dict, Type

from .base import Stage
from .encoder_distill import EncoderDistillStage
from .flows import LatentFlowStage, StructureFlowStage
from .slat_vae import GaussianDecoderStage, MeshDecoderStage, RadianceFieldDecoderStage, SLatGaussianVAEStage
from .structure_vae import StructureVAEStage

STAGES: Dict[str, Type[Stage]] = {cls.name: cls for cls in (
    StructureVAEStage, SLatGaussianVAEStage, GaussianDecoderStage, RadianceFieldDecoderStage, MeshDecoderStage, StructureFlowStage,
    LatentFlowStage, EncoderDistillStage)}

__all__ = ["STAGES", "Stage"]
