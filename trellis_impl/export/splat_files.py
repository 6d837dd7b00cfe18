"""Compressed Gaussian-splat files for web viewers: Niantic ``.spz`` and antimatter15 ``.splat``.

Both writers start from ``Gaussians.ply_attributes(DEFAULT_PLY_TRANSFORM)``, i.e. the official
3DGS PLY fields in the 3DGS/OpenCV frame (x right, y down, z forward: "RDF"), and both loaders
return a dict of float32 numpy arrays in that same PLY convention: ``x y z``, ``f_dc_0..2``,
``[f_rest_*]``, ``opacity`` (logit), ``scale_0..2`` (log), ``rot_0..3`` (w, x, y, z).

``.spz`` (Niantic, https://github.com/nianticlabs/spz, legacy gzip layout, versions 2 and 3)
    gzip( 16-byte header | positions | alphas | colours | scales | rotations | SH ), fields
    stored non-interleaved (all N of one field, then the next). Header, little-endian:
    ``uint32 magic = 0x5053474e ("NGSP")``, ``uint32 version``, ``uint32 numPoints``,
    ``uint8 shDegree``, ``uint8 fractionalBits (12)``, ``uint8 flags (bit0 antialiased)``,
    ``uint8 reserved = 0``.

    * positions: 3 x 24-bit signed little-endian fixed point, value * 2^fractionalBits rounded
      (error <= 2^-13 for 12 fractional bits; range +-2048).
    * alphas: round(sigmoid(opacity) * 255).
    * colours: round(f_dc * 0.15 * 255 + 127.5), clamped (DC error <= 0.5 / (0.15 * 255)).
    * scales: round((log scale + 10) * 16), clamped (log-scale error <= 1/32 in [-10, 5.94]).
    * rotations, quaternion in (x, y, z, w) order, normalised. Version 3 ("smallest three"):
      a little-endian uint32 whose top 2 bits index the largest |component| (made positive),
      then for the other three components in index order (first one in the highest bits) a sign
      bit and a 9-bit magnitude round(511 * |q_i| / sqrt(1/2)). Version 2: 3 bytes
      round((x, y, z) * 127.5 + 127.5) with the sign chosen so w >= 0.
    * SH (degree >= 1): per point, per coefficient k (excluding DC), r g b bytes
      round(v * 128 + 128) (written here at full 8-bit precision).

    Coordinate frame: spz stores its data in "RUB" (x right, y up, z back; three.js). The
    reference ``ply_to_spz`` converts from the PLY frame RDF on save, which is a 180 degree
    rotation about x: positions (x, -y, -z); quaternion (w, x, -y, -z); SH coefficients
    multiplied by the reference's ``flipSh`` signs. ``save_spz`` does the same, and
    ``load_spz`` converts back to RDF (as the reference ``spz_to_ply`` does), so PLY -> spz ->
    PLY round-trips and viewers that honour the spz convention show the same scene as the PLY.

``.splat`` (antimatter15/splat, 32 bytes per Gaussian, no header, little-endian)
    ``float32 x, y, z`` | ``float32 scale x, y, z`` (exp of the log scales) | ``uint8 r, g, b, a``
    with rgb = clip(round((0.5 + SH_C0 * f_dc) * 255)) and a = round(sigmoid(opacity) * 255) |
    ``uint8 rot[4]`` = clip(round(q * 128 + 128)) of the normalised (w, x, y, z) quaternion.
    Stored in the same frame as the PLY (RDF, no conversion), like antimatter15's convert.py.
    Higher SH bands are dropped. Gaussians are written in their original order (convert.py
    additionally sorts by size * opacity; viewers sort by depth themselves).

Decoding: alphas 0 / 255 would give +-inf logits; ``load_*`` clamp the probability to
[0.5/255, 1 - 0.5/255] so every returned value is finite.
"""

import gzip
import math
import os
import struct
from typing import Dict, Union

import numpy as np

from ..files import write_new_file
from ..frames import transform
from ..representations.gaussians import DEFAULT_PLY_TRANSFORM

__all__ = ["save_spz", "load_spz", "save_splat", "load_splat",
           "SPZ_MAGIC", "SPZ_FRACTIONAL_BITS", "SPZ_COLOR_SCALE", "SH_C0"]

PathLike = Union[str, os.PathLike]

