"""Writing triangle meshes as GLB (glTF 2.0 binary), OBJ + MTL (+ PNG) and binary PLY.

Axis convention
---------------
TRELLIS works in its own frame: Z up, the asset inside the unit cube [-0.5, 0.5]^3 centred at the
origin. Its training data were Objaverse glTF assets imported into Blender, whose glTF importer maps
glTF (x, y, z) -> Blender (x, -z, y): glTF's up (+Y) becomes +Z and glTF's front (+Z) becomes -Y.
The official ``to_glb`` undoes exactly that with ``vertices @ TRELLIS_TO_GLTF`` (row vectors,
(x, y, z) -> (x, z, -y)). So:

* TRELLIS +Z (up)    -> glTF +Y (up)
* TRELLIS -Y (front) -> glTF +Z (front, glTF's convention: the asset looks at a viewer on +Z)
* TRELLIS +X         -> glTF +X (right-handed, a proper rotation: det = +1)

The front is a property of the data set, not of the input image: the conditioning images were
rendered from random viewpoints on a sphere (``dataset_toolkits/render_cond.py``), so the model
outputs assets in the canonical Objaverse orientation. Note that the official
``render_utils.yaw_pitch_r_fov_to_extrinsics_intrinsics`` puts the yaw-0 camera at
(sin 0, cos 0, .) = TRELLIS +Y, i.e. it looks at the canonical back; yaw = pi views the front.

ComfyUI's MESH type, and every writer in this module, take vertices already in the glTF frame
(callers convert with :func:`to_gltf_frame` first). The frames and their transforms live in
``trellis_impl/frames.py``; they are re-exported here. Units are metres: the TRELLIS unit cube is 1 m
across, no scaling is applied.
"""
from __future__ import annotations

import io
import json
import os
import struct
from typing import Optional

import numpy as np

from .. import files
from ..frames import GLTF_TO_TRELLIS, TRELLIS_TO_GLTF, from_gltf_frame, to_gltf_frame

__all__ = [
    "TRELLIS_TO_GLTF", "GLTF_TO_TRELLIS", "to_gltf_frame", "from_gltf_frame", "place",
    "save_glb", "save_obj", "save_mesh_ply",
]

def _as_numpy(array):
    if array is None:
        return None
    if hasattr(array, "detach"):  # torch tensor
        array = array.detach().cpu().numpy()
    return np.asarray(array)


def place(vertices, origin: str = "center"):
    """Translate glTF-frame vertices (metres): ``'center'`` puts the bounding-box centre at the
    origin; ``'base'`` puts the lowest point at y = 0 with the box centred in x and z; ``'none'``
    keeps TRELLIS's unit-cube position (so edit-region boxes and splats line up with the mesh)."""
    v = _as_numpy(vertices).astype(np.float64)
    if v.ndim != 2 or v.shape[1] != 3 or len(v) == 0:
        raise ValueError(f"vertices must be a non-empty [V, 3] array, got shape {v.shape}")
    lo, hi = v.min(axis=0), v.max(axis=0)
    shift = (lo + hi) / 2
    if origin == "base":
        shift[1] = lo[1]
    elif origin == "none":
        shift[:] = 0.0
    elif origin != "center":
        raise ValueError(f"origin must be 'center', 'base' or 'none', got {origin!r}")
    out = v - shift
    if hasattr(vertices, "detach"):
        import torch
        return torch.as_tensor(out, dtype=vertices.dtype, device=vertices.device)
    return out.astype(np.asarray(vertices).dtype if np.asarray(vertices).dtype.kind == "f" else np.float64)


# ----------------------------------------------------------------------------------------------
# validation

def _check_mesh(vertices, faces):
    v = _as_numpy(vertices)
    f = _as_numpy(faces)
    if v is None or v.ndim != 2 or v.shape[1] != 3:
        raise ValueError(f"vertices must be [V, 3], got shape {None if v is None else v.shape}")
    if f is None or f.ndim != 2 or f.shape[1] != 3:
        raise ValueError(f"faces must be [F, 3], got shape {None if f is None else f.shape}")
    if len(v) == 0 or len(f) == 0:
        raise ValueError(f"the mesh is empty ({len(v)} vertices, {len(f)} faces): nothing to write")
    v = v.astype(np.float32)
    if not np.isfinite(v).all():
        raise ValueError("vertices contain non-finite values (nan or inf)")
    if f.dtype.kind not in "iu":
        if not np.all(np.equal(np.mod(f, 1), 0)):
            raise ValueError("faces must hold integer vertex indices")
    f = f.astype(np.int64)
    if f.min() < 0 or f.max() >= len(v):
        raise ValueError(f"faces index vertices out of range [0, {len(v)}): min {f.min()}, max {f.max()}")
    return v, f.astype(np.uint32)


