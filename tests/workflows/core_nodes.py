"""Stand-ins for the core ComfyUI nodes the example workflows use, with the core INPUT_TYPES (widget
order as in ComfyUI 0.3.64 ``nodes.py`` / ``comfy_extras``). The image and 3D nodes run; the 2D
diffusion nodes are definitions only (they need real weights), so a workflow chaining a 2D
generator into TRELLIS is executed from its image onwards (``cut_at_image``)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from PIL import Image


class LoadImage:
    input_dir = Path(".")

    @classmethod
    def INPUT_TYPES(cls):
        files = sorted(p.name for p in cls.input_dir.glob("*.png")) if cls.input_dir.is_dir() else []
        return {"required": {"image": (files, {"image_upload": True})}}
    RETURN_TYPES = ("IMAGE", "MASK")
    FUNCTION = "load_image"

    def load_image(self, image):
        img = Image.open(self.input_dir / image)
        rgba = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        pixels = torch.from_numpy(rgba[..., :3])[None]
        if "A" in img.getbands():
            mask = 1.0 - torch.from_numpy(rgba[..., 3])[None]
        else:
            mask = torch.zeros(1, 64, 64)
        return pixels, mask


class SaveImage:
    output_dir = Path(".")

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"images": ("IMAGE",), "filename_prefix": ("STRING", {"default": "ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}
    RETURN_TYPES = ()
    FUNCTION = "save_images"
    OUTPUT_NODE = True

    def save_images(self, images, filename_prefix="ComfyUI"):
        assert images.dim() == 4 and images.shape[-1] == 3 and 0 <= float(images.min()) and float(images.max()) <= 1
        written = []
        for i, image in enumerate(images):
            path = self.output_dir / f"{filename_prefix}_{i:05d}_.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray((image.numpy() * 255).round().astype(np.uint8)).save(path)
            written.append(str(path))
        return {"ui": {"images": written}}


class Preview3D:
    output_dir = Path(".")
    _ui_extra_image_slot = True  # the front end adds a pseudo widget slot "image"

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"model_file": ("STRING", {"default": "", "multiline": False})},
                "optional": {"camera_info": ("LOAD3D_CAMERA", {})}}
    RETURN_TYPES = ()
    FUNCTION = "process"
    OUTPUT_NODE = True

    def process(self, model_file, **kwargs):
        path = self.output_dir / model_file
        if not path.is_file():
            raise FileNotFoundError(f"Preview3D: {model_file} is not under the output folder")
        return {"ui": {"result": [model_file, None]}}


class SaveGLB:
    output_dir = Path(".")
    _ui_extra_image_slot = True

    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"mesh": ("MESH",), "filename_prefix": ("STRING", {"default": "mesh/ComfyUI"})},
                "hidden": {"prompt": "PROMPT", "extra_pnginfo": "EXTRA_PNGINFO"}}
    RETURN_TYPES = ()
    FUNCTION = "save"
    OUTPUT_NODE = True

    def save(self, mesh, filename_prefix):
        from trellis_impl.export.mesh_files import save_glb
        vertices, faces = mesh.vertices, mesh.faces
        assert vertices.dim() == 3 and vertices.shape[-1] == 3 and faces.dim() == 3 and faces.shape[-1] == 3
        written = []
        for i in range(vertices.shape[0]):
            path = self.output_dir / f"{filename_prefix}_{i:05d}_.glb"
            path.parent.mkdir(parents=True, exist_ok=True)
            save_glb(path, vertices[i].numpy(), faces[i].numpy())
            written.append(os.fspath(path))
        return {"ui": {"3d": written}}


class JoinImageWithAlpha:
    """comfy_extras/nodes_compositing.py: RGB IMAGE + MASK (as LoadImage gives it) -> RGBA IMAGE."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image": ("IMAGE",), "alpha": ("MASK",)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "execute"

    def execute(self, image, alpha):
        h, w = image.shape[1:3]
        alpha = 1.0 - torch.nn.functional.interpolate(alpha.reshape(-1, 1, *alpha.shape[-2:]), size=(h, w),
                                                      mode="bilinear")[:, 0]
        n = min(len(image), len(alpha))
        return (torch.stack([torch.cat((image[i][..., :3], alpha[i][..., None]), dim=2) for i in range(n)]),)


class ImageBatch:
    """nodes.py: concatenate two IMAGE batches (the second resized to the first's size)."""
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"image1": ("IMAGE",), "image2": ("IMAGE",)}}
    RETURN_TYPES = ("IMAGE",)
    FUNCTION = "batch"

    def batch(self, image1, image2):
        if image1.shape[1:] != image2.shape[1:]:
            image2 = torch.nn.functional.interpolate(image2.movedim(-1, 1), size=tuple(image1.shape[1:3]),
                                                     mode="bilinear").movedim(1, -1)
        return (torch.cat((image1, image2), dim=0),)


class _NeedsWeights:
    FUNCTION = "run"

    def run(self, **kwargs):
        raise RuntimeError(f"{type(self).__name__} needs real diffusion weights; cut the graph at its image")


class CheckpointLoaderSimple(_NeedsWeights):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"ckpt_name": (["sd_xl_base_1.0.safetensors"],)}}
    RETURN_TYPES = ("MODEL", "CLIP", "VAE")


class CLIPTextEncode(_NeedsWeights):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"text": ("STRING", {"multiline": True, "dynamicPrompts": True}), "clip": ("CLIP",)}}
    RETURN_TYPES = ("CONDITIONING",)


class EmptyLatentImage(_NeedsWeights):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"width": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                             "height": ("INT", {"default": 512, "min": 16, "max": 16384, "step": 8}),
                             "batch_size": ("INT", {"default": 1, "min": 1, "max": 4096})}}
    RETURN_TYPES = ("LATENT",)


class KSampler(_NeedsWeights):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {
            "model": ("MODEL",),
            "seed": ("INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff, "control_after_generate": True}),
            "steps": ("INT", {"default": 20, "min": 1, "max": 10000}),
            "cfg": ("FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0, "step": 0.1, "round": 0.01}),
            "sampler_name": (["euler", "euler_ancestral", "dpmpp_2m"],),
            "scheduler": (["normal", "karras", "simple"],),
            "positive": ("CONDITIONING",), "negative": ("CONDITIONING",), "latent_image": ("LATENT",),
            "denoise": ("FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0, "step": 0.01})}}
    RETURN_TYPES = ("LATENT",)


class VAEDecode(_NeedsWeights):
    @classmethod
    def INPUT_TYPES(cls):
        return {"required": {"samples": ("LATENT",), "vae": ("VAE",)}}
    RETURN_TYPES = ("IMAGE",)


CORE_NODES = {cls.__name__: cls for cls in (LoadImage, SaveImage, Preview3D, SaveGLB, JoinImageWithAlpha, ImageBatch,
                                            CheckpointLoaderSimple,
                                            CLIPTextEncode, EmptyLatentImage, KSampler, VAEDecode)}