SPZ_MAGIC = 0x5053474E  # "NGSP" little-endian
SPZ_FRACTIONAL_BITS = 12
SPZ_COLOR_SCALE = 0.15
SH_C0 = 0.28209479177387814
_SQRT1_2 = math.sqrt(0.5)
_SPZ_HEADER = struct.Struct("<IIIBBBB")
# RDF <-> RUB, the PLY frame <-> the glTF frame (trellis_impl/frames.py): x kept, y and z negated
# (reference CoordinateConverter, x=+1, y=z=-1).
_FLIP_P = np.diag(transform("ply", "gltf"))
_FLIP_Q_XYZ = np.array([1.0, -1.0, -1.0], dtype=np.float64)  # (y*z, x*z, x*y)
_FLIP_SH = np.array([-1, -1, 1, -1, 1, 1, -1, 1, -1, 1, -1, -1, 1, -1, 1], dtype=np.float64)  # degrees 1..3


def _attributes(gaussians) -> Dict[str, np.ndarray]:
    attributes = gaussians.ply_attributes(DEFAULT_PLY_TRANSFORM)
    if len(attributes["x"]) == 0:
        raise ValueError("cannot save empty Gaussians (0 points)")
    for name, column in attributes.items():
        if not np.all(np.isfinite(column)):
            raise ValueError(f"Gaussians attribute {name} has non-finite values (NaN/inf)")
    return attributes


def _stack(attributes, names) -> np.ndarray:
    return np.stack([np.asarray(attributes[n], dtype=np.float64) for n in names], axis=1)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _logit_from_byte(a: np.ndarray) -> np.ndarray:
    p = np.clip(a.astype(np.float64) / 255.0, 0.5 / 255.0, 1.0 - 0.5 / 255.0)
    return np.log(p / (1.0 - p))


def _to_u8(x: np.ndarray) -> np.ndarray:
    return np.clip(np.round(x), 0, 255).astype(np.uint8)


