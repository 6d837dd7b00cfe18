"""Mesh -> 64^3 surface voxels (the sparse structure of TRELLIS variants), and the mesh readers.

The voxel sets are checked against an exact separating-axis test written plainly below (rational
arithmetic), and against known shapes: the cube's shell, a closed symmetric sphere shell.
"""
from __future__ import annotations

import itertools
import struct
from fractions import Fraction

import numpy as np
import pytest
import torch

from trellis_impl import readers as readers_module
from trellis_impl.pipelines.voxelize import normalize_vertices, voxelize_mesh
from trellis_impl.readers import load_mesh

R = 64
CUBE_VERTICES = torch.tensor(list(itertools.product((0.0, 1.0), repeat=3)), dtype=torch.float64)
CUBE_FACES = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                           [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])


def exact_overlap(triangle, index, resolution=R) -> bool:
    """Closed triangle vs closed voxel box, in exact rational arithmetic: the 13 separating axes
    (box normals, triangle normal, edges x box normals); touching counts as overlap."""
    corners = [[Fraction(float(c)) for c in corner] for corner in triangle]
    size = Fraction(1, resolution)
    low = [Fraction(-1, 2) + i * size for i in index]
    center, half = [l + size / 2 for l in low], size / 2
    edges = [[b[i] - a[i] for i in range(3)] for a, b in zip(corners, corners[1:] + corners[:1])]

    def cross(a, b):
        return [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]]

    units = [[int(i == j) for j in range(3)] for i in range(3)]
    axes = units + [cross(edges[0], edges[1])] + [cross(e, u) for e in edges for u in units]
    for axis in axes:
        projections = [sum(a * c for a, c in zip(axis, corner)) for corner in corners]
        middle = sum(a * c for a, c in zip(axis, center))
        radius = half * sum(abs(a) for a in axis)
        if max(projections) < middle - radius or min(projections) > middle + radius:
            return False
    return True


def exact_voxels(triangles, resolution=R) -> set:
    """Every voxel some triangle overlaps, by the exact test over each bounding box (+1 voxel)."""
    found = set()
    for triangle in triangles:
        triangle = np.asarray(triangle, dtype=np.float64)
        low = np.floor((triangle.min(0) + 0.5) * resolution).astype(int) - 1
        high = np.floor((triangle.max(0) + 0.5) * resolution).astype(int) + 1
        for index in itertools.product(*(range(max(l, 0), min(h, resolution - 1) + 1) for l, h in zip(low, high))):
            if exact_overlap(triangle, index, resolution):
                found.add(index)
    return found


def as_set(coords: torch.Tensor) -> set:
    return set(map(tuple, coords.tolist()))


def icosphere(subdivisions: int):
    """Unit icosphere: vertices float64 [V, 3], faces int64 [F, 3]."""
    golden = (1 + 5 ** 0.5) / 2
    vertices = [[-1, golden, 0], [1, golden, 0], [-1, -golden, 0], [1, -golden, 0], [0, -1, golden], [0, 1, golden],
                [0, -1, -golden], [0, 1, -golden], [golden, 0, -1], [golden, 0, 1], [-golden, 0, -1], [-golden, 0, 1]]
    vertices = [list(np.array(v, float) / np.linalg.norm(v)) for v in vertices]
    faces = [[0, 11, 5], [0, 5, 1], [0, 1, 7], [0, 7, 10], [0, 10, 11], [1, 5, 9], [5, 11, 4], [11, 10, 2], [10, 7, 6],
             [7, 1, 8], [3, 9, 4], [3, 4, 2], [3, 2, 6], [3, 6, 8], [3, 8, 9], [4, 9, 5], [2, 4, 11], [6, 2, 10],
             [8, 6, 7], [9, 8, 1]]
    for _ in range(subdivisions):
        midpoints, finer = {}, []

        def midpoint(a, b):
            key = (min(a, b), max(a, b))
            if key not in midpoints:
                middle = (np.array(vertices[a]) + np.array(vertices[b])) / 2
                vertices.append(list(middle / np.linalg.norm(middle)))
                midpoints[key] = len(vertices) - 1
            return midpoints[key]

        for a, b, c in faces:
            ab, bc, ca = midpoint(a, b), midpoint(b, c), midpoint(c, a)
            finer += [[a, ab, ca], [b, bc, ab], [c, ca, bc], [ab, bc, ca]]
        faces = finer
    return torch.tensor(vertices, dtype=torch.float64), torch.tensor(faces)


