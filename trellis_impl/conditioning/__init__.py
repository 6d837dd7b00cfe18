"""Conditioning of the TRELLIS pipelines: image preparation, the DINOv2 image encoder and the CLIP
text encoder."""
from .clip_text import CLIP_MAX_TOKENS, OFFICIAL_TEXT_COND_MODEL, ClipTextEncoder
from .dinov2 import (DINOV2_VITL14_REG4, DinoV2, DinoV2Config, config_from_hf, config_to_hf, encode_image,
                     hf_to_hub_state_dict, hub_to_hf_state_dict, load_dinov2, save_dinov2)
from .image_preprocess import (IMAGENET_MEAN, IMAGENET_STD, MIN_OBJECT_SPAN, TRELLIS_IMAGE_SIZE, BackgroundRemover,
                               images_to_tensor, normalize_imagenet, object_crop_box, preprocess_image,
                               to_rgb_or_rgba)
from .tiny_clip import write_tiny_clip_folder

__all__ = ["DinoV2Config", "DINOV2_VITL14_REG4", "DinoV2", "load_dinov2", "save_dinov2", "encode_image",
           "hub_to_hf_state_dict", "hf_to_hub_state_dict", "config_from_hf", "config_to_hf",
           "TRELLIS_IMAGE_SIZE", "MIN_OBJECT_SPAN", "IMAGENET_MEAN", "IMAGENET_STD", "to_rgb_or_rgba",
           "object_crop_box", "BackgroundRemover", "preprocess_image", "images_to_tensor", "normalize_imagenet",
           "ClipTextEncoder", "CLIP_MAX_TOKENS", "OFFICIAL_TEXT_COND_MODEL", "write_tiny_clip_folder"]
