"""3D Gaussians as decoded by TRELLIS's SLat Gaussian decoder, and the 3DGS PLY format.

Matches the official ``trellis.representations.gaussian.Gaussian`` to float32 rounding: the raw
fields are stored as the decoder produces them and the ``get_*`` properties apply the same
activations and biases (biases computed in float32). Everything runs on the device of the data.

Quaternions are (w, x, y, z) throughout.
"""
from __future__ import annotations

import math
import os
from typing import Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F

from ..backends.transfer import to_device
from ..files import write_new_file
from ..frames import TRELLIS_TO_PLY
from ..readers import read_ply
from ..sequences import radical_inverse

__all__ = [
    "DEFAULT_PLY_TRANSFORM",
    "Gaussian",
    "Gaussians",
    "gaussian_offset_perturbation",
    "gaussians_from_decoder_output",
]

#: Axis change applied by ``save_ply`` by default: stored (x, y, z) = (x, -z, y), TRELLIS's frame to
#: the 3DGS PLY frame (``trellis_impl/frames.py``). As a matrix on column vectors (ply = R @ xyz),
#: the form of the official save_ply's transform argument.
DEFAULT_PLY_TRANSFORM = tuple(tuple(float(v) for v in row) for row in TRELLIS_TO_PLY.T)

#: The box TRELLIS decoders place their output in: origin (-0.5, -0.5, -0.5), size 1.
TRELLIS_AABB = (-0.5, -0.5, -0.5, 1.0, 1.0, 1.0)

PathLike = Union[str, os.PathLike]


def _inverse_sigmoid(x: torch.Tensor) -> torch.Tensor:
    # Same expression as the official helper so saved logits match bit for bit.
    return torch.log(x / (1 - x))


def _inverse_softplus(x: torch.Tensor) -> torch.Tensor:
    return x + torch.log(-torch.expm1(-x))