@pytest.fixture
def without_trimesh(monkeypatch):
    """The built-in readers, as on an install without trimesh."""
    monkeypatch.setattr(readers_module, "_import_trimesh", lambda: None)


# ------------------------------------------------------------------------------------ voxelization
def test_unit_cube_is_the_grid_shell():
    coords = voxelize_mesh(CUBE_VERTICES * 3 + 7, CUBE_FACES)
    assert coords.shape == (R ** 3 - (R - 2) ** 3, 3)
    on_shell = ((coords == 0) | (coords == R - 1)).any(1)
    assert on_shell.all()


def test_small_triangles_match_the_exact_test():
    generator = np.random.default_rng(0)
    triangles = [generator.uniform(-0.4, 0.4, 3) + generator.normal(scale=2 / R, size=(3, 3)) for _ in range(12)]
    triangles.append(generator.uniform(-0.3, 0.3, 3) + generator.normal(scale=4 / R, size=(3, 3)))  # tilted, larger
    corner = generator.uniform(-0.4, 0.4, 3)
    triangles += [np.stack([corner, corner + [1.3 / R, -2.1 / R, 0.7 / R], corner]),  # zero area: a segment
                  np.stack([corner] * 3)]  # and a point
    for triangle in triangles:
        ours = voxelize_mesh(torch.tensor(triangle), torch.tensor([[0, 1, 2]]), normalize=False)
        assert as_set(ours) == exact_voxels([triangle]), triangle


def test_tiny_grid_every_voxel_against_the_exact_test():
    generator = np.random.default_rng(1)
    resolution = 5
    triangles = generator.uniform(-0.5, 0.5, size=(6, 3, 3))
    ours = voxelize_mesh(torch.tensor(triangles.reshape(-1, 3)), torch.arange(18).view(6, 3), resolution,
                         normalize=False)
    expected = {index for index in itertools.product(range(resolution), repeat=3)
                if any(exact_overlap(t, index, resolution) for t in triangles)}
    assert as_set(ours) == expected