def _check_per_vertex(name, array, count, widths):
    a = _as_numpy(array)
    if a is None:
        return None
    if a.ndim != 2 or a.shape[0] != count or a.shape[1] not in widths:
        raise ValueError(f"{name} must be [{count}, {'|'.join(map(str, widths))}], got shape {a.shape}")
    if not np.isfinite(a.astype(np.float64)).all():
        raise ValueError(f"{name} contains non-finite values")
    return a


def _colors_to_float(colors):
    """Vertex colours (uint8 0..255 or float 0..1) -> float32 0..1."""
    c = colors
    if c.dtype == np.uint8:
        return c.astype(np.float32) / 255.0
    return np.clip(c.astype(np.float32), 0.0, 1.0)


def _colors_to_uint8(colors):
    if colors.dtype == np.uint8:
        return colors
    return np.round(np.clip(colors.astype(np.float64), 0.0, 1.0) * 255).astype(np.uint8)


def _check_texture(texture):
    t = _as_numpy(texture)
    if t is None:
        return None
    if t.ndim != 3 or t.shape[2] not in (3, 4) or t.shape[0] == 0 or t.shape[1] == 0:
        raise ValueError(f"texture must be [H, W, 3|4], got shape {t.shape}")
    if t.dtype != np.uint8:
        t = t.astype(np.float64)
        if not np.isfinite(t).all():
            raise ValueError("texture contains non-finite values")
        t = np.round(np.clip(t, 0.0, 1.0) * 255).astype(np.uint8)
    return np.ascontiguousarray(t)


def _png_bytes(texture) -> bytes:
    from PIL import Image
    buffer = io.BytesIO()
    Image.fromarray(texture, "RGBA" if texture.shape[2] == 4 else "RGB").save(buffer, format="PNG",
                                                                                compress_level=3)
    return buffer.getvalue()


def _validate(vertices, faces, uv, texture, vertex_colors, normals=None):
    v, f = _check_mesh(vertices, faces)
    uv = _check_per_vertex("uv", uv, len(v), (2,))
    texture = _check_texture(texture)
    if texture is not None and uv is None:
        raise ValueError("texture given without uv coordinates")
    colors = _check_per_vertex("vertex_colors", vertex_colors, len(v), (3, 4))
    normals = _check_per_vertex("normals", normals, len(v), (3,))
    return v, f, uv, texture, colors, normals


# ----------------------------------------------------------------------------------------------
# GLB

def _pad(data: bytes, fill: bytes) -> bytes:
    return data + fill * ((-len(data)) % 4)


