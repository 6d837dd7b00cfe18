"""Mesh -> the sparse structure that TRELLIS variants start from: the surface voxels of a 64^3 grid.

Reproduces the official ``TrellisTextTo3DPipeline.voxelize`` (used by ``run_variant``): the
vertices are normalised into the unit cube (``normalize_vertices``), then every voxel of the
grid over [-0.5, 0.5]^3 that a triangle touches is kept, as open3d's
``VoxelGrid.create_from_triangle_mesh_within_bounds`` does: for each triangle, the voxels of an
index box around the triangle's bounding box go through Akenine-Möller's separating-axis
triangle/box test. Boxes are closed (a triangle touching a voxel's face marks it), degenerate
triangles mark the voxels their segment or point touches, and nothing inside is filled.
The test's float64 arithmetic follows open3d's evaluation order operation by operation, so the
voxel set is open3d's, ties on voxel boundaries included. Only the voxels that a triangle's plane
(or, for needles, its line) can reach go through the test: every voxel open3d would keep, and far
fewer than the bounding box of a large triangle.

open3d lists its voxels in hash-map order, which cannot be reproduced; ``voxelize_mesh`` sorts
them (x, y, z) ascending like ``argwhere``. The SLat noise is drawn one row per voxel, so a given
seed pairs the noise with other voxels than the official code does: an equally valid sample,
not the official one.
"""
from __future__ import annotations

import torch

from ..readers import check_mesh

__all__ = ["normalize_vertices", "voxelize_mesh"]
_GRID_MIN = -0.5  # the grid spans [-0.5, 0.5]^3, open3d's min_bound / max_bound
_CLIP = 0.5 - 1e-6  # official clip, keeps every vertex strictly inside the grid
# Candidate voxels tested at once: ~40 float64 temporaries each, a few hundred MB per batch.
_CANDIDATES_PER_BATCH = 1 << 20


def normalize_vertices(vertices: torch.Tensor) -> torch.Tensor:
    """[V, 3] -> float64 [V, 3]: AABB centre to the origin, divided by the largest AABB extent,
    clipped to [-0.5 + 1e-6, 0.5 - 1e-6] (the official ``voxelize``, float64 like open3d)."""
    vertices = vertices.double()
    low, high = vertices.min(0).values, vertices.max(0).values
    scale = (high - low).max()
    if scale == 0:
        raise ValueError(f"vertices: degenerate mesh, all {vertices.shape[0]} vertices are identical "
                         "(zero extent), nothing to voxelize")
    return ((vertices - (low + high) / 2) / scale).clamp(-_CLIP, _CLIP)


