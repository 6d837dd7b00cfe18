"""Quality figures of a model folder on held-out objects (docs/demo_model.md, "Quality"):

* reconstruction: encode a mesh (``encode_asset``), decode the Gaussians and compare their renders
  with the mesh's own base-colour renders at the same cameras (PSNR, objects on black);
* generation from one RGBA picture: the silhouette IoU between the picture's alpha and a render
  of the generated asset from the picture's camera, both cropped to the square around their
  bounding boxes (so the figure ignores scale and position, not shape), and the distance between
  their dominant colours.

Images are float tensors in [0, 1]: RGB [3, H, W], alpha [H, W].
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F

from .render.cameras import Camera

__all__ = ["psnr", "square_crop", "silhouette_iou", "dominant_colour", "front_camera", "picture_of_mesh", "picture_image",
           "encoded_gaussians", "reconstruction_psnr", "GenerationScore", "score_generation", "summarise", "textured_procedural_object",
           "ObjectFigures", "score_objects", "score_meshes", "voxel_alpha", "score_structures"]

ALPHA_THRESHOLD = 0.5


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    """Peak signal-to-noise ratio in dB of two images (any equal shapes, values in [0, 1])."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {list(a.shape)} vs {list(b.shape)}")
    mse = float(((a.double() - b.double()) ** 2).mean())
    return 10.0 * math.log10(1.0 / max(mse, 1e-12))


def square_crop(alpha: torch.Tensor, size: int = 128, threshold: float = ALPHA_THRESHOLD) -> torch.Tensor:
    """The object's mask (``alpha > threshold``) cropped to the square around its bounding box
    (the longer side, centred; zeros outside the image), resized to ``size`` x ``size``: float32
    [size, size] in [0, 1] (area-averaged coverage). Raises ValueError when the mask is empty."""
    mask = (alpha > threshold).float()
    rows, cols = mask.any(1).nonzero()[:, 0], mask.any(0).nonzero()[:, 0]
    if rows.numel() == 0:
        raise ValueError("square_crop: the alpha has no object pixel")
    top, bottom, left, right = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    side = max(bottom - top, right - left)
    y0, x0 = (top + bottom - side) // 2, (left + right - side) // 2
    padded = F.pad(mask, (side, side, side, side))  # room for a square that leaves the image
    crop = padded[y0 + side:y0 + 2 * side, x0 + side:x0 + 2 * side]
    return F.interpolate(crop[None, None], size=(size, size), mode="area")[0, 0]


def silhouette_iou(alpha_a: torch.Tensor, alpha_b: torch.Tensor, size: int = 128) -> float:
    """Intersection over union of two objects' masks after ``square_crop`` of each (mask pixels:
    coverage >= 0.5 after the resize)."""
    a, b = square_crop(alpha_a, size) >= 0.5, square_crop(alpha_b, size) >= 0.5
    union = int((a | b).sum())
    return float((a & b).sum()) / union if union else 0.0


def dominant_colour(rgb: torch.Tensor, alpha: torch.Tensor, bins: int = 8, radius: float = 0.1,
                    threshold: float = ALPHA_THRESHOLD) -> torch.Tensor:
    """The colour float32 [3] most of the object has: among the object pixels (``alpha >
    threshold``), the mean of those within ``radius`` (per channel) of the colour that has the most
    pixels within ``radius``. Candidate colours are the means of the populated cells of a ``bins``^3
    RGB histogram; counting around them, not inside cells, keeps a colour that straddles a cell
    boundary from losing to a smaller one that does not."""
    pixels = rgb.permute(1, 2, 0)[alpha > threshold].float()
    if pixels.numel() == 0:
        raise ValueError("dominant_colour: the alpha has no object pixel")
    cells = (pixels.clamp(0, 1) * bins).long().clamp(max=bins - 1)
    index = (cells[:, 0] * bins + cells[:, 1]) * bins + cells[:, 2]
    populated, cell_of = torch.unique(index, return_inverse=True)
    candidates = pixels.new_zeros(len(populated), 3).index_add_(0, cell_of, pixels)
    candidates /= torch.bincount(cell_of, minlength=len(populated))[:, None]

    def near(colours: torch.Tensor) -> torch.Tensor:  # [K, P] bool; K bounded so this stays small
        return ((pixels[None] - colours[:, None]).abs() <= radius).all(-1)
    counts = torch.cat([near(chunk).sum(1) for chunk in candidates.split(16)])
    return pixels[near(candidates[counts.argmax()][None])[0]].mean(0)