def save_glb(path, vertices, faces, uv=None, texture=None, vertex_colors=None, normals=None,
             metallic: float = 0.0, roughness: float = 1.0, overwrite: bool = False) -> str:
    """Write a glTF 2.0 binary file. ``vertices`` [V, 3] in the glTF frame (metres), ``faces``
    [F, 3]; ``uv`` [V, 2] (glTF convention, v down from the image top: pass the uv you would
    sample the image with as (u, 1 - v) if yours has v up), ``texture`` [H, W, 3|4] uint8 or
    float 0..1 embedded as PNG base colour; ``vertex_colors`` [V, 3|4] become COLOR_0 (used as
    the base colour when there is no texture); ``normals`` [V, 3]. Material: PBR
    metallic-roughness, ``metallic`` / ``roughness`` factors, double sided."""
    v, f, uv, texture, colors, normals = _validate(vertices, faces, uv, texture, vertex_colors, normals)
    blob = bytearray()
    buffer_views, accessors = [], []

    def add(array: np.ndarray, component_type: int, kind: str, target: Optional[int], minmax=False):
        array = np.ascontiguousarray(array)
        while len(blob) % 4:
            blob.append(0)
        view = {"buffer": 0, "byteOffset": len(blob), "byteLength": array.nbytes}
        if target is not None:
            view["target"] = target
        blob.extend(array.tobytes())
        buffer_views.append(view)
        accessor = {"bufferView": len(buffer_views) - 1, "componentType": component_type,
                    "count": int(array.shape[0]), "type": kind}
        if minmax:
            accessor["min"] = [float(x) for x in array.min(axis=0)]
            accessor["max"] = [float(x) for x in array.max(axis=0)]
        accessors.append(accessor)
        return len(accessors) - 1

    FLOAT, UINT32, ARRAY_BUFFER, ELEMENT_ARRAY_BUFFER = 5126, 5125, 34962, 34963
    attributes = {"POSITION": add(v.astype("<f4"), FLOAT, "VEC3", ARRAY_BUFFER, minmax=True)}
    if normals is not None:
        n = normals.astype(np.float64)
        length = np.linalg.norm(n, axis=1, keepdims=True)
        n = np.where(length > 1e-12, n / np.maximum(length, 1e-12), np.array([0.0, 1.0, 0.0]))
        attributes["NORMAL"] = add(n.astype("<f4"), FLOAT, "VEC3", ARRAY_BUFFER)
    if uv is not None:
        attributes["TEXCOORD_0"] = add(uv.astype("<f4"), FLOAT, "VEC2", ARRAY_BUFFER)
    if colors is not None:
        c = _colors_to_float(colors).astype("<f4")
        attributes["COLOR_0"] = add(c, FLOAT, "VEC4" if c.shape[1] == 4 else "VEC3", ARRAY_BUFFER)
    indices = add(f.reshape(-1).astype("<u4"), UINT32, "SCALAR", ELEMENT_ARRAY_BUFFER)

    pbr = {"baseColorFactor": [1.0, 1.0, 1.0, 1.0], "metallicFactor": float(metallic),
           "roughnessFactor": float(roughness)}
    material = {"name": "material", "pbrMetallicRoughness": pbr, "doubleSided": True}
    gltf = {"asset": {"version": "2.0", "generator": "trellis_impl"}, "scene": 0,
            "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0, "name": "mesh"}]}
    if texture is not None:
        png = _png_bytes(texture)
        while len(blob) % 4:
            blob.append(0)
        buffer_views.append({"buffer": 0, "byteOffset": len(blob), "byteLength": len(png)})
        blob.extend(png)
        gltf["images"] = [{"bufferView": len(buffer_views) - 1, "mimeType": "image/png"}]
        gltf["samplers"] = [{"magFilter": 9729, "minFilter": 9729, "wrapS": 10497, "wrapT": 10497}]
        gltf["textures"] = [{"sampler": 0, "source": 0}]
        pbr["baseColorTexture"] = {"index": 0, "texCoord": 0}
        if texture.shape[2] == 4 and texture[..., 3].min() < 255:
            material["alphaMode"] = "BLEND"
    elif colors is not None and colors.shape[1] == 4 and _colors_to_uint8(colors)[:, 3].min() < 255:
        material["alphaMode"] = "BLEND"
    gltf["meshes"] = [{"name": "mesh", "primitives": [
        {"attributes": attributes, "indices": indices, "material": 0, "mode": 4}]}]
    gltf["materials"] = [material]
    gltf["accessors"] = accessors
    gltf["bufferViews"] = buffer_views
    bin_chunk = _pad(bytes(blob), b"\x00")
    gltf["buffers"] = [{"byteLength": len(bin_chunk)}]
    json_chunk = _pad(json.dumps(gltf, separators=(",", ":")).encode("utf-8"), b" ")
    total = 12 + 8 + len(json_chunk) + 8 + len(bin_chunk)
    data = (struct.pack("<4sII", b"glTF", 2, total)
            + struct.pack("<I4s", len(json_chunk), b"JSON") + json_chunk
            + struct.pack("<I4s", len(bin_chunk), b"BIN\x00") + bin_chunk)
    return files.write_new_file(path, data, overwrite)


# ----------------------------------------------------------------------------------------------
# OBJ + MTL (+ PNG)

def _write_group(outputs, overwrite: bool):
    """Write several (path, bytes) files: refuse before writing anything if one exists (without
    ``overwrite``); if any write fails, remove the ones this call already wrote."""
    if not overwrite:
        for p, _ in outputs:
            if os.path.lexists(p):
                raise FileExistsError(f"refusing to overwrite existing file {os.fspath(p)!r}")
    written = []
    try:
        for p, data in outputs:
            files.write_new_file(p, data, overwrite)
            written.append(p)
    except BaseException:
        for p in written:
            try:
                os.remove(p)
            except OSError:
                pass
        raise
    return [os.fspath(p) for p, _ in outputs]


def save_obj(path, vertices, faces, uv=None, texture=None, vertex_colors=None,
             overwrite: bool = False) -> str:
    """Write ``path`` (.obj) plus ``<stem>.mtl`` beside it, and ``<stem>.png`` when a texture is
    given; the OBJ names the MTL and the MTL the PNG by relative file name. Vertex colours go
    into the OBJ as ``v x y z r g b`` (a common extension). ``uv`` follows the glTF convention
    (v down) like :func:`save_glb` and is flipped to OBJ's v-up on writing. Returns the OBJ path."""
    v, f, uv, texture, colors, _ = _validate(vertices, faces, uv, texture, vertex_colors)
    path = os.fspath(path)
    directory, filename = os.path.split(path)
    stem = os.path.splitext(filename)[0]
    mtl_name, png_name = stem + ".mtl", stem + ".png"
    lines = ["# written by trellis_impl (glTF frame: Y up, front +Z, metres)", f"mtllib {mtl_name}",
             "o mesh"]
    if colors is not None:
        c = _colors_to_float(colors)[:, :3]
        lines += [f"v {a:.7g} {b:.7g} {d:.7g} {r:.6g} {g:.6g} {bl:.6g}"
                  for (a, b, d), (r, g, bl) in zip(v.tolist(), c.tolist())]
    else:
        lines += [f"v {a:.7g} {b:.7g} {d:.7g}" for a, b, d in v.tolist()]
    if uv is not None:
        lines += [f"vt {a:.7g} {1.0 - b:.7g}" for a, b in uv.astype(np.float64).tolist()]
    lines.append("usemtl material")
    g = (f.astype(np.int64) + 1).tolist()
    if uv is not None:
        lines += [f"f {a}/{a} {b}/{b} {c}/{c}" for a, b, c in g]
    else:
        lines += [f"f {a} {b} {c}" for a, b, c in g]
    obj = ("\n".join(lines) + "\n").encode("utf-8")
    mtl = ["newmtl material", "Ka 0 0 0", "Kd 1 1 1", "Ks 0 0 0", "d 1", "illum 1"]
    if texture is not None:
        mtl.append(f"map_Kd {png_name}")
    outputs = [(path, obj), (os.path.join(directory, mtl_name), ("\n".join(mtl) + "\n").encode("utf-8"))]
    if texture is not None:
        outputs.append((os.path.join(directory, png_name), _png_bytes(texture)))
    _write_group(outputs, overwrite)
    return path


# ----------------------------------------------------------------------------------------------
# PLY

def save_mesh_ply(path, vertices, faces, vertex_colors=None, overwrite: bool = False) -> str:
    """Binary little-endian PLY: float xyz (glTF frame, metres), optional uchar rgb(a) vertex
    colours, faces as ``list uchar int vertex_indices``."""
    v, f, _, _, colors, _ = _validate(vertices, faces, None, None, vertex_colors)
    fields = [("x", "<f4"), ("y", "<f4"), ("z", "<f4")]
    names = ["red", "green", "blue", "alpha"]
    if colors is not None:
        fields += [(names[i], "u1") for i in range(colors.shape[1])]
    table = np.empty(len(v), dtype=fields)
    table["x"], table["y"], table["z"] = v[:, 0], v[:, 1], v[:, 2]
    if colors is not None:
        c8 = _colors_to_uint8(colors)
        for i in range(colors.shape[1]):
            table[names[i]] = c8[:, i]
    face_table = np.empty(len(f), dtype=[("n", "u1"), ("v", "<i4", (3,))])
    face_table["n"] = 3
    face_table["v"] = f.astype(np.int32)
    header = ["ply", "format binary_little_endian 1.0", "comment glTF frame: Y up, front +Z, metres",
              f"element vertex {len(v)}"]
    header += [f"property {'float' if t == '<f4' else 'uchar'} {name}" for name, t in fields]
    header += [f"element face {len(f)}", "property list uchar int vertex_indices", "end_header", ""]
    data = "\n".join(header).encode("ascii") + table.tobytes() + face_table.tobytes()
    return files.write_new_file(path, data, overwrite)
