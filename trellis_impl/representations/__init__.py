"""3D representations output by the TRELLIS SLat decoders."""
from .gaussians import Gaussian, Gaussians, gaussian_offset_perturbation, gaussians_from_decoder_output
from .mesh import Mesh, features_to_mesh, mesh_feature_channels, mesh_feature_layout
from .radiance_field import Strivec, strivec_from_decoder_output

__all__ = ["Gaussians", "Gaussian", "gaussian_offset_perturbation", "gaussians_from_decoder_output", "Mesh",
           "features_to_mesh", "mesh_feature_channels", "mesh_feature_layout", "Strivec", "strivec_from_decoder_output"]
