"""3D representations output by the TRELLIS SLat decoders."""
from .gaussians import Gaussian, Gaussians, gaussian_offset_perturbation, gaussians_from_decoder_output
from .radiance_field import Strivec, strivec_from_decoder_output
