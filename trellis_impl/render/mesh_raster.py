"""Reference triangle-mesh rasteriser in plain PyTorch (CPU and GPU).

The function split follows nvdiffrast: :func:`rasterize` gives, per pixel, the visible
triangle, its perspective-correct barycentrics and its camera depth; :func:`interpolate`
turns per-vertex attributes into images; :func:`texture` samples a texture at per-pixel UVs;
:func:`render_mesh` puts them together into the images TRELLIS's ``MeshRenderer`` makes.

Conventions (see :mod:`trellis_impl.render.cameras`): OpenCV camera (x right, y down,
z forward), pixel (i, j) (column i, row j) has its centre at (i + 0.5, j + 0.5); depth is the
camera-space z in world units.

Rasterisation rules:

* A triangle is culled when any of its vertices has camera z <= ``camera.near`` (there is
  **no near-plane clipping**: a triangle that straddles the near plane disappears whole),
  when all its vertices have z >= ``camera.far``, or when it is degenerate on screen (zero
  area). Pixels whose depth on a triangle is >= ``camera.far`` are not covered by it.
* Both windings are drawn (no back-face culling).
* A pixel is covered by a triangle when its centre lies inside or on the triangle's edges
  (screen-space edge functions >= 0). Pixels on an edge shared by two triangles go to the
  nearer one, ties to the lower triangle id. The nearest covering triangle wins (z-buffer).
* Barycentrics are perspective-correct: with screen-space barycentrics b_k and vertex depths
  z_k, ``bary_k = (b_k / z_k) / sum_j (b_j / z_j)`` and ``depth = 1 / sum_j (b_j / z_j)``,
  the exact camera z of the point of the triangle's plane seen through the pixel centre.

Implementation: each triangle is expanded to the pixel centres of its (clamped) screen
bounding box; these (triangle, pixel) pairs are processed in chunks of at most
``PAIR_CHUNK`` pairs (a chunk is a run of whole triangles; a single triangle larger than that
is a chunk alone), each pair is tested with edge functions, and the z-buffer is a
``scatter_reduce(amin)`` over an int64 key ``(float32 depth bits << 32) | triangle_id``,
which makes the result deterministic and independent of the chunking. Memory is
O(H W + PAIR_CHUNK + F) and time O(sum of bounding-box areas).

The rasteriser is the "torch" backend of the ``mesh_raster`` family (env var
``TRELLIS_MESH_RASTER_BACKEND``). On CUDA the "nvdiffrast" backend is chosen when the
``nvdiffrast`` package (or its ``diffrp-nvdiffrast`` packaging) imports and its CUDA plugin
builds (JIT, once, ~25 s; needs nvcc): same outputs and conventions, float32, with two
documented differences: nvdiffrast clips triangles at the near plane instead of culling them,
and pixel centres exactly on a shared edge may go to the other triangle (its own tie rule).
"""
from __future__ import annotations

import functools
import logging
import sys
from typing import Any, Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F

from ..backends.registry import family, importable
from .cameras import Camera
from .mesh_antialias import antialias as antialias_images

__all__ = ["covered_pixels", "rasterize", "rasterize_views", "interpolate", "texture", "render_mesh", "MESH_RASTER", "mesh_tensors",
           "render_mesh_training", "face_camera_normals"]

PAIR_CHUNK = 1 << 20  # (triangle, pixel) candidate pairs per chunk
_NO_HIT = torch.iinfo(torch.int64).max

MESH_RASTER = family("mesh_raster")
_log = logging.getLogger(__name__)