def quaternion_to_matrix(quaternions: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Rotation matrices of (w, x, y, z) quaternions, normalised first.

    Same expression and rounding order as utils3d (``I + 2 (v v^T - |v|^2 I + w [v]_x)``), so
    float32 results match the official PLY writer bit for bit; this matters because converting
    back amplifies rounding in the matrix for small quaternion components.

    Args:
        quaternions: [..., 4].
    Returns:
        [..., 3, 3], in the dtype of the input.
    """
    q = quaternions / quaternions.norm(dim=-1, keepdim=True).clamp_min(eps)
    w, vector = q[..., 0], q[..., 1:]
    x, y, z = vector.unbind(-1)
    zeros = torch.zeros_like(w)
    identity = torch.eye(3, dtype=q.dtype, device=q.device)
    outer = vector[..., :, None] * vector[..., None, :] - identity * (vector ** 2).sum(dim=-1)[..., None, None]
    cross = torch.stack([zeros, -z, y, z, zeros, -x, -y, x, zeros], dim=-1).unflatten(-1, (3, 3))
    return identity + 2 * (outer + w[..., None, None] * cross)


def matrix_to_quaternion(matrices: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """Unit (w, x, y, z) quaternions of rotation matrices (utils3d convention).

    Magnitudes come from the diagonal; signs from the off-diagonal terms relative to the largest
    component, which is made positive (so q and -q map to the same output).

    Args:
        matrices: [..., 3, 3].
    Returns:
        [..., 4], in the dtype of the input.
    """
    m = matrices
    diag = torch.diagonal(m, dim1=-2, dim2=-1)
    signs_of_diag = m.new_tensor([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]])
    magnitudes = 0.5 * (1 + diag @ signs_of_diag.T).clamp_min(0.0).sqrt()
    largest = magnitudes.argmax(dim=-1)
    xw = torch.sign(m[..., 2, 1] - m[..., 1, 2])
    yw = torch.sign(m[..., 0, 2] - m[..., 2, 0])
    zw = torch.sign(m[..., 1, 0] - m[..., 0, 1])
    yz = torch.sign(m[..., 2, 1] + m[..., 1, 2])
    xz = torch.sign(m[..., 0, 2] + m[..., 2, 0])
    xy = torch.sign(m[..., 0, 1] + m[..., 1, 0])
    one = torch.ones_like(xw)
    # Row k: signs of (w, x, y, z) relative to component k.
    sign_table = torch.stack([
        torch.stack([one, xw, yw, zw], dim=-1),
        torch.stack([xw, one, xy, xz], dim=-1),
        torch.stack([yw, xy, one, yz], dim=-1),
        torch.stack([zw, xz, yz, one], dim=-1),
    ], dim=-2)
    index = largest[..., None, None].expand(*largest.shape, 1, 4)
    signs = sign_table.gather(-2, index).squeeze(-2)
    q = signs * magnitudes
    return q / q.norm(dim=-1, keepdim=True).clamp_min(eps)


def _rotation_transform(transform: Sequence[Sequence[float]]) -> torch.Tensor:
    """The transform as a float64 [3, 3] tensor; refuses anything but a proper rotation, since
    quaternions can only express those and loading inverts it by transposition."""
    matrix = torch.as_tensor(np.asarray(transform, dtype=np.float64))
    if matrix.shape != (3, 3):
        raise ValueError(f"transform must be 3x3, got shape {tuple(matrix.shape)}")
    if not (torch.allclose(matrix @ matrix.T, torch.eye(3, dtype=torch.float64), atol=1e-6)
            and abs(torch.linalg.det(matrix).item() - 1.0) < 1e-6):
        raise ValueError(f"transform must be a rotation matrix (orthonormal, det +1), got {transform}")
    return matrix


def _rotate_quaternions(quaternions: torch.Tensor, transform: torch.Tensor) -> torch.Tensor:
    """Quaternions of ``transform @ R(q)``, computed like the official save_ply: matrix in the
    quaternions' dtype, product and conversion back in float64. With float32 input, components
    much smaller than the others lose precision (up to ~3e-4 absolute, as in the official
    files); the conversion back takes square roots of differences of matrix entries.

    Args:
        quaternions: [N, 4], need not be normalised.
        transform: [3, 3] float64 rotation.
    Returns:
        [N, 4] float32 unit quaternions, largest component positive.
    """
    rotations = quaternion_to_matrix(quaternions).double()
    return matrix_to_quaternion(transform.to(rotations.device) @ rotations).float()


class Gaussians:
    """A set of N 3D Gaussians in an axis-aligned box (official name: ``Gaussian``).

    Raw fields (set by the decoder, or by ``from_*`` / ``load_ply``), float32:

    * ``_xyz`` [N, 3]: centres in box coordinates, [0, 1] spans the box.
    * ``_features_dc`` [N, 1, 3]: degree-0 SH colour coefficients.
    * ``_features_rest`` [N, (sh_degree+1)^2 - 1, 3] or None: higher SH bands (TRELLIS: None).
    * ``_scaling`` [N, 3]: pre-activation scales.
    * ``_rotation`` [N, 4]: (w, x, y, z) offsets from the identity quaternion, not normalised.
    * ``_opacity`` [N, 1]: pre-sigmoid opacities.

    Activated values (``get_*``) are in world units: ``get_xyz = _xyz * size + origin``.

    Args:
        aabb: (origin_x, origin_y, origin_z, size_x, size_y, size_z) of the box.
        sh_degree: spherical harmonics degree of the colours.
        mininum_kernel_size: 3D filter radius, combined in quadrature with every scale
            (official spelling; ``minimum_kernel_size`` is accepted too).
        scaling_bias: scale of a Gaussian whose raw ``_scaling`` is 0.
        opacity_bias: opacity of a Gaussian whose raw ``_opacity`` is 0.
        scaling_activation: 'exp' or 'softplus'.
        device: where the box and biases live before data is set; None = CPU. The ``get_*``
            properties always compute on the device of the raw fields.
    """

    def __init__(
        self,
        aabb: Sequence[float],
        sh_degree: int = 0,
        mininum_kernel_size: float = 0.0,
        scaling_bias: float = 0.01,
        opacity_bias: float = 0.1,
        scaling_activation: str = "exp",
        device: Optional[Union[str, torch.device]] = None,
        *,
        minimum_kernel_size: Optional[float] = None,
    ):
        if minimum_kernel_size is not None:
            if mininum_kernel_size not in (0.0, minimum_kernel_size):
                raise TypeError("got both mininum_kernel_size and minimum_kernel_size with different values")
            mininum_kernel_size = minimum_kernel_size
        if scaling_activation not in ("exp", "softplus"):
            raise ValueError(f"scaling_activation must be 'exp' or 'softplus', got {scaling_activation!r}")
        if not 0.0 < opacity_bias < 1.0:
            raise ValueError(f"opacity_bias must be in (0, 1), got {opacity_bias}")
        if scaling_bias <= 0.0:
            raise ValueError(f"scaling_bias must be > 0, got {scaling_bias}")
        if len(aabb) != 6:
            raise ValueError(f"aabb must have 6 values (origin, size), got {len(aabb)}")

        self._arguments = dict(aabb=aabb, sh_degree=sh_degree, mininum_kernel_size=mininum_kernel_size,
                               scaling_bias=scaling_bias, opacity_bias=opacity_bias,
                               scaling_activation=scaling_activation)
        self.sh_degree = sh_degree
        self.mininum_kernel_size = mininum_kernel_size  # the released attribute name, spelling included
        self.aabb = to_device(aabb, device, torch.float32)

        if scaling_activation == "exp":
            self.scaling_activation, self.inverse_scaling_activation = torch.exp, torch.log
        else:
            self.scaling_activation, self.inverse_scaling_activation = F.softplus, _inverse_softplus
        # Raw-space offsets, computed in float32 like the official code.
        self.scale_bias = self.inverse_scaling_activation(
            to_device(scaling_bias, device, torch.float32))
        self.opacity_logit_bias = _inverse_sigmoid(to_device(opacity_bias, device, torch.float32))
        self.rots_bias = to_device([1.0, 0.0, 0.0, 0.0], device, torch.float32)

        self._xyz: Optional[torch.Tensor] = None
        self._features_dc: Optional[torch.Tensor] = None
        self._features_rest: Optional[torch.Tensor] = None
        self._scaling: Optional[torch.Tensor] = None
        self._rotation: Optional[torch.Tensor] = None
        self._opacity: Optional[torch.Tensor] = None

    @property
    def init_params(self) -> dict:
        """The constructor's arguments under their released names: ``Gaussians(**g.init_params)``
        is an empty set with the same box and activations (a copy; changing it changes nothing)."""
        return dict(self._arguments)

    @property
    def device(self) -> torch.device:
        """Device of the data (of the box while no data is set)."""
        return self._xyz.device if self._xyz is not None else self.aabb.device

    @property
    def get_xyz(self) -> torch.Tensor:
        """[N, 3] centres in world units."""
        aabb = self.aabb.to(self._xyz.device)
        return self._xyz * aabb[None, 3:] + aabb[None, :3]

    @property
    def get_features(self) -> torch.Tensor:
        """[N, (sh_degree+1)^2, 3] SH coefficients (just ``_features_dc`` for degree 0).

        The official code concatenates the bands along dim 2, which only works for degree 0 (its
        only use); they are concatenated along the coefficient axis here.
        """
        if self._features_rest is None:
            return self._features_dc
        return torch.cat((self._features_dc, self._features_rest), dim=1)

    @property
    def get_scaling(self) -> torch.Tensor:
        """[N, 3] standard deviations in world units, at least ``mininum_kernel_size``."""
        scales = self.scaling_activation(self._scaling + self.scale_bias.to(self._scaling.device))
        return torch.sqrt(torch.square(scales) + self.mininum_kernel_size ** 2)

    @property
    def get_rotation(self) -> torch.Tensor:
        """[N, 4] unit (w, x, y, z) quaternions."""
        return F.normalize(self._rotation + self.rots_bias.to(self._rotation.device)[None, :])

    @property
    def get_opacity(self) -> torch.Tensor:
        """[N, 1] opacities in (0, 1)."""
        return torch.sigmoid(self._opacity + self.opacity_logit_bias.to(self._opacity.device))

    def get_covariance(self, scaling_modifier: float = 1.0) -> torch.Tensor:
        """[N, 6] upper triangle (xx, xy, xz, yy, yz, zz) of each world-space covariance."""
        rotations = quaternion_to_matrix(self._rotation + self.rots_bias.to(self._rotation.device)[None, :])
        factor = rotations * (scaling_modifier * self.get_scaling)[:, None, :]
        covariance = factor @ factor.transpose(1, 2)
        rows, cols = torch.triu_indices(3, 3)
        return covariance[:, rows, cols]

    def from_xyz(self, xyz: torch.Tensor) -> None:
        """Set ``_xyz`` from [N, 3] world-space centres."""
        aabb = self.aabb.to(xyz.device)
        self._xyz = (xyz - aabb[None, :3]) / aabb[None, 3:]

    def from_features(self, features: torch.Tensor) -> None:
        """Set ``_features_dc`` from [N, 1, 3] DC coefficients."""
        self._features_dc = features

    def from_scaling(self, scales: torch.Tensor) -> None:
        """Set ``_scaling`` from [N, 3] world-space scales.

        Scales below the kernel size (possible only through rounding) are clamped to a tiny
        positive excess instead of producing NaN as the official code would.
        """
        excess = (torch.square(scales) - self.mininum_kernel_size ** 2).clamp_min(torch.finfo(scales.dtype).tiny)
        self._scaling = self.inverse_scaling_activation(torch.sqrt(excess)) - self.scale_bias.to(scales.device)

    def from_rotation(self, rotations: torch.Tensor) -> None:
        """Set ``_rotation`` from [N, 4] (w, x, y, z) quaternions."""
        self._rotation = rotations - self.rots_bias.to(rotations.device)[None, :]

    def from_opacity(self, opacities: torch.Tensor) -> None:
        """Set ``_opacity`` from [N, 1] opacities in (0, 1)."""
        self._opacity = _inverse_sigmoid(opacities) - self.opacity_logit_bias.to(opacities.device)

    def _check_fields(self) -> int:
        """Validate shapes and finiteness of the raw fields; returns N."""
        fields = {
            "_xyz": (self._xyz, (3,)),
            "_features_dc": (self._features_dc, (1, 3)),
            "_scaling": (self._scaling, (3,)),
            "_rotation": (self._rotation, (4,)),
            "_opacity": (self._opacity, (1,)),
        }
        if self._features_rest is not None:
            fields["_features_rest"] = (self._features_rest, ((self.sh_degree + 1) ** 2 - 1, 3))
        count = None
        for name, (value, trailing) in fields.items():
            if value is None:
                raise ValueError(f"Gaussians field {name} is not set")
            if tuple(value.shape[1:]) != trailing:
                raise ValueError(f"Gaussians field {name} must have shape [N, {', '.join(map(str, trailing))}], "
                                 f"got {tuple(value.shape)}")
            if count is None:
                count = value.shape[0]
            elif value.shape[0] != count:
                raise ValueError(f"Gaussians field {name} has {value.shape[0]} rows, _xyz has {count}")
            bad = (~torch.isfinite(value.detach())).any(dim=tuple(range(1, value.dim()))).sum().item()
            if bad:
                raise ValueError(f"Gaussians field {name} has non-finite values (NaN/inf) in {bad} of {count} rows")
        return count

    def ply_attributes(
        self, transform: Optional[Sequence[Sequence[float]]] = DEFAULT_PLY_TRANSFORM,
    ) -> Dict[str, np.ndarray]:
        """The per-vertex PLY properties, in file order, as float32 [N] arrays.

        Same values as the official save_ply: positions and rotations changed by ``transform``
        (rotations then unit, largest component positive; without a transform they are written
        un-normalised), ``opacity`` = logit(get_opacity), ``scale_k`` = log(get_scaling), zero
        normals. Where the official float32 round trip saturates (opacity rounding to exactly 0
        or 1, a scale underflowing to 0) finite values are written instead of +-inf.

        Raises:
            ValueError: a raw field is missing, misshapen or not finite; ``transform`` is not a
                rotation.
        """
        count = self._check_fields()
        rotation_matrix = None if transform is None else _rotation_transform(transform)
        with torch.no_grad():
            xyz = self.get_xyz
            rotations = self._rotation + self.rots_bias.to(self._rotation.device)[None, :]
            if rotation_matrix is not None:
                xyz = xyz.double() @ rotation_matrix.to(xyz.device).T
                rotations = _rotate_quaternions(rotations, rotation_matrix)
            logits = _inverse_sigmoid(self.get_opacity)
            logits = torch.where(torch.isfinite(logits), logits,
                                 self._opacity + self.opacity_logit_bias.to(self._opacity.device))
            log_scales = torch.log(self.get_scaling.clamp_min(torch.finfo(torch.float32).tiny))
            # SH coefficients are stored channel-major (all of red, then green, then blue).
            f_dc = self._features_dc.transpose(1, 2).flatten(1)
            columns = [(["x", "y", "z"], xyz), (["nx", "ny", "nz"], torch.zeros_like(xyz)),
                       ([f"f_dc_{i}" for i in range(f_dc.shape[1])], f_dc)]
            if self._features_rest is not None:
                f_rest = self._features_rest.transpose(1, 2).flatten(1)
                columns.append(([f"f_rest_{i}" for i in range(f_rest.shape[1])], f_rest))
            columns += [(["opacity"], logits), ([f"scale_{i}" for i in range(3)], log_scales),
                        ([f"rot_{i}" for i in range(4)], rotations)]
        attributes: Dict[str, np.ndarray] = {}
        for names, values in columns:
            values = values.detach().to("cpu", torch.float32).numpy().reshape(count, len(names))
            attributes.update(zip(names, values.T))
        return attributes

    def save_ply(
        self,
        path: PathLike,
        transform: Optional[Sequence[Sequence[float]]] = DEFAULT_PLY_TRANSFORM,
        overwrite: bool = False,
    ) -> None:
        """Write the Gaussians as a binary little-endian 3DGS PLY (the official layout).

        Properties: x y z nx ny nz f_dc_0..2 [f_rest_*] opacity scale_0..2 rot_0..3, all float
        (see ``ply_attributes``; f_rest only when ``_features_rest`` is set, which the official
        writer would drop). The file is written to a temporary name in the same directory and
        linked into place (``trellis_impl.files.write_new_file``), so no partial file is left behind
        and an existing file is never replaced unless ``overwrite``.

        Args:
            path: output file.
            transform: [3, 3] rotation applied to positions and orientations; None for none.
            overwrite: replace an existing file instead of refusing.

        Raises:
            FileExistsError: ``path`` exists and ``overwrite`` is False.
            ValueError: see ``ply_attributes``.
        """
        attributes = self.ply_attributes(transform)
        count = len(attributes["x"])
        vertices = np.empty(count, dtype=[(name, "<f4") for name in attributes])
        for name, column in attributes.items():
            vertices[name] = column
        header = "".join(
            ["ply\n", "format binary_little_endian 1.0\n", f"element vertex {count}\n"]
            + [f"property float {name}\n" for name in attributes]
            + ["end_header\n"]
        ).encode("ascii")
        write_new_file(path, header + vertices.tobytes(), overwrite)

    @classmethod
    def load_ply(
        cls,
        path: PathLike,
        transform: Optional[Sequence[Sequence[float]]] = DEFAULT_PLY_TRANSFORM,
        **ctor_args,
    ) -> "Gaussians":
        """Read a 3DGS PLY written by ``save_ply`` (or any 3DGS PLY with these properties).

        Undoes ``transform`` (the official reader applies it a second time to rotations and
        fails on its own variable names; this one inverts it). f_rest_* are read only when
        ``sh_degree`` > 0 and must then number 3 * ((sh_degree+1)^2 - 1).

        Args:
            path: PLY file.
            transform: the transform the file was written with; None for none.
            **ctor_args: constructor arguments (``aabb`` required), e.g. ``g.init_params``.
        Returns:
            Gaussians whose ``get_*`` equal the saved ones (rotations up to sign), float32 on
            ``ctor_args['device']`` (CPU by default).
        """
        gaussians = cls(**ctor_args)
        properties = read_ply(path).elements.get("vertex", {})
        missing = [name for name in ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity") if name not in properties]
        if missing:
            raise ValueError(f"{os.fspath(path)!r} is not a 3DGS PLY: missing properties {missing}")

        def stacked(prefix: str) -> torch.Tensor:
            names = sorted((n for n in properties if n.startswith(prefix) and n[len(prefix):].isdigit()),
                           key=lambda n: int(n[len(prefix):]))
            return torch.from_numpy(np.stack([properties[n].astype(np.float32) for n in names], axis=1))

        xyz = torch.from_numpy(np.stack([properties[n].astype(np.float32) for n in "xyz"], axis=1))
        rotations = stacked("rot_")
        scales = stacked("scale_")
        if rotations.shape[1] != 4 or scales.shape[1] != 3:
            raise ValueError(f"{os.fspath(path)!r}: expected rot_0..3 and scale_0..2, got "
                             f"{rotations.shape[1]} rotation and {scales.shape[1]} scale properties")
        if transform is not None:
            rotation_matrix = _rotation_transform(transform)
            xyz = (xyz.double() @ rotation_matrix).float()
            # float64 throughout: unlike the writer there is no official rounding to reproduce.
            rotations = _rotate_quaternions(rotations.double(), rotation_matrix.T)

        device = gaussians.aabb.device
        gaussians.from_xyz(xyz.to(device))
        gaussians.from_features(stacked("f_dc_").unsqueeze(1).to(device))
        if gaussians.sh_degree > 0:
            rest = stacked("f_rest_")
            coefficients = (gaussians.sh_degree + 1) ** 2 - 1
            if rest.shape[1] != 3 * coefficients:
                raise ValueError(f"{os.fspath(path)!r}: sh_degree {gaussians.sh_degree} needs "
                                 f"{3 * coefficients} f_rest properties, found {rest.shape[1]}")
            gaussians._features_rest = rest.unflatten(1, (3, coefficients)).transpose(1, 2).contiguous().to(device)
        # Stored logits minus the bias directly: the official sigmoid/logit round trip saturates.
        logits = torch.from_numpy(properties["opacity"].astype(np.float32))[:, None].to(device)
        gaussians._opacity = logits - gaussians.opacity_logit_bias
        gaussians.from_scaling(torch.exp(scales).to(device))
        gaussians.from_rotation(rotations.to(device))
        return gaussians


#: Official class name.
Gaussian = Gaussians


def gaussian_offset_perturbation(num_gaussians: int, voxel_size: float) -> torch.Tensor:
    """The decoder's fixed per-slot centre offsets (pre-tanh), as the official _build_perturbation.

    Slot i gets the 3D Hammersley point (i/G, radical inverse of i in base 2, in base 3), mapped
    to [-1, 1), divided by ``voxel_size`` and passed through atanh, so that ``tanh`` of it puts
    the slots on a low-discrepancy pattern inside the voxel when the network outputs zero.
    Checkpoints store the result as the buffer ``offset_perturbation``; prefer the stored one.

    Returns:
        [num_gaussians, 3] float32 (CPU).
    """
    # Python floats first, then float32 arithmetic: the official order of roundings.
    points = [[i / num_gaussians, radical_inverse(2, i), radical_inverse(3, i)] for i in range(num_gaussians)]
    perturbation = torch.tensor(points, dtype=torch.float32) * 2 - 1
    return torch.atanh(perturbation / voxel_size)


def _gaussian_layout(num_gaussians: int) -> Dict[str, Tuple[int, ...]]:
    """Per-voxel output channels of the Gaussian decoder, in order: field -> per-voxel shape."""
    return {
        "_xyz": (num_gaussians, 3),
        "_features_dc": (num_gaussians, 1, 3),
        "_scaling": (num_gaussians, 3),
        "_rotation": (num_gaussians, 4),
        "_opacity": (num_gaussians, 1),
    }


def gaussians_from_decoder_output(
    coords_xyz: torch.Tensor,
    feats: torch.Tensor,
    resolution: int,
    rep_config: Mapping,
    offset_perturbation: Optional[torch.Tensor],
) -> Gaussians:
    """SLatGaussianDecoder.to_representation for one batch item.

    Each voxel emits G = ``rep_config['num_gaussians']`` Gaussians; output is voxel-major (the G
    Gaussians of a voxel are contiguous, voxels in input order). Centres:
    ``(coord + 0.5)/res + tanh(raw * lr + offset_perturbation)/res * 0.5 * voxel_size``;
    every other field is ``raw * lr``.

    Args:
        coords_xyz: [N, 3] integer voxel coordinates (batch column removed).
        feats: [N, 14 * G] raw output-layer features of those voxels.
        resolution: voxel grid resolution.
        rep_config: the decoder's ``representation_config`` (lr, perturb_offset, voxel_size,
            num_gaussians, 3d_filter_kernel_size, scaling_bias, opacity_bias, scaling_activation).
        offset_perturbation: [G, 3] the checkpoint buffer; may be None when perturb_offset is off.
    Returns:
        Gaussians in the TRELLIS box (-0.5..0.5), [N * G] rows, on the device of ``feats``.
    """
    num_gaussians = rep_config["num_gaussians"]
    layout = _gaussian_layout(num_gaussians)
    channels = sum(math.prod(shape) for shape in layout.values())
    if coords_xyz.dim() != 2 or coords_xyz.shape[1] != 3:
        raise ValueError(f"coords_xyz must be [N, 3], got {tuple(coords_xyz.shape)}")
    if feats.dim() != 2 or feats.shape != (coords_xyz.shape[0], channels):
        raise ValueError(f"feats must be [{coords_xyz.shape[0]}, {channels}], got {tuple(feats.shape)}")

    gaussians = Gaussians(
        aabb=TRELLIS_AABB,
        sh_degree=0,
        mininum_kernel_size=rep_config["3d_filter_kernel_size"],
        scaling_bias=rep_config["scaling_bias"],
        opacity_bias=rep_config["opacity_bias"],
        scaling_activation=rep_config["scaling_activation"],
        device=feats.device,
    )
    centres = (coords_xyz.to(feats.device).float() + 0.5) / resolution
    start = 0
    for name, shape in layout.items():
        size = math.prod(shape)
        raw = feats[:, start:start + size].reshape(-1, *shape)
        start += size
        if name == "_xyz":
            offset = raw * rep_config["lr"][name]
            if rep_config["perturb_offset"]:
                if offset_perturbation is None or tuple(offset_perturbation.shape) != (num_gaussians, 3):
                    raise ValueError(f"perturb_offset needs offset_perturbation [{num_gaussians}, 3]")
                offset = offset + offset_perturbation.to(feats.device)
            offset = torch.tanh(offset) / resolution * 0.5 * rep_config["voxel_size"]
            gaussians._xyz = (centres.unsqueeze(1) + offset).flatten(0, 1)
        else:
            setattr(gaussians, name, raw.flatten(0, 1) * rep_config["lr"][name])
    return gaussians