def front_camera(size: int = 256, pitch: float = 0.35, radius: float = 2.0, fov_degrees: float = 40.0) -> Camera:
    """The camera of a front picture: on -Y (the TRELLIS frame's front), ``pitch`` radians above
    the horizon, looking at the origin."""
    return Camera.orbit(math.pi, pitch, radius, fov_degrees, size, size)


def picture_of_mesh(mesh, camera: Camera, supersample: int = 2, device=None) -> torch.Tensor:
    """An RGBA picture (float32 [4, H, W], straight alpha) of a ``TexturedMesh`` normalised into
    the unit cube, unlit base colour, as the training renders."""
    from .encoding.albedo import render_albedo
    return render_albedo(mesh.normalized(), [camera], supersample, device)[0].permute(2, 0, 1).cpu()


def picture_image(picture: torch.Tensor):
    """A ``picture_of_mesh`` picture (float32 [4, H, W]) as the 8-bit RGBA PIL image a user would give."""
    from PIL import Image
    return Image.fromarray((picture.permute(1, 2, 0).clamp(0, 1) * 255).round().byte().numpy(), "RGBA")


@torch.no_grad()
def encoded_gaussians(pipeline, mesh, views: int, device=None):
    """``mesh`` (a ``TexturedMesh``) encoded from ``views`` views with the pipeline's folder and
    encoder, decoded to Gaussians."""
    from .encoding import encode_asset
    device = torch.device(device) if device is not None else pipeline.device
    encoded = encode_asset(mesh, pipeline.folder, views, dinov2=pipeline.encoder, device=device)
    return pipeline.decode(encoded.slat(device), ["gaussian"])["gaussian"][0]


@torch.no_grad()
def reconstruction_psnr(pipeline, mesh, cameras: Sequence[Camera], views: int = 150,
                        device=None) -> float:
    """Render PSNR (dB) of encode -> decode: ``mesh`` (a ``TexturedMesh``) encoded with the
    pipeline's folder and encoder, its Gaussians decoded and rendered at ``cameras`` on black,
    against the mesh's base-colour renders (premultiplied on black) at the same cameras; the mean
    squared error is pooled over the views."""
    from .encoding.albedo import render_albedo
    from .render import render_gaussians
    device = torch.device(device) if device is not None else pipeline.device
    gaussians = encoded_gaussians(pipeline, mesh, views, device)
    truth = render_albedo(mesh.normalized(), list(cameras), 2, device)
    decoded, reference = [], []
    for camera, target in zip(cameras, truth):
        decoded.append(render_gaussians(gaussians, camera)["color"].cpu())
        reference.append((target[..., :3] * target[..., 3:]).permute(2, 0, 1).cpu())
    return psnr(torch.stack(decoded), torch.stack(reference))


@dataclass
class GenerationScore:
    """Figures of one generated asset against its input picture."""
    iou: float                 # silhouette IoU (``silhouette_iou``)
    colour_input: List[float]  # dominant colour of the picture, RGB in [0, 1]
    colour_output: List[float]  # dominant colour of the asset's render from the picture's camera
    colour_error: float        # largest channel difference of the two

    def as_dict(self) -> Dict[str, object]:
        return {"iou": self.iou, "colour_input": self.colour_input, "colour_output": self.colour_output,
                "colour_error": self.colour_error}


@torch.no_grad()
def score_generation(picture: torch.Tensor, gaussians, camera: Camera, size: int = 128) -> GenerationScore:
    """Compare a generated asset (decoded Gaussians) with its input ``picture`` (float32 [4, H, W],
    straight alpha) seen from ``camera``, the picture's own camera."""
    from .render import render_gaussians
    out = render_gaussians(gaussians, camera)
    alpha = out["alpha"][0].cpu()
    # the render is premultiplied on black; un-premultiply where covered for the colour
    rgb = (out["color"].cpu() / alpha.clamp(min=1e-3)).clamp(0, 1)
    colour_in = dominant_colour(picture[:3], picture[3])
    colour_out = dominant_colour(rgb, alpha)
    return GenerationScore(iou=silhouette_iou(picture[3], alpha, size), colour_input=colour_in.tolist(),
                           colour_output=colour_out.tolist(), colour_error=float((colour_in - colour_out).abs().max()))