def _normalised(q: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(q, axis=1, keepdims=True)
    if np.any(norm == 0):
        raise ValueError("Gaussians attribute rot_* has zero-length quaternions")
    return q / norm


def _sh_degree(attributes) -> int:
    rest = sum(1 for name in attributes if name.startswith("f_rest_"))
    if rest % 3:
        raise ValueError(f"f_rest_* count {rest} is not a multiple of 3")
    dim = rest // 3
    for degree in range(4):
        if (degree + 1) ** 2 - 1 == dim:
            return degree
    raise ValueError(f"spz supports SH degree <= 3 here, got {dim} rest coefficients per channel")


# ----------------------------------------------------------------------------------------- spz

def _pack_quat_smallest_three(q_xyzw: np.ndarray) -> np.ndarray:
    n = len(q_xyzw)
    largest = np.argmax(np.abs(q_xyzw), axis=1)
    negate = q_xyzw[np.arange(n), largest] < 0
    comp = largest.astype(np.uint64)
    for i in range(4):
        keep = largest != i
        negbit = ((q_xyzw[:, i] < 0) ^ negate).astype(np.uint64)
        mag = np.floor(511.0 * (np.abs(q_xyzw[:, i]) / _SQRT1_2) + 0.5).astype(np.uint64)
        mag = np.minimum(mag, 511)
        comp = np.where(keep, (comp << np.uint64(10)) | (negbit << np.uint64(9)) | mag, comp)
    return comp.astype("<u4").view(np.uint8).reshape(n, 4)


def _unpack_quat_smallest_three(r: np.ndarray) -> np.ndarray:
    comp = r.astype(np.uint32).copy()
    comp = comp[:, 0] | (comp[:, 1] << 8) | (comp[:, 2] << 16) | (comp[:, 3] << 24)
    largest = comp >> 30
    q = np.zeros((len(r), 4), dtype=np.float64)
    for i in range(3, -1, -1):
        skip = largest == i
        mag = (comp & 511).astype(np.float64)
        neg = ((comp >> 9) & 1).astype(bool)
        value = _SQRT1_2 * mag / 511.0
        q[:, i] = np.where(skip, 0.0, np.where(neg, -value, value))
        comp = np.where(skip, comp, comp >> 10)
    rest = np.sum(q * q, axis=1)
    q[np.arange(len(r)), largest] = np.sqrt(np.maximum(0.0, 1.0 - rest))
    return q


def save_spz(gaussians, path: PathLike, overwrite: bool = False, version: int = 3) -> str:
    """Write ``gaussians`` as a gzipped ``.spz`` (version 3 by default, or 2); returns the path.

    See the module docstring for the layout and the RDF -> RUB conversion.

    Raises:
        ValueError: empty Gaussians, non-finite attributes, positions outside +-2048, SH degree
            above 3, or an unsupported version.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    if version not in (2, 3):
        raise ValueError(f"spz version must be 2 or 3, got {version}")
    attributes = _attributes(gaussians)
    n = len(attributes["x"])
    degree = _sh_degree(attributes)
    dim = (degree + 1) ** 2 - 1

    positions = _stack(attributes, "xyz") * _FLIP_P
    fixed = np.round(positions * (1 << SPZ_FRACTIONAL_BITS))
    limit = 1 << 23
    if np.any(fixed >= limit) or np.any(fixed < -limit):
        raise ValueError(f"Gaussians attribute x/y/z out of the spz range +-{limit >> SPZ_FRACTIONAL_BITS}")
    fixed = fixed.astype("<i4").reshape(-1)
    pos_bytes = fixed.view(np.uint8).reshape(-1, 4)[:, :3]

    alphas = _to_u8(_sigmoid(np.asarray(attributes["opacity"], np.float64)) * 255.0)
    colors = _to_u8(_stack(attributes, [f"f_dc_{i}" for i in range(3)]) * (SPZ_COLOR_SCALE * 255.0) + 127.5)
    scales = _to_u8((_stack(attributes, [f"scale_{i}" for i in range(3)]) + 10.0) * 16.0)

    wxyz = _normalised(_stack(attributes, [f"rot_{i}" for i in range(4)]))
    xyzw = np.concatenate([wxyz[:, 1:] * _FLIP_Q_XYZ, wxyz[:, :1]], axis=1)
    if version >= 3:
        rotations = _pack_quat_smallest_three(xyzw)
    else:
        sign = np.where(xyzw[:, 3:] < 0, -1.0, 1.0)
        rotations = _to_u8(xyzw[:, :3] * sign * 127.5 + 127.5)

    if dim:
        # PLY: f_rest_{channel * dim + k}; spz: [k][channel] per point.
        rest = _stack(attributes, [f"f_rest_{i}" for i in range(3 * dim)]).reshape(n, 3, dim)
        rest = rest * _FLIP_SH[:dim][None, None, :]
        sh = _to_u8(rest.transpose(0, 2, 1) * 128.0 + 128.0)
    else:
        sh = np.zeros((n, 0), dtype=np.uint8)

    header = _SPZ_HEADER.pack(SPZ_MAGIC, version, n, degree, SPZ_FRACTIONAL_BITS, 0, 0)
    payload = b"".join([header, pos_bytes.tobytes(), alphas.tobytes(), colors.tobytes(),
                        scales.tobytes(), rotations.tobytes(), sh.tobytes()])
    return write_new_file(path, gzip.compress(payload, compresslevel=9, mtime=0), overwrite)


def load_spz(path: PathLike) -> Dict[str, np.ndarray]:
    """Read a gzip ``.spz`` (versions 2 and 3) into PLY-convention float32 arrays (RDF frame).

    Raises:
        ValueError: not an spz file, unsupported version or truncated data.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    try:
        data = gzip.decompress(raw)
    except (OSError, EOFError) as error:
        raise ValueError(f"{os.fspath(path)!r} is not a gzip spz file: {error}") from None
    if len(data) < _SPZ_HEADER.size:
        raise ValueError("spz data shorter than its header")
    magic, version, n, degree, frac, flags, _ = _SPZ_HEADER.unpack_from(data)
    if magic != SPZ_MAGIC:
        raise ValueError(f"bad spz magic 0x{magic:08x}")
    if version not in (2, 3):
        raise ValueError(f"unsupported spz version {version} (2 and 3 are supported)")
    if degree > 3:
        raise ValueError(f"unsupported spz SH degree {degree}")
    dim = (degree + 1) ** 2 - 1
    rot_size = 4 if version >= 3 else 3
    sizes = [9 * n, n, 3 * n, 3 * n, rot_size * n, 3 * dim * n]
    if len(data) < _SPZ_HEADER.size + sum(sizes):
        raise ValueError(f"spz data truncated: {len(data)} bytes for {n} points")
    buf = np.frombuffer(data, dtype=np.uint8)
    offset = _SPZ_HEADER.size
    parts = []
    for size in sizes:
        parts.append(buf[offset:offset + size])
        offset += size
    pos_b, alpha_b, color_b, scale_b, rot_b, sh_b = parts

    pos = pos_b.reshape(-1, 3).astype(np.int32)
    fixed = pos[:, 0] | (pos[:, 1] << 8) | (pos[:, 2] << 16)
    fixed = np.where(fixed & 0x800000, fixed - (1 << 24), fixed)
    positions = fixed.reshape(n, 3).astype(np.float64) / (1 << frac) * _FLIP_P

    if version >= 3:
        xyzw = _unpack_quat_smallest_three(rot_b.reshape(n, 4))
    else:
        xyz = rot_b.reshape(n, 3).astype(np.float64) / 127.5 - 1.0
        w = np.sqrt(np.maximum(0.0, 1.0 - np.sum(xyz * xyz, axis=1, keepdims=True)))
        xyzw = np.concatenate([xyz, w], axis=1)
    wxyz = np.concatenate([xyzw[:, 3:], xyzw[:, :3] * _FLIP_Q_XYZ], axis=1)

    colors = (color_b.reshape(n, 3).astype(np.float64) / 255.0 - 0.5) / SPZ_COLOR_SCALE
    scales = scale_b.reshape(n, 3).astype(np.float64) / 16.0 - 10.0
    out: Dict[str, np.ndarray] = {}
    for i, axis in enumerate("xyz"):
        out[axis] = positions[:, i]
    for i in range(3):
        out[f"f_dc_{i}"] = colors[:, i]
    if dim:
        sh = (sh_b.reshape(n, dim, 3).astype(np.float64) - 128.0) / 128.0
        sh = sh * _FLIP_SH[:dim][None, :, None]
        for c in range(3):
            for k in range(dim):
                out[f"f_rest_{c * dim + k}"] = sh[:, k, c]
    out["opacity"] = _logit_from_byte(alpha_b)
    for i in range(3):
        out[f"scale_{i}"] = scales[:, i]
    for i in range(4):
        out[f"rot_{i}"] = wxyz[:, i]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}