def mesh_tensors(vertices: torch.Tensor, faces: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate ``vertices`` [V, 3] (float, world units) and ``faces`` [F, 3] (integer indices).

    Returns (vertices, faces as int64 on the vertices' device). Raises ValueError on a bad
    shape, on non-finite vertices (naming the first offending vertex indices) or on face
    indices out of range.
    """
    vertices = torch.as_tensor(vertices)
    faces = torch.as_tensor(faces)
    if vertices.dim() != 2 or vertices.shape[1] != 3:
        raise ValueError(f"vertices must have shape [V, 3], got {tuple(vertices.shape)}")
    if faces.numel() == 0:
        faces = faces.reshape(0, 3)
    if faces.dim() != 2 or faces.shape[1] != 3:
        raise ValueError(f"faces must have shape [F, 3], got {tuple(faces.shape)}")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise ValueError(f"faces must be integer indices, got {faces.dtype}")
    if not vertices.is_floating_point():
        vertices = vertices.float()
    bad = ~torch.isfinite(vertices.detach()).all(dim=1)
    if bool(bad.any()):
        idx = torch.nonzero(bad).squeeze(1)
        shown = ", ".join(str(int(i)) for i in idx[:10])
        more = f" (and {idx.numel() - 10} more)" if idx.numel() > 10 else ""
        raise ValueError(f"{idx.numel()} vertices have non-finite (NaN/inf) coordinates: indices {shown}{more}")
    faces = faces.to(device=vertices.device, dtype=torch.int64)
    if faces.numel() and (int(faces.min()) < 0 or int(faces.max()) >= vertices.shape[0]):
        raise ValueError(f"face indices must be in [0, {vertices.shape[0]}), got range "
                         f"[{int(faces.min())}, {int(faces.max())}]")
    return vertices, faces


def covered_pixels(fx: torch.Tensor, fy: torch.Tensor, valid: torch.Tensor, width: int, height: int,
                   pair_chunk: int = PAIR_CHUNK):
    """Pixel centres inside 2D triangles, in chunks of bounded size.

    Args:
        fx, fy: [F, 3] screen coordinates of each triangle's corners (pixel units; the centre of
            pixel (row i, column j) is at (j + 0.5, i + 0.5)).
        valid: [F] bool, triangles to consider (degenerate ones must be excluded).
        width, height: image size; pair_chunk: max (triangle, pixel) candidates per chunk.

    Yields per chunk ``(tri [P], px [P], py [P], bary [P, 3])`` for the candidates whose pixel
    centre is inside (edges included) the triangle, with barycentrics normalised by the signed
    area (both windings).
    """
    area2 = (fx[:, 1] - fx[:, 0]) * (fy[:, 2] - fy[:, 0]) - (fx[:, 2] - fx[:, 0]) * (fy[:, 1] - fy[:, 0])
    # pixel-centre index ranges of the bounding boxes: centre i + 0.5 in [min, max]
    x0 = torch.ceil(fx.min(1).values - 0.5).clamp(0, width)
    x1 = torch.floor(fx.max(1).values - 0.5).clamp(-1, width - 1)
    y0 = torch.ceil(fy.min(1).values - 0.5).clamp(0, height)
    y1 = torch.floor(fy.max(1).values - 0.5).clamp(-1, height - 1)
    keep = torch.nonzero(valid & (area2.abs() > 1e-12) & (x1 >= x0) & (y1 >= y0)).squeeze(1)
    if keep.numel() == 0:
        return
    dev = fx.device
    x0, y0 = x0[keep].long(), y0[keep].long()
    bw = x1[keep].long() - x0 + 1
    counts = bw * (y1[keep].long() - y0 + 1)
    cum = torch.cumsum(counts, 0)
    cum_list = cum.tolist()
    start = 0
    while start < keep.numel():
        base = cum_list[start - 1] if start > 0 else 0
        end = max(int(torch.searchsorted(cum, base + pair_chunk, right=True)), start + 1)
        sl = slice(start, end)
        cnt = counts[sl]
        total = cum_list[end - 1] - base
        local_t = torch.repeat_interleave(torch.arange(end - start, device=dev), cnt, output_size=total)
        local = torch.arange(total, device=dev) - (cum[sl] - cnt - base)[local_t]
        w_t = bw[sl][local_t]
        px = x0[sl][local_t] + local % w_t
        py = y0[sl][local_t] + local // w_t
        tri = keep[sl][local_t]
        ex = fx[tri] - (px.to(fx.dtype) + 0.5)[:, None]   # [P, 3] corner offsets from the centre
        ey = fy[tri] - (py.to(fx.dtype) + 0.5)[:, None]
        bary = torch.stack([ex[:, 1] * ey[:, 2] - ex[:, 2] * ey[:, 1],
                            ex[:, 2] * ey[:, 0] - ex[:, 0] * ey[:, 2],
                            ex[:, 0] * ey[:, 1] - ex[:, 1] * ey[:, 0]], dim=1) / area2[tri][:, None]
        sel = torch.nonzero((bary >= 0).all(1)).squeeze(1)
        yield tri[sel], px[sel], py[sel], bary[sel]
        start = end


def _rasterize_torch(vertices: torch.Tensor, faces: torch.Tensor, cameras: Sequence[Camera]) -> Dict[str, torch.Tensor]:
    views = [_rasterize_torch_view(vertices, faces, camera) for camera in cameras]
    return {key: torch.stack([view[key] for view in views]) for key in views[0]}


def _rasterize_torch_view(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera,
                          pair_chunk: int = PAIR_CHUNK) -> Dict[str, torch.Tensor]:
    dev = vertices.device
    dtype = torch.float64 if vertices.dtype == torch.float64 else torch.float32
    width, height = camera.width, camera.height
    n_pix = width * height
    extr = camera.extrinsics.to(device=dev, dtype=dtype)
    cam = vertices.detach().to(dtype) @ extr[:3, :3].T + extr[:3, 3]
    z = cam[:, 2]
    zs = torch.where(z > camera.near, z, torch.ones_like(z))
    sx = camera.fx * cam[:, 0] / zs + camera.cx
    sy = camera.fy * cam[:, 1] / zs + camera.cy

    keys = torch.full((n_pix,), _NO_HIT, dtype=torch.int64, device=dev)
    if faces.shape[0] > 0:
        fz = z[faces]                                   # [F, 3]
        fx, fy = sx[faces], sy[faces]
        valid = (fz > camera.near).all(1) & (fz < camera.far).any(1)
        for tri, px, py, bary in covered_pixels(fx, fy, valid, width, height, pair_chunk):
            depth = 1.0 / (bary / fz[tri]).sum(1)
            inside = torch.nonzero(depth < camera.far).squeeze(1)
            if inside.numel() > 0:
                d32 = depth[inside].to(torch.float32).clamp_min(1e-30)
                key = (d32.view(torch.int32).to(torch.int64) << 32) | tri[inside]
                keys.scatter_reduce_(0, py[inside] * width + px[inside], key, "amin", include_self=True)

    hit = keys != _NO_HIT
    tid = torch.where(hit, keys & 0xFFFFFFFF, torch.full_like(keys, -1))
    bary = torch.zeros(n_pix, 3, dtype=dtype, device=dev)
    depth_img = torch.full((n_pix,), float("inf"), dtype=dtype, device=dev)
    pix = torch.nonzero(hit).squeeze(1)
    if pix.numel() > 0:
        tri = tid[pix]
        f = faces[tri]
        cx_ = (pix % width).to(dtype) + 0.5
        cy_ = (pix // width).to(dtype) + 0.5
        ex, ey = sx[f] - cx_[:, None], sy[f] - cy_[:, None]
        b = torch.stack([ex[:, 1] * ey[:, 2] - ex[:, 2] * ey[:, 1],
                         ex[:, 2] * ey[:, 0] - ex[:, 0] * ey[:, 2],
                         ex[:, 0] * ey[:, 1] - ex[:, 1] * ey[:, 0]], dim=1)
        b = (b / b.sum(1, keepdim=True)).clamp_min(0.0)  # normalised by the signed area: both windings
        bz = b / z[f]
        s = bz.sum(1, keepdim=True)
        bary[pix] = bz / s
        depth_img[pix] = (b.sum(1, keepdim=True) / s).squeeze(1)
    return {"triangle_id": tid.reshape(height, width), "barycentrics": bary.reshape(height, width, 3),
            "depth": depth_img.reshape(height, width)}


@functools.lru_cache(maxsize=None)
def _nvdiffrast_context(device: torch.device):
    """nvdiffrast's CUDA rasteriser context for ``device`` (builds the plugin on first use).

    torch >= 2.10 no longer leaves the JIT build directory on ``sys.path``, so nvdiffrast's
    own ``import_module`` of the freshly built plugin fails; the directory is added first.
    """
    import nvdiffrast
    import nvdiffrast.torch as dr
    from torch.utils import cpp_extension
    name = dr.ops.sanitize_name(f"nvdiffrast_plugin_{nvdiffrast.__version__}_torch{torch.__version__}")
    build_dir = cpp_extension._get_build_directory(name, False)
    if build_dir not in sys.path:
        sys.path.append(build_dir)
    return dr.RasterizeCudaContext(device=device)


def _nvdiffrast_available(device: torch.device, dtype: torch.dtype) -> bool:
    if device.type != "cuda" or dtype == torch.float64 or not importable("nvdiffrast.torch"):
        return False
    try:
        _nvdiffrast_context(device)
        return True
    except Exception as err:  # no nvcc, failed build: the torch path serves
        _log.warning("nvdiffrast is installed but its CUDA plugin could not be built or loaded (%s); "
                     "using the PyTorch mesh rasteriser", err)
        return False


def _rasterize_nvdiffrast(vertices: torch.Tensor, faces: torch.Tensor,
                          cameras: Sequence[Camera]) -> Dict[str, torch.Tensor]:
    import nvdiffrast.torch as dr
    dev = vertices.device
    width, height = cameras[0].width, cameras[0].height
    extr = torch.stack([c.extrinsics.to(device=dev, dtype=torch.float32) for c in cameras])      # [B, 4, 4]
    cam = vertices.detach().float()[None] @ extr[:, :3, :3].transpose(1, 2) + extr[:, None, :3, 3]  # [B, V, 3]
    # OpenCV pixels -> clip space with w = camera z; NDC y = -1 is image row 0, so the output
    # rows come out in OpenCV order (top row first) without a flip
    k = torch.tensor([[2 * c.fx / width, 2 * c.cx / width - 1, 2 * c.fy / height, 2 * c.cy / height - 1,
                       (c.far + c.near) / (c.far - c.near), -2 * c.far * c.near / (c.far - c.near)]
                      for c in cameras], dtype=torch.float32, device=dev)[:, None, :]               # [B, 1, 6]
    x, y, z = cam.unbind(-1)
    clip = torch.stack([k[..., 0] * x + k[..., 1] * z, k[..., 2] * y + k[..., 3] * z, k[..., 4] * z + k[..., 5], z],
                       dim=-1)
    n = len(cameras)
    tid = torch.full((n, height, width), -1, dtype=torch.int64, device=dev)
    bary = torch.zeros(n, height, width, 3, dtype=torch.float32, device=dev)
    depth = torch.full((n, height, width), float("inf"), dtype=torch.float32, device=dev)
    if faces.shape[0] == 0:
        return {"triangle_id": tid, "barycentrics": bary, "depth": depth}
    rast, _ = dr.rasterize(_nvdiffrast_context(dev), clip.contiguous(), faces.to(torch.int32).contiguous(),
                           resolution=[height, width], grad_db=False)
    hit = rast[..., 3] > 0
    tid = torch.where(hit, rast[..., 3].long() - 1, tid)
    # nvdiffrast's (u, v) weight vertices 0 and 1 (perspective-correct)
    b = torch.stack([rast[..., 0], rast[..., 1], 1.0 - rast[..., 0] - rast[..., 1]], dim=-1)
    bary = torch.where(hit[..., None], b, bary)
    zf = torch.gather(z, 1, faces[tid.clamp_min(0)].reshape(n, -1)).reshape(n, height, width, 3)
    depth = torch.where(hit, (b * zf).sum(-1), depth)
    return {"triangle_id": tid, "barycentrics": bary, "depth": depth}


MESH_RASTER.register("torch", _rasterize_torch, lambda device, dtype: True)
MESH_RASTER.register("nvdiffrast", _rasterize_nvdiffrast, _nvdiffrast_available)


def rasterize(vertices: torch.Tensor, faces: torch.Tensor, camera: Camera,
              backend: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Rasterise a triangle mesh seen by ``camera`` (z-buffered, one sample per pixel centre).

    Args:
        vertices: [V, 3] float world positions (float64 input is rasterised in float64,
            anything else in float32), on any device.
        faces: [F, 3] integer vertex indices.
        camera: a :class:`~trellis_impl.render.cameras.Camera`.
        backend: 'torch' (the reference), 'nvdiffrast' (CUDA, float32; the automatic choice
            there when installed) or None/'auto' (``set_backend`` /
            ``TRELLIS_MESH_RASTER_BACKEND`` / automatic choice).

    Returns:
        dict with ``triangle_id`` [H, W] int64 (index into ``faces``; -1 for background),
        ``barycentrics`` [H, W, 3] perspective-correct weights of the triangle's 3 vertices
        (sum 1; 0 on background), ``depth`` [H, W] camera z in world units (inf on background),
        and ``faces`` [F, 3] int64 (kept for :func:`interpolate`).

    Raises:
        ValueError: bad shapes, non-finite vertices (their indices are named), out-of-range
            face indices. Culling rules: see the module docstring (no near-plane clipping).
    """
    out = rasterize_views(vertices, faces, [camera], backend=backend)
    return {key: value[0] if key != "faces" else value for key, value in out.items()}


def rasterize_views(vertices: torch.Tensor, faces: torch.Tensor, cameras: Sequence[Camera],
                    backend: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """:func:`rasterize` for several cameras of one resolution at once (one nvdiffrast call).

    Returns the same keys with a leading view axis: ``triangle_id`` [B, H, W],
    ``barycentrics`` [B, H, W, 3], ``depth`` [B, H, W] (and ``faces`` [F, 3]).
    """
    cameras = list(cameras)
    if not cameras:
        raise ValueError("cameras is empty: need at least one Camera")
    for i, camera in enumerate(cameras):
        if not isinstance(camera, Camera):
            raise ValueError(f"cameras[{i}] must be a Camera, got {type(camera).__name__}")
        if (camera.width, camera.height) != (cameras[0].width, cameras[0].height):
            raise ValueError(f"cameras[{i}] is {camera.width}x{camera.height} but cameras[0] is "
                             f"{cameras[0].width}x{cameras[0].height}: one resolution per call")
    vertices, faces = mesh_tensors(vertices, faces)
    dtype = torch.float64 if vertices.dtype == torch.float64 else torch.float32
    impl = MESH_RASTER.resolve(vertices.device, dtype, backend)
    out = impl.fn(vertices, faces, cameras)
    out["faces"] = faces
    return out


def interpolate(attributes: torch.Tensor, raster: Dict[str, torch.Tensor],
                faces: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Interpolate per-vertex ``attributes`` [V, C] over the image: [H, W, C].

    ``raster`` is the output of :func:`rasterize`; ``faces`` defaults to ``raster['faces']``
    (pass it for a different index buffer over the same triangles, e.g. per-corner attributes
    with ``faces = arange(3F).reshape(F, 3)``). Background pixels are 0. Differentiable in
    ``attributes`` (the barycentrics are constants).
    """
    faces = raster["faces"] if faces is None else torch.as_tensor(faces).long()
    attributes = torch.as_tensor(attributes)
    if attributes.dim() == 1:
        attributes = attributes[:, None]
    if attributes.dim() != 2:
        raise ValueError(f"attributes must have shape [V, C], got {tuple(attributes.shape)}")
    tid = raster["triangle_id"]
    h, w = tid.shape
    dtype = attributes.dtype if attributes.is_floating_point() else torch.float32
    out = torch.zeros(h * w, attributes.shape[1], dtype=dtype, device=attributes.device)
    flat = tid.reshape(-1)
    pix = torch.nonzero(flat >= 0).squeeze(1)
    if pix.numel() > 0:
        f = faces.to(attributes.device)[flat[pix].to(attributes.device)]          # [P, 3]
        bary = raster["barycentrics"].reshape(-1, 3)[pix].to(device=attributes.device, dtype=dtype)
        vals = (attributes[f].to(dtype) * bary[:, :, None]).sum(1)
        out = out.index_put((pix.to(attributes.device),), vals)
    return out.reshape(h, w, -1)


def texture(image: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinearly sample ``image`` [Th, Tw, C] at ``uv`` [H, W, 2] -> [H, W, C].

    UV convention (glTF): u runs along the image columns (left to right), v along the rows
    (top to bottom); (0, 0) is the top-left corner of the image and (1, 1) the bottom-right
    corner, so texel (row r, column c) has its centre at ((c + 0.5) / Tw, (r + 0.5) / Th).
    Lookups outside [0, 1] clamp to the edge texels. Differentiable in ``image`` and ``uv``.
    (OpenGL/nvdiffrast put v = 0 at the bottom: pass ``1 - v`` for such UVs.)
    """
    image = torch.as_tensor(image)
    uv = torch.as_tensor(uv)
    if image.dim() != 3:
        raise ValueError(f"image must have shape [Th, Tw, C], got {tuple(image.shape)}")
    if uv.shape[-1] != 2 or uv.dim() != 3:
        raise ValueError(f"uv must have shape [H, W, 2], got {tuple(uv.shape)}")
    dtype = image.dtype if image.is_floating_point() else torch.float32
    grid = (uv.to(device=image.device, dtype=dtype) * 2.0 - 1.0)[None]
    img = image.to(dtype).permute(2, 0, 1)[None]
    out = F.grid_sample(img, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].permute(1, 2, 0)


def render_mesh(mesh_or_vertices_faces: Union[Any, Sequence[torch.Tensor]], camera: Camera,
                attributes: Optional[torch.Tensor] = None,
                backend: Optional[str] = None, antialias: bool = False) -> Dict[str, torch.Tensor]:
    """Render a mesh: coverage, depth, flat world-space normals and optional attributes.

    Args:
        mesh_or_vertices_faces: a :class:`~trellis_impl.representations.mesh.Mesh` (uses
            ``vertices`` and ``faces``) or a pair (vertices [V, 3], faces [F, 3]).
        camera: the :class:`~trellis_impl.render.cameras.Camera`.
        attributes: optional per-vertex [V, C] values to interpolate (e.g. a Mesh's
            ``vertex_attrs``).
        backend: rasteriser backend (see :func:`rasterize`).
        antialias: blend every image across silhouettes as TRELLIS's ``MeshRenderer`` does
            (:func:`~trellis_impl.render.mesh_antialias.antialias`); off: hard coverage.

    Returns:
        dict with ``mask`` [1, H, W] float (1 covered, 0 background; the covered fraction at
        silhouettes with ``antialias``), ``depth`` [1, H, W] camera z in world units (0 on
        background, as TRELLIS's renderer), ``normal`` [3, H, W] unit world-space face normals
        ``normalize((v1 - v0) x (v2 - v0))``, flat per triangle, in [-1, 1] (0 on background;
        TRELLIS's ``MeshRenderer`` shows them as ``(n + 1) / 2``), and ``attrs`` [C, H, W] when
        ``attributes`` is given (0 on background).
    """
    if hasattr(mesh_or_vertices_faces, "vertices") and hasattr(mesh_or_vertices_faces, "faces"):
        vertices, faces = mesh_or_vertices_faces.vertices, mesh_or_vertices_faces.faces
    else:
        vertices, faces = mesh_or_vertices_faces
    raster = rasterize(vertices, faces, camera, backend=backend)
    vertices, faces = mesh_tensors(vertices, faces)
    tid = raster["triangle_id"]
    hit = tid >= 0
    dtype = raster["depth"].dtype
    depth = torch.where(hit, raster["depth"], torch.zeros_like(raster["depth"]))
    normal = torch.zeros(tid.shape + (3,), dtype=dtype, device=tid.device)
    if bool(hit.any()):
        v = vertices.detach().to(dtype)
        f = faces[tid[hit]]
        n = torch.linalg.cross(v[f[:, 1]] - v[f[:, 0]], v[f[:, 2]] - v[f[:, 0]])
        normal[hit] = n / n.norm(dim=1, keepdim=True).clamp_min(1e-30)
    out = {"mask": hit.to(dtype)[None], "depth": depth[None], "normal": normal.permute(2, 0, 1).contiguous()}
    if attributes is not None:
        attributes = torch.as_tensor(attributes)
        if attributes.dim() != 2 or attributes.shape[0] != vertices.shape[0]:
            raise ValueError(f"attributes must have shape [V={vertices.shape[0]}, C], got {tuple(attributes.shape)}")
        out["attrs"] = interpolate(attributes, raster).permute(2, 0, 1).contiguous()
    if antialias and faces.shape[0]:
        keys = list(out)
        stacked = torch.cat([out[k].to(dtype) for k in keys])[None]
        screen = camera.project(vertices.detach(), dtype)[:, :2]
        stacked = antialias_images(stacked, tid[None], raster["depth"][None], screen[None], faces)[0]
        sizes = [out[k].shape[0] for k in keys]
        out = dict(zip(keys, stacked.split(sizes)))
    return out


def render_mesh_training(vertices: torch.Tensor, faces: torch.Tensor, cameras: Sequence[Camera],
                         vertex_attrs: Optional[torch.Tensor] = None,
                         backend: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Differentiable render of one mesh from several views: the images of TRELLIS's
    ``MeshRenderer`` that the mesh-decoder trainer's losses use.

    Paths (chosen like :func:`rasterize`):

    * nvdiffrast (CUDA, float32): the official sequence, ``dr.rasterize`` ->
      ``dr.interpolate`` -> ``dr.antialias`` on every image; gradients w.r.t. ``vertices``
      (including the silhouette, through the anti-aliasing) and ``vertex_attrs``.
    * torch (any device/dtype): visible triangles from :func:`rasterize_views` (no gradient),
      then their perspective-correct barycentrics recomputed from the projected ``vertices``
      with autograd, then :func:`~trellis_impl.render.mesh_antialias.antialias` on every image
      (nvdiffrast's analytic anti-aliasing in PyTorch); gradients w.r.t. ``vertices`` (depth,
      normals, interpolated attributes, and the silhouette through the anti-aliasing) and
      ``vertex_attrs``.

    Args:
        vertices: [V, 3] float world positions.
        faces: [F, 3] integer vertex indices.
        cameras: Cameras of one resolution (OpenCV; triangles culled/clipped at their near/far).
        vertex_attrs: optional [V, C] per-vertex values (TRELLIS meshes: rgb then normal-map
            channels, in [0, 1]).
        backend: as :func:`rasterize`.

    Returns:
        dict of [B, C, H, W] images (B = number of cameras), in ``vertices``' dtype (float32 on
        the nvdiffrast path):
        ``mask`` [B, 1, H, W] coverage in [0, 1]; ``depth`` [B, 1, H, W] camera z (0 on
        background); ``normal`` [B, 3, H, W] ``(n + 1) / 2`` of the flat unit face normal
        ``normalize((v1 - v0) x (v2 - v0))`` (0.5 on background, as the official renderer);
        ``attrs`` [B, C, H, W] interpolated ``vertex_attrs`` (0 on background) when given.
    """
    cameras = list(cameras)
    checked_vertices, faces = mesh_tensors(vertices, faces)
    if vertex_attrs is not None and (vertex_attrs.dim() != 2 or vertex_attrs.shape[0] != checked_vertices.shape[0]):
        raise ValueError(f"vertex_attrs must have shape [V={checked_vertices.shape[0]}, C], "
                         f"got {tuple(vertex_attrs.shape)}")
    dtype = torch.float64 if checked_vertices.dtype == torch.float64 else torch.float32
    if not cameras:
        raise ValueError("cameras is empty: need at least one Camera")
    if MESH_RASTER.resolve(checked_vertices.device, dtype, backend).name == "nvdiffrast" and faces.shape[0] > 0:
        return _render_training_nvdiffrast(checked_vertices, faces, cameras, vertex_attrs)
    raster = rasterize_views(checked_vertices.detach(), faces, cameras, backend=backend)
    return _render_training_torch(checked_vertices.to(dtype), faces, cameras, raster, vertex_attrs)


def _face_normals(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    v0, v1, v2 = vertices[faces[:, 0]], vertices[faces[:, 1]], vertices[faces[:, 2]]
    return F.normalize(torch.linalg.cross(v1 - v0, v2 - v0), dim=-1)


def _render_training_torch(vertices: torch.Tensor, faces: torch.Tensor, cameras: Sequence[Camera],
                           raster: Dict[str, torch.Tensor], vertex_attrs: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    triangle_id = raster["triangle_id"]
    n_views, height, width = triangle_id.shape
    dtype = vertices.dtype
    channels = 0 if vertex_attrs is None else vertex_attrs.shape[1]
    mask = (triangle_id >= 0).to(dtype)
    depth = vertices.new_zeros(n_views, height * width)
    normal = vertices.new_full((n_views, height * width, 3), 0.5)
    attrs = vertices.new_zeros(n_views, height * width, channels)
    face_normals = _face_normals(vertices, faces) if faces.shape[0] else vertices.new_zeros(0, 3)
    projected = [camera.project(vertices, dtype) for camera in cameras]  # [V, 3] (u, v, z) each
    for view in range(n_views):
        flat = triangle_id[view].reshape(-1)
        pix = torch.nonzero(flat >= 0).squeeze(1)
        if pix.numel() == 0:
            continue
        sx, sy, z = projected[view].unbind(-1)
        tri = flat[pix]
        f = faces[tri]
        # edge functions at the pixel centres, normalised by the signed area (both windings)
        ex = sx[f] - ((pix % width).to(dtype) + 0.5)[:, None]
        ey = sy[f] - ((pix // width).to(dtype) + 0.5)[:, None]
        b = torch.stack([ex[:, 1] * ey[:, 2] - ex[:, 2] * ey[:, 1],
                         ex[:, 2] * ey[:, 0] - ex[:, 0] * ey[:, 2],
                         ex[:, 0] * ey[:, 1] - ex[:, 1] * ey[:, 0]], dim=1)
        b = b / b.sum(1, keepdim=True)
        bz = b / z[f]
        bary = bz / bz.sum(1, keepdim=True)                     # perspective-correct
        depth = depth.index_put((torch.full_like(pix, view), pix), (bary * z[f]).sum(1))
        normal = normal.index_put((torch.full_like(pix, view), pix), (face_normals[tri] + 1) / 2)
        if vertex_attrs is not None:
            values = (vertex_attrs.to(dtype)[f] * bary[:, :, None]).sum(1)
            attrs = attrs.index_put((torch.full_like(pix, view), pix), values)
    # one anti-aliasing pass over all channels, as nvdiffrast's per image (the blend is per channel)
    stacked = torch.cat([mask.reshape(n_views, height * width, 1), depth[..., None], normal, attrs], dim=-1)
    stacked = antialias_images(stacked.reshape(n_views, height, width, -1).permute(0, 3, 1, 2), triangle_id,
                               raster["depth"], torch.stack(projected)[..., :2], faces)
    out = {"mask": stacked[:, :1], "depth": stacked[:, 1:2], "normal": stacked[:, 2:5]}
    if vertex_attrs is not None:
        out["attrs"] = stacked[:, 5:]
    return out


def _render_training_nvdiffrast(vertices: torch.Tensor, faces: torch.Tensor, cameras: Sequence[Camera],
                                vertex_attrs: Optional[torch.Tensor]) -> Dict[str, torch.Tensor]:
    import nvdiffrast.torch as dr
    dev = vertices.device
    width, height = cameras[0].width, cameras[0].height
    vertices = vertices.float()
    extr = torch.stack([c.extrinsics.to(device=dev, dtype=torch.float32) for c in cameras])      # [B, 4, 4]
    cam = vertices[None] @ extr[:, :3, :3].transpose(1, 2) + extr[:, None, :3, 3]                # [B, V, 3]
    k = torch.tensor([[2 * c.fx / width, 2 * c.cx / width - 1, 2 * c.fy / height, 2 * c.cy / height - 1,
                       (c.far + c.near) / (c.far - c.near), -2 * c.far * c.near / (c.far - c.near)]
                      for c in cameras], dtype=torch.float32, device=dev)[:, None, :]
    x, y, z = cam.unbind(-1)
    clip = torch.stack([k[..., 0] * x + k[..., 1] * z, k[..., 2] * y + k[..., 3] * z, k[..., 4] * z + k[..., 5], z],
                       dim=-1).contiguous()
    faces_int = faces.to(torch.int32).contiguous()
    context = _nvdiffrast_context(dev)
    rast, _ = dr.rasterize(context, clip, faces_int, resolution=[height, width])

    def smooth(image: torch.Tensor) -> torch.Tensor:
        return dr.antialias(image.contiguous(), rast, clip, faces_int).permute(0, 3, 1, 2)

    corner_faces = torch.arange(faces.shape[0] * 3, device=dev, dtype=torch.int32).reshape(-1, 3)
    face_normals = _face_normals(vertices, faces).repeat_interleave(3, dim=0)           # one copy per corner
    out = {
        "mask": smooth((rast[..., 3:] > 0).float()),
        "depth": smooth(dr.interpolate(z[..., None].contiguous(), rast, faces_int)[0]),
        "normal": (smooth(dr.interpolate(face_normals[None].contiguous(), rast, corner_faces)[0]) + 1) / 2,
    }
    if vertex_attrs is not None:
        out["attrs"] = smooth(dr.interpolate(vertex_attrs.float().contiguous(), rast, faces_int)[0])
    return out


def face_camera_normals(normal: torch.Tensor, cameras: Sequence[Camera]) -> torch.Tensor:
    """Flip rendered normals to face the camera, as the official trainer does to its targets.

    Args:
        normal: [B, 3, H, W] ``(n + 1) / 2`` images (:func:`render_mesh_training`'s ``normal``).
        cameras: the B cameras they were rendered from.

    Returns:
        [B, 3, H, W]: ``n`` negated where it points along the pixel's viewing ray
        (``n . d >= 0``, d the ray direction through the pixel centre), then mapped back by
        ``(n + 1) / 2``. Background (0.5) stays 0.5.
    """
    cameras = list(cameras)
    if normal.dim() != 4 or normal.shape[1] != 3 or normal.shape[0] != len(cameras):
        raise ValueError(f"normal must be [B={len(cameras)}, 3, H, W], got {tuple(normal.shape)}")
    height, width = normal.shape[-2:]
    dev, dtype = normal.device, normal.dtype
    rows, cols = torch.meshgrid(torch.arange(height, device=dev, dtype=dtype) + 0.5,
                                torch.arange(width, device=dev, dtype=dtype) + 0.5, indexing="ij")
    n = normal * 2 - 1
    flipped = []
    for view, camera in enumerate(cameras):
        ray_cam = torch.stack([(cols - camera.cx) / camera.fx, (rows - camera.cy) / camera.fy, torch.ones_like(rows)])
        ray_world = torch.einsum("ji,jhw->ihw", camera.extrinsics[:3, :3].to(dev, dtype), ray_cam)
        faces_camera = (n[view] * ray_world).sum(0, keepdim=True) < 0
        flipped.append(n[view] * (faces_camera.to(dtype) * 2 - 1))
    return (torch.stack(flipped) + 1) / 2