def test_sphere_is_a_closed_symmetric_shell_without_interior():
    vertices, faces = icosphere(4)
    coords = voxelize_mesh(vertices, faces)
    shell = torch.zeros(R, R, R, dtype=torch.bool)
    shell[tuple(coords.long().T)] = True
    for axis in range(3):
        assert torch.equal(shell, shell.flip(axis)), f"not symmetric under flipping axis {axis}"
    # no interior: every voxel lies within half a voxel diagonal of the polyhedron's surface band
    centers = (coords.double() + 0.5) / R - 0.5
    corners = normalize_vertices(vertices)[faces]
    normals = torch.linalg.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0])
    inner = ((normals * corners[:, 0]).sum(1).abs() / normals.norm(dim=1)).min()  # nearest face plane
    reach = 3 ** 0.5 / 2 / R
    assert (centers.norm(dim=1) <= 0.5 + reach).all() and (centers.norm(dim=1) >= inner - reach).all()
    # closed: a 6-connected flood from outside through free voxels never reaches the centre
    outside = torch.zeros(R + 2, R + 2, R + 2, dtype=torch.bool)
    outside[0] = True
    free = torch.nn.functional.pad(~shell, (1,) * 6, value=True)
    while True:
        grown = outside.clone()
        for axis in range(3):
            grown |= outside.roll(1, axis) | outside.roll(-1, axis)
        grown &= free
        if torch.equal(grown, outside):
            break
        outside = grown
    assert not outside[1 + R // 2, 1 + R // 2, 1 + R // 2]
    assert (~outside[1:-1, 1:-1, 1:-1] & ~shell).sum() > 20_000  # an enclosed interior remains


def test_normalization_centres_the_bounding_box_and_scales_the_largest_extent_to_one():
    generator = torch.Generator().manual_seed(0)
    vertices = torch.randn(50, 3, generator=generator, dtype=torch.float64) * torch.tensor([3.0, 1.0, 0.5]) + 10
    normalized = normalize_vertices(vertices)
    low, high = normalized.min(0).values, normalized.max(0).values
    assert torch.allclose((low + high) / 2, torch.zeros(3, dtype=torch.float64), atol=1e-12)
    assert (high - low).max().item() == pytest.approx(1 - 2e-6, abs=1e-12)  # clipped to +-(0.5 - 1e-6)
    low, high = vertices.min(0).values, vertices.max(0).values
    expected = (vertices - (low + high) / 2) / (high - low).max()
    assert torch.allclose(normalized[:, 1:], expected[:, 1:], atol=1e-15)  # the unclipped axes


def test_output_is_sorted_unique_int32_in_the_grid():
    vertices, faces = icosphere(2)
    vertices = vertices * torch.tensor([1.0, 0.6, 0.3])
    coords = voxelize_mesh(vertices, faces)
    assert coords.dtype == torch.int32 and coords.dim() == 2 and coords.shape[1] == 3
    assert coords.min() >= 0 and coords.max() < R
    keys = (coords[:, 0].long() * R + coords[:, 1]) * R + coords[:, 2]
    assert (keys[1:] > keys[:-1]).all()


def test_degenerate_triangles_mark_the_voxels_they_touch():
    # generic points: a segment through the exact corner or edge of a voxel is a rounding tie
    inner = torch.tensor([[0.1123, 0.0917, 0.1041], [0.3312, -0.2186, 0.0537]], dtype=torch.float64)
    vertices = torch.cat([CUBE_VERTICES - 0.5, inner])
    faces = torch.cat([CUBE_FACES, torch.tensor([[8, 9, 9], [8, 8, 8]])])  # a segment and a point inside
    coords = as_set(voxelize_mesh(vertices, faces))
    inside = exact_voxels([vertices[[8, 9, 9]].numpy()])
    assert inside and inside <= coords
    assert len(coords) == R ** 3 - (R - 2) ** 3 + len(inside - as_set(voxelize_mesh(CUBE_VERTICES, CUBE_FACES)))


# ------------------------------------------------------------------------------------ readers
def write_ply(path, vertices, polygons, encoding):
    """vertices [V, 3] with an extra uchar property; polygons: lists of indices; then an extra element."""
    header = ["ply", f"format {encoding} 1.0", "comment test", f"element vertex {len(vertices)}",
              "property float x", "property float y", "property float z", "property uchar red",
              f"element face {len(polygons)}", "property list uchar int vertex_indices", "property uchar flags",
              "element edge 1", "property int vertex1", "property int vertex2", "end_header"]
    body = b""
    if encoding == "ascii":
        lines = [f"{x!r} {y!r} {z!r} 7" for x, y, z in vertices]
        lines += [" ".join(map(str, [len(p), *p, 1])) for p in polygons] + ["0 1"]
        body = ("\n".join(lines) + "\n").encode()
    else:
        order = "<" if encoding == "binary_little_endian" else ">"
        body += b"".join(struct.pack(order + "fffB", *v, 7) for v in vertices)
        body += b"".join(struct.pack(order + f"B{len(p)}iB", len(p), *p, 1) for p in polygons)
        body += struct.pack(order + "ii", 0, 1)
    path.write_bytes(("\n".join(header) + "\n").encode() + body)


CUBE_QUADS = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]


@pytest.mark.parametrize("encoding", ["ascii", "binary_little_endian", "binary_big_endian"])
@pytest.mark.parametrize("mixed", [False, True])
def test_ply_round_trip(tmp_path, without_trimesh, encoding, mixed):
    polygons = CUBE_QUADS if mixed else CUBE_FACES.tolist()
    if mixed:  # a quad split in two triangles: rows of different sizes
        polygons = polygons[:-1] + [[1, 5, 7], [1, 7, 3]]
    path = tmp_path / "cube.ply"
    write_ply(path, (CUBE_VERTICES * 2 - 0.25).tolist(), polygons, encoding)
    vertices, faces = load_mesh(path)
    assert vertices.dtype == torch.float64 and faces.dtype == torch.int64
    assert torch.equal(vertices, CUBE_VERTICES * 2 - 0.25)
    assert faces.shape == (12, 3)
    assert torch.equal(voxelize_mesh(vertices, faces), voxelize_mesh(CUBE_VERTICES, CUBE_FACES))