# --------------------------------------------------------------------------------------- splat

_SPLAT_DTYPE = np.dtype([("position", "<f4", (3,)), ("scale", "<f4", (3,)),
                         ("rgba", "u1", (4,)), ("rot", "u1", (4,))])
assert _SPLAT_DTYPE.itemsize == 32


def save_splat(gaussians, path: PathLike, overwrite: bool = False) -> str:
    """Write ``gaussians`` as an antimatter15 ``.splat`` (32 bytes each, PLY/RDF frame).

    Raises:
        ValueError: empty Gaussians or non-finite attributes.
        FileExistsError: ``path`` exists and ``overwrite`` is False.
    """
    attributes = _attributes(gaussians)
    n = len(attributes["x"])
    records = np.zeros(n, dtype=_SPLAT_DTYPE)
    records["position"] = _stack(attributes, "xyz")
    scales = np.exp(_stack(attributes, [f"scale_{i}" for i in range(3)]))
    if not np.all(np.isfinite(scales.astype(np.float32))):
        raise ValueError("Gaussians attribute scale_* overflows float32 after exp")
    records["scale"] = scales
    dc = _stack(attributes, [f"f_dc_{i}" for i in range(3)])
    records["rgba"][:, :3] = _to_u8((0.5 + SH_C0 * dc) * 255.0)
    records["rgba"][:, 3] = _to_u8(_sigmoid(np.asarray(attributes["opacity"], np.float64)) * 255.0)
    wxyz = _normalised(_stack(attributes, [f"rot_{i}" for i in range(4)]))
    records["rot"] = _to_u8(wxyz * 128.0 + 128.0)
    return write_new_file(path, records.tobytes(), overwrite)


def load_splat(path: PathLike) -> Dict[str, np.ndarray]:
    """Read an antimatter15 ``.splat`` into PLY-convention float32 arrays (x y z, f_dc_0..2,
    opacity logit, scale log, rot wxyz normalised).

    Raises:
        ValueError: the size is not a positive multiple of 32 bytes.
    """
    with open(path, "rb") as handle:
        raw = handle.read()
    if len(raw) == 0 or len(raw) % 32:
        raise ValueError(f".splat size {len(raw)} is not a positive multiple of 32 bytes")
    records = np.frombuffer(raw, dtype=_SPLAT_DTYPE)
    out: Dict[str, np.ndarray] = {}
    for i, axis in enumerate("xyz"):
        out[axis] = records["position"][:, i]
    rgb = records["rgba"][:, :3].astype(np.float64) / 255.0
    for i in range(3):
        out[f"f_dc_{i}"] = (rgb[:, i] - 0.5) / SH_C0
    out["opacity"] = _logit_from_byte(records["rgba"][:, 3])
    log_scales = np.log(np.maximum(records["scale"].astype(np.float64), np.finfo(np.float32).tiny))
    for i in range(3):
        out[f"scale_{i}"] = log_scales[:, i]
    rot = (records["rot"].astype(np.float64) - 128.0) / 128.0
    norm = np.linalg.norm(rot, axis=1, keepdims=True)
    rot = np.where(norm > 0, rot / np.where(norm > 0, norm, 1.0), np.array([1.0, 0, 0, 0]))
    for i in range(4):
        out[f"rot_{i}"] = rot[:, i]
    return {name: np.ascontiguousarray(value, dtype=np.float32) for name, value in out.items()}