def voxelize_mesh(vertices: torch.Tensor, faces: torch.Tensor, resolution: int = 64,
                  normalize: bool = True) -> torch.Tensor:
    """Surface voxels of a triangle mesh, as open3d's ``create_from_triangle_mesh_within_bounds``
    (voxel_size = 1 / resolution, bounds [-0.5, 0.5]^3) finds them.

    vertices: float [V, 3]; faces: int [F, 3] (indices into vertices). With ``normalize`` the
    vertices go through ``normalize_vertices`` first (the official pipeline); without, they are
    only clipped (the official dataset toolkit, for meshes already in the unit cube).
    Returns int32 [N, 3] unique (x, y, z) grid indices in [0, resolution), sorted ascending,
    on the device of ``vertices``.
    """
    check_mesh(vertices, faces, "vertices/faces")
    if not (isinstance(resolution, int) and resolution > 0):
        raise ValueError(f"resolution must be a positive int, got {resolution!r}")
    vertices = normalize_vertices(vertices) if normalize else vertices.double().clamp(-_CLIP, _CLIP)
    triangles = vertices[faces.to(vertices.device).long()]  # [F, 3 corner, 3 axis]
    voxel_size = 1.0 / resolution
    first, last = _candidate_ranges(triangles.min(1).values, triangles.max(1).values, voxel_size)
    frame = _SearchFrame(triangles, voxel_size)
    first, last = first.gather(1, frame.axes), last.gather(1, frame.axes)
    corner_rows = triangles.permute(1, 2, 0).reshape(9, -1)  # [corner * axis, F]
    keys = [torch.empty(0, dtype=torch.long, device=vertices.device)]
    # Per triangle: rows u, then columns (u, w) of each row, then voxels (u, w, depth) of each column.
    for triangle, u in _enumerate_ranges(first[:, 0], last[:, 0], _CANDIDATES_PER_BATCH // 16):
        w_first, w_last = frame.row_range(triangle, u, first[triangle, 1], last[triangle, 1])
        for row, w in _enumerate_ranges(w_first, w_last, _CANDIDATES_PER_BATCH // 4):
            column_triangle, column_u = triangle[row], u[row]
            depth_first, depth_last = frame.column_range(column_triangle, column_u, w, first[column_triangle, 2],
                                                         last[column_triangle, 2])
            for column, depth in _enumerate_ranges(depth_first, depth_last, _CANDIDATES_PER_BATCH):
                owner = column_triangle[column]
                index = torch.empty(len(column), 3, dtype=torch.long, device=vertices.device).scatter_(
                    1, frame.axes[owner], torch.stack([column_u[column], w[column], depth], 1))  # -> (x, y, z)
                corners = corner_rows[:, owner].view(3, 3, -1)
                hit = _triangle_box_overlap(corners, _voxel_centers(index, voxel_size).T, voxel_size / 2)
                index = index[hit]
                keys.append(torch.unique((index[:, 0] * resolution + index[:, 1]) * resolution + index[:, 2]))
    keys = torch.unique(torch.cat(keys))  # sorted, so (x, y, z) ascending
    return torch.stack([keys // (resolution * resolution), keys // resolution % resolution,
                        keys % resolution], 1).int()


def _enumerate_ranges(first: torch.Tensor, last: torch.Tensor, batch: int):
    """Every integer of N inclusive ranges (first, last: int64 [N]), in order, in chunks of at most
    ``batch``: yields (range id int64 [n], value int64 [n])."""
    counts = (last - first + 1).clamp_min(0)
    ends = counts.cumsum(0)
    total = int(ends[-1]) if len(ends) else 0
    for start in range(0, total, batch):
        flat = torch.arange(start, min(start + batch, total), device=first.device)
        owner = torch.searchsorted(ends, flat, right=True)  # skips empty ranges
        yield owner, first[owner] + flat - (ends - counts)[owner]


class _SearchFrame:
    """Where each triangle's voxels can be, so that a large triangle is not tested against its
    whole bounding box (O(size^3) voxels). Triangles with a well-defined plane are searched in
    columns along the axis of the normal's largest component, where the plane meets ~3 voxels;
    needles (zero-area or nearly, longer than a voxel) in rows along their longest edge's main
    axis, within ~3 x 3 voxels of it; others in their bounding box. All bounds are conservative
    (a 1e-7 margin over the rounding of these and of the exact test), the exact test decides.

    axes: int64 [F, 3] the grid axes taken as (u, w, depth); is_plane, is_line: bool [F];
    origin, direction: float64 [F, (u, w, depth)]: a corner and the normal (planes), the longest
    edge's start and vector (lines); slack: float64 [F] the bounds' margin."""

    def __init__(self, triangles: torch.Tensor, voxel_size: float):
        self.voxel_size = voxel_size
        edges = triangles[:, [1, 2, 0]] - triangles  # [F, edge, axis]
        lengths = edges.norm(dim=2)
        normal = torch.linalg.cross(edges[:, 0], edges[:, 1])
        double_area = normal.norm(dim=1)
        # The normal's rounding error is ~1e-15 of the edge lengths: its direction is then known
        # to ~1e-9 (in the unit cube).
        self.is_plane = double_area > 1e-5 * (lengths[:, 0] + lengths[:, 1])
        longest_length, longest = lengths.max(1)
        self.is_line = ~self.is_plane & (longest_length >= voxel_size)
        every = torch.arange(len(triangles), device=triangles.device)
        line, line_start = edges[every, longest], triangles[every, longest]
        u = torch.where(self.is_plane, (normal.abs().argmax(1) + 1) % 3, line.abs().argmax(1))
        self.axes = torch.stack([u, (u + 1) % 3, (u + 2) % 3], 1)  # planes: depth is the normal's axis
        self.origin = torch.where(self.is_plane[:, None], triangles[:, 0], line_start).gather(1, self.axes)
        self.direction = torch.where(self.is_plane[:, None], normal, line).gather(1, self.axes)
        # A needle lies within its height (double area / longest edge) of the line of that edge.
        height = torch.where(self.is_line, double_area / longest_length, torch.zeros_like(double_area))
        self.slack = 2 * height + 1e-7

    def _line(self, triangle, u, axis):
        """Lines: their coordinate on ``axis`` at the centre of voxel row u, and its spread over the row."""
        origin, direction = self.origin[triangle], self.direction[triangle]
        along = torch.where(self.is_line[triangle], direction[:, 0], torch.ones_like(direction[:, 0]))
        value = origin[:, axis] + direction[:, axis] * (_voxel_centers(u, self.voxel_size) - origin[:, 0]) / along
        return value, self.voxel_size / 2 * direction[:, axis].abs() / along.abs() + self.slack[triangle]

    def row_range(self, triangle, u, first, last):
        """int64 [n] w range of row u of each triangle, within its bounding-box range first, last."""
        return self._narrow(self.is_line[triangle], *self._line(triangle, u, 1), first, last)

    def column_range(self, triangle, u, w, first, last):
        """int64 [n] depth range of column (u, w) of each triangle, within first, last."""
        origin, normal = self.origin[triangle], self.direction[triangle]
        plane = self.is_plane[triangle]
        along = torch.where(plane, normal[:, 2], torch.ones_like(normal[:, 2]))
        center_u, center_w = _voxel_centers(u, self.voxel_size), _voxel_centers(w, self.voxel_size)
        # the plane's depth over the column's square: centre value +- h * (|n_u| + |n_w|) / |n_depth|
        plane_value = origin[:, 2] - (normal[:, 0] * (center_u - origin[:, 0])
                                      + normal[:, 1] * (center_w - origin[:, 1])) / along
        plane_reach = (self.voxel_size / 2 * (normal[:, 0].abs() + normal[:, 1].abs()) / along.abs()
                       + self.slack[triangle])
        line_value, line_reach = self._line(triangle, u, 2)
        return self._narrow(plane | self.is_line[triangle], torch.where(plane, plane_value, line_value),
                            torch.where(plane, plane_reach, line_reach), first, last)

    def _narrow(self, narrowed, value, reach, first, last):
        """[first, last] cut to the voxels whose box meets [value - reach, value + reach] where ``narrowed``."""
        low = torch.ceil((value - reach - _GRID_MIN) / self.voxel_size).long() - 1
        high = torch.floor((value + reach - _GRID_MIN) / self.voxel_size).long()
        return (torch.where(narrowed, torch.maximum(low, first), first),
                torch.where(narrowed, torch.minimum(high, last), last))


def _voxel_centers(index: torch.Tensor, voxel_size: float) -> torch.Tensor:
    """int [..., 3] grid indices -> float64 box centres, rounded like open3d's
    ``min_bound + box_half_size + index * voxel_size``."""
    return (_GRID_MIN + voxel_size / 2) + index.double() * voxel_size


def _candidate_ranges(low: torch.Tensor, high: torch.Tensor, voxel_size: float):
    """Per triangle and axis (low, high: float64 [F, 3] bounding box), the inclusive index range
    [first, last] (int64 [F, 3] each) of the voxels open3d tests whose box also meets the
    bounding box on that axis. open3d tests floor((low - min) / size) + [0, round(extent / size) + 2)
    and rejects the others by the SAT box-axis test, whose failures form a prefix (box below the
    triangle) and a suffix (box above it) of that range: only the few indices at both ends are tested."""
    half = voxel_size / 2
    start = torch.floor((low - _GRID_MIN) / voxel_size)
    extent = (high - low) / voxel_size
    # std::round (halves away from zero) of a non-negative number; torch.round halves to even.
    rounded = extent.floor() + (extent - extent.floor() >= 0.5).double()
    start, end = start.long(), (start + rounded + 1).long()  # end >= start + 1

    def fails(index, failing):  # the test at index, counted only inside open3d's range
        return (failing(_voxel_centers(index, voxel_size)) & (index >= start) & (index <= end)).long()

    # The box lies wholly below the triangle for at most the first index of the range, and wholly
    # above it for at most the last two (rounding included); a margin more is checked.
    box_below = sum(fails(start + k, lambda center: low - center > half) for k in range(2))
    box_above = sum(fails(end - k, lambda center: high - center < -half) for k in range(4))
    return start + box_below, end - box_above


def _separated(p_first: torch.Tensor, p_second: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Both projections beyond the box's projected radius on the same side: a separating axis."""
    return ((p_first > radius) & (p_second > radius)) | ((p_first < -radius) & (p_second < -radius))


def _triangle_box_overlap(corners: torch.Tensor, centers: torch.Tensor, half: float) -> torch.Tensor:
    """Akenine-Möller's triangle/box test (``triBoxOverlap``, operation by operation as open3d
    evaluates it) for boxes already known to overlap the triangle's bounding box.
    corners: float64 [3 corner, 3 axis, C]; centers: float64 [3 axis, C] box centres; half: the
    box half size. Returns bool [C]. Components lead so that every operand is a contiguous row."""
    v = corners - centers  # in the box's frame
    edges = v[[1, 2, 0]] - v  # edge k runs from corner k to corner k + 1
    # The triangle's plane first: it rejects most boxes of large triangles, which are then dropped.
    # normal = edge0 x edge1, zero for degenerate triangles (which passes).
    e0, e1 = edges[0], edges[1]
    normal = e0[[1, 2, 0]] * e1[[2, 0, 1]] - e0[[2, 0, 1]] * e1[[1, 2, 0]]
    positive = normal > 0
    to_min = torch.where(positive, -half - v[0], half - v[0])  # v0 to the box corner farthest down the normal
    to_max = torch.where(positive, half - v[0], -half - v[0])
    dot_min, dot_max = (((normal[0] * c[0]) + normal[1] * c[1]) + normal[2] * c[2] for c in (to_min, to_max))
    keep = (dot_min <= 0) & (dot_max >= 0)
    hit = keep.clone()
    v, edges = v[:, :, keep], edges[:, :, keep]
    radius_part = edges.abs() * half
    separated = torch.zeros(v.shape[2], dtype=torch.bool, device=v.device)
    x, y, z = 0, 1, 2
    # Axes edge x unit axis: edge x X, edge x Y, edge x Z project a corner p on
    # e_a * p_b - e_b * p_a for (a, b) = (z, y), (x, z), (y, x). A projection is the same for both
    # ends of the edge, so each test projects one end and the opposite corner; the corner pairs
    # (per edge 0, 1, 2) are those of triBoxOverlap.
    for (a, b), corner_pairs in (((z, y), ((0, 2), (0, 2), (0, 1))),
                                 ((x, z), ((0, 2), (0, 2), (0, 1))),
                                 ((y, x), ((1, 2), (0, 1), (1, 2)))):
        ea, eb = edges[:, a], edges[:, b]  # [edge, C]
        first, second = (v[[pair[i] for pair in corner_pairs]] for i in (0, 1))  # [edge, axis, C]
        separated |= _separated(ea * first[:, b] - eb * first[:, a], ea * second[:, b] - eb * second[:, a],
                                radius_part[:, a] + radius_part[:, b]).any(0)
    hit[keep] = ~separated
    return hit
