"""The TRELLIS model classes, weight-compatible with the released checkpoints."""
from .registry import MODEL_CLASSES, CheckpointError, build_model, from_pretrained, load_model
from .slat_flow import ElasticSLatFlowModel, SLatFlowModel
from .slat_vae import (ElasticSLatEncoder, ElasticSLatGaussianDecoder, ElasticSLatMeshDecoder,
                       ElasticSLatRadianceFieldDecoder, SLatEncoder, SLatGaussianDecoder, SLatMeshDecoder,
                       SLatRadianceFieldDecoder)
from .sparse_structure_flow import SparseStructureFlowModel
from .sparse_structure_vae import SparseStructureDecoder, SparseStructureEncoder

__all__ = ["MODEL_CLASSES", "CheckpointError", "build_model", "load_model", "from_pretrained", *MODEL_CLASSES]