def test_obj_round_trip(tmp_path, without_trimesh):
    lines = ["# cube", "o cube", *(f"v {x} {y} {z} 0.5 0.5 0.5" for x, y, z in CUBE_VERTICES.tolist()),
             "vt 0 0", "vn 0 0 1"]
    lines += [f"f {a + 1}/1/1 {b + 1}/1 {c + 1}//1 {d + 1}" for a, b, c, d in CUBE_QUADS[:-1]]
    lines.append("f " + " ".join(str(i - 8) for i in CUBE_QUADS[-1]))  # negative: relative to the end
    path = tmp_path / "cube.obj"
    path.write_text("\n".join(lines) + "\n")
    vertices, faces = load_mesh(path)
    assert torch.equal(vertices, CUBE_VERTICES) and faces.shape == (12, 3)
    assert faces[-2:].tolist() == [[1, 5, 7], [1, 7, 3]]  # fanned from the first corner
    assert torch.equal(voxelize_mesh(vertices, faces), voxelize_mesh(CUBE_VERTICES, CUBE_FACES))


def test_trimesh_reads_what_the_builtin_readers_read(tmp_path, monkeypatch):
    pytest.importorskip("trimesh")
    path = tmp_path / "cube.ply"
    write_ply(path, CUBE_VERTICES.tolist(), CUBE_QUADS, "binary_little_endian")
    with_trimesh = voxelize_mesh(*load_mesh(path))
    monkeypatch.setattr(readers_module, "_import_trimesh", lambda: None)
    assert torch.equal(with_trimesh, voxelize_mesh(*load_mesh(path)))


# ------------------------------------------------------------------------------------ bad input
def obj_file(tmp_path, text, name="mesh.obj"):
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, message", [
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\n", "empty mesh"),
    ("", "empty mesh"),
    ("v nan 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n", "not finite"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 9\n", r"face indices span \[0, 8\], allowed \[0, 2\]"),
    ("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", "face indices"),
    ("v 1 1 1\nv 1 1 1\nv 1 1 1\nf 1 2 3\n", "degenerate mesh"),
    ("v 0 0\nf 1 2 3\n", r"mesh.obj:1: malformed OBJ line"),
    ("v 0 0 0\nf 1 a 3\n", r"mesh.obj:2: malformed OBJ line"),
])
def test_bad_obj_files(tmp_path, without_trimesh, text, message):
    with pytest.raises(ValueError, match=message):
        load_mesh(obj_file(tmp_path, text))


def test_bad_paths(tmp_path, without_trimesh):
    with pytest.raises(ValueError, match=r"unsupported mesh format '.fbx'; allowed: .obj, .ply"):
        load_mesh(obj_file(tmp_path, "", "mesh.fbx"))
    with pytest.raises(ValueError, match="mesh file not found"):
        load_mesh(tmp_path / "missing.obj")
    with pytest.raises(ValueError, match=r"reading .glb needs trimesh \(pip install trimesh\)"):
        load_mesh(obj_file(tmp_path, "glTF", "mesh.glb"))
    with pytest.raises(ValueError, match="not a PLY file"):
        load_mesh(obj_file(tmp_path, "v 0 0 0\n", "mesh.ply"))


def test_ply_without_faces(tmp_path, without_trimesh):
    path = tmp_path / "points.ply"
    path.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
                    "property float z\nend_header\n0 0 0\n1 1 1\n")
    with pytest.raises(ValueError, match="empty mesh"):
        load_mesh(path)


def test_bad_tensors():
    with pytest.raises(ValueError, match="degenerate mesh"):
        voxelize_mesh(torch.ones(3, 3), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"vertices must be a float tensor \[V, 3\]"):
        voxelize_mesh(torch.ones(3, 2), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match=r"faces must be an int tensor \[F, 3\]"):
        voxelize_mesh(CUBE_VERTICES, CUBE_FACES.double())
    with pytest.raises(ValueError, match="not finite"):
        voxelize_mesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, float("inf"), 0]]), torch.tensor([[0, 1, 2]]))
    with pytest.raises(ValueError, match="face indices"):
        voxelize_mesh(CUBE_VERTICES, CUBE_FACES - 1)
    with pytest.raises(ValueError, match="empty mesh"):
        voxelize_mesh(CUBE_VERTICES, CUBE_FACES[:0])
    with pytest.raises(ValueError, match="resolution"):
        voxelize_mesh(CUBE_VERTICES, CUBE_FACES, resolution=0)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu():
    vertices, faces = icosphere(5)
    vertices = vertices * torch.tensor([1.0, 0.7, 0.4]) + torch.randn(vertices.shape, dtype=torch.float64) * 0.01
    cpu = voxelize_mesh(vertices, faces)
    cuda = voxelize_mesh(vertices.cuda(), faces.cuda())
    assert cuda.is_cuda and torch.equal(cuda.cpu(), cpu)