def summarise(scores: Sequence[GenerationScore], psnrs: Optional[Sequence[float]] = None) -> Dict[str, float]:
    """Means over held-out objects: IoU, colour error, share of colours within 0.1, and PSNR."""
    summary = {"objects": len(scores), "mean_iou": sum(s.iou for s in scores) / max(len(scores), 1),
               "mean_colour_error": sum(s.colour_error for s in scores) / max(len(scores), 1),
               "colours_within_0.1": sum(s.colour_error <= 0.1 for s in scores) / max(len(scores), 1)}
    if psnrs:
        summary["mean_psnr_db"] = sum(psnrs) / len(psnrs)
    return summary


def textured_procedural_object(kind: str, seed: int):
    """The procedural object ``(kind, seed)`` as a ``TexturedMesh`` with its vertex colours (the
    mesh that the training data was rendered from)."""
    import numpy as np
    from .encoding import TexturedMesh
    from .training.procedural import procedural_object
    mesh = procedural_object(kind, seed)
    colours = torch.as_tensor(np.asarray(mesh.visual.vertex_colors)[:, :3] / 255.0, dtype=torch.float32)
    return TexturedMesh.from_arrays(torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float64),
                                    torch.as_tensor(np.asarray(mesh.faces)), vertex_colors=colours)


@dataclass
class ObjectFigures:
    """One object's figures (:func:`score_objects`), with what produced them."""
    name: str                  # "kind_seed"
    picture: torch.Tensor      # the input, float32 [4, H, W] straight alpha
    gaussians: Any             # the generated asset's Gaussians
    score: GenerationScore
    psnr_db: Optional[float]   # encode -> decode render PSNR, None when not asked for
    seconds: Dict[str, float]  # the pipeline's stage timings

    def as_dict(self) -> Dict[str, object]:
        return {"object": self.name, **self.score.as_dict(), "psnr_db": self.psnr_db, "seconds": self.seconds}


def score_objects(pipeline, objects: Sequence[Tuple[str, int]], size: int = 256, seed: int = 42,
                  psnr_views: Optional[int] = 150, psnr_cameras: Optional[Sequence[Camera]] = None,
                  encode_views: Optional[int] = None, log=None) -> List[ObjectFigures]:
    """:func:`score_meshes` on procedural objects ``(kind, seed)``, each named ``kind_seed``."""
    from .training.procedural import object_name
    meshes = ((object_name(kind, object_seed), lambda k=kind, s=object_seed: textured_procedural_object(k, s))
              for kind, object_seed in objects)
    return score_meshes(pipeline, meshes, size, seed, psnr_views, psnr_cameras, encode_views, log)


def score_meshes(pipeline, meshes: Iterable[Tuple[str, Callable[[], Any]]], size: int = 256, seed: int = 42,
                 psnr_views: Optional[int] = 150, psnr_cameras: Optional[Sequence[Camera]] = None,
                 encode_views: Optional[int] = None, log=None) -> List[ObjectFigures]:
    """Generate each object from its front picture (``size`` px, :func:`front_camera`) with
    ``pipeline`` (an ``ImageTo3DPipeline``, generation ``seed``) and score it; with ``psnr_views``,
    also the reconstruction PSNR of the object encoded from that many views and compared at
    ``psnr_cameras`` (default: 8 orbit views at pitch 0.3). With ``encode_views``, the object's own
    encoding from that many views is scored instead of a generation: the ceiling of the generation
    figures for this folder's VAEs. ``meshes``: (name, a function giving the ``TexturedMesh`` in
    the TRELLIS frame, Z up), each made when its turn comes."""
    from .render import orbit_cameras
    camera = front_camera(size)
    compare = list(psnr_cameras) if psnr_cameras is not None else orbit_cameras(8, pitch=0.3, width=size, height=size)
    figures = []
    for name, make_mesh in meshes:
        mesh = make_mesh()
        picture = picture_of_mesh(mesh, camera, device=pipeline.device)
        if encode_views is None:
            result = pipeline.run(picture_image(picture), seed=seed, formats=["gaussian"])
            gaussians, timings = result.decoded["gaussian"][0], result.timings
        else:
            gaussians, timings = encoded_gaussians(pipeline, mesh, encode_views), {}
        value = None if psnr_views is None else reconstruction_psnr(pipeline, mesh, compare, views=psnr_views)
        figures.append(ObjectFigures(name, picture, gaussians, score_generation(picture, gaussians, camera), value,
                                     timings))
        if log is not None:
            shown = "" if value is None else f", PSNR {value:.2f} dB"
            log(f"{name}: IoU {figures[-1].score.iou:.3f}, colour error {figures[-1].score.colour_error:.3f}{shown}")
    return figures


def voxel_alpha(coords: torch.Tensor, resolution: int, camera: Camera) -> torch.Tensor:
    """The silhouette of occupied voxels seen by ``camera``: float32 [H, W], 1 where a voxel cube
    covers the pixel centre. ``coords`` int [N, 3] grid indices of a ``resolution``^3 grid over the
    unit cube (the frame of ``picture_of_mesh`` and ``voxel_centers``)."""
    from .render import rasterize
    corners = torch.tensor([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], dtype=torch.float64)
    # two triangles per cube side, corners numbered x * 4 + y * 2 + z (winding is irrelevant: no culling)
    sides = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 5, 7], [4, 7, 6], [0, 1, 5], [0, 5, 4],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 3, 7], [1, 7, 5]])
    cubes = coords.double().cpu()[:, None, :] + corners[None]                     # [N, 8, 3]
    vertices = (cubes / resolution - 0.5).reshape(-1, 3)
    faces = (torch.arange(coords.shape[0])[:, None, None] * 8 + sides[None]).reshape(-1, 3)
    return (rasterize(vertices, faces, camera, backend="torch")["triangle_id"] >= 0).float()


@dataclass
class StructureFigures:
    """One object's structure-stage figures (:func:`score_structures`)."""
    name: str
    iou: float          # silhouette IoU of the generated voxels against the input picture
    ceiling_iou: float  # the same for the object's own voxels (what a perfect structure flow gives)
    voxels: int         # generated voxels
    true_voxels: int
    silhouettes: torch.Tensor  # [3, size, size] the picture's alpha, the own voxels', the generated voxels'

    def as_dict(self) -> Dict[str, object]:
        return {"object": self.name, "iou": self.iou, "ceiling_iou": self.ceiling_iou, "voxels": self.voxels,
                "true_voxels": self.true_voxels}


@torch.no_grad()
def score_structures(pipeline, objects: Sequence[Tuple[str, int]], size: int = 256, seed: int = 42,
                     log=None) -> List[StructureFigures]:
    """The structure flow alone, for a folder whose later stages are not trained yet: each
    procedural object ``(kind, seed)``'s front picture (``size`` px) -> ``pipeline``'s condition ->
    sampled structure (generation ``seed``); the silhouette IoU (``silhouette_iou``) of its voxel
    cubes against the picture's alpha, beside that of the object's own voxels (``voxelize_mesh``
    at the structure decoder's grid). The generated asset's IoU is about the voxels' (the Gaussians fill
    their voxels): the ceiling column is what the structure flow can reach at this grid."""
    from .conditioning import preprocess_image
    from .pipelines.generation import Noise
    from .pipelines.voxelize import voxelize_mesh
    from .training.procedural import object_name
    camera = front_camera(size)
    figures = []
    for kind, object_seed in objects:
        mesh = textured_procedural_object(kind, object_seed)
        picture = picture_of_mesh(mesh, camera, device=pipeline.device)
        cond = pipeline.get_cond([preprocess_image(picture_image(picture), None, pipeline.background_remover)])
        structure = pipeline.sample_structure(cond, Noise(seed))
        generated = structure.coords[:, 1:].cpu()
        grid = structure.resolution
        true = voxelize_mesh(mesh.vertices, mesh.faces, resolution=grid)
        generated_alpha, true_alpha = voxel_alpha(generated, grid, camera), voxel_alpha(true, grid, camera)
        figures.append(StructureFigures(object_name(kind, object_seed),
                                        silhouette_iou(picture[3], generated_alpha) if generated.shape[0] else 0.0,
                                        silhouette_iou(picture[3], true_alpha), int(generated.shape[0]),
                                        int(true.shape[0]), torch.stack([picture[3].cpu(), true_alpha, generated_alpha])))
        if log is not None:
            log(f"{figures[-1].name}: structure IoU {figures[-1].iou:.3f} (own voxels {figures[-1].ceiling_iou:.3f}), "
                f"{figures[-1].voxels} voxels ({figures[-1].true_voxels} true)")
    return figures
