"""Open Inventor models (Debian's `inventor-data`: about 80 classic SGI models with part colours,
LGPL-2+) -> PLY meshes with vertex colours, for scoring a model on real objects it never trained on
(``scripts/demo_quality.py --meshes ... --up y``; docs/demo_model.md).

Runs under Debian's own Python with its Coin bindings, which read Inventor's binary and ASCII
files (``apt-get install inventor-data python3-pivy``):

    /usr/bin/python3 scripts/inventor_to_ply.py /usr/share/inventor/data/models/chair.iv ... --out DIR

Coin tessellates every shape (face sets, strips, spheres, cones, text...) into triangles in world
coordinates (the scene's transforms applied, Inventor's Y up kept); each triangle corner gets its
material's diffuse colour (the emissive one where the diffuse is black), textures are not read. Each
file becomes ``DIR/STEM.ply`` (binary, three vertices per triangle, RGB uchar per vertex), written
atomically (``trellis_impl.files.write_new_file``); an existing file is kept.
"""
from __future__ import annotations

import argparse
import struct
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from trellis_impl.files import write_new_file  # noqa: E402  (plain Python: runs under Debian's own)


def triangles(path: Path):
    """[(x, y, z, r, g, b) * 3] per triangle of the scene in ``path``, colours in 0..1."""
    from pivy import coin
    coin.SoDB.init()
    source = coin.SoInput()
    if not source.openFile(str(path)):
        raise ValueError(f"{path}: Coin cannot open it")
    root = coin.SoDB.readAll(source)
    if root is None:
        raise ValueError(f"{path}: not an Inventor scene Coin can read")
    found = []

    def corner(action, vertex):
        point = action.getModelMatrix().multVecMatrix(vertex.getPoint()).getValue()
        _, diffuse, _, emission, _, _ = action.getMaterial(vertex.getMaterialIndex())
        colour = diffuse.getValue()
        if sum(colour) < 0.02:  # lit only by its emission (Inventor's "glowing" parts)
            colour = emission.getValue()
        return (*point, *colour)

    def on_triangle(_, action, v1, v2, v3):
        found.append([corner(action, v) for v in (v1, v2, v3)])

    action = coin.SoCallbackAction()
    action.addTriangleCallback(coin.SoShape.getClassTypeId(), on_triangle, None)
    action.apply(root)
    if not found:
        raise ValueError(f"{path}: no triangles in it")
    return found


def ply_bytes(found) -> bytes:
    """Binary little-endian PLY of the triangles: three vertices each, RGB uchar per vertex."""
    header = (f"ply\nformat binary_little_endian 1.0\nelement vertex {3 * len(found)}\n"
              "property float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\n"
              f"element face {len(found)}\nproperty list uchar int vertex_indices\nend_header\n")
    vertices = b"".join(struct.pack("<3f3B", x, y, z, *(max(0, min(255, round(c * 255))) for c in (r, g, b)))
                        for triangle in found for x, y, z, r, g, b in triangle)
    faces = b"".join(struct.pack("<B3i", 3, 3 * i, 3 * i + 1, 3 * i + 2) for i in range(len(found)))
    return header.encode("ascii") + vertices + faces


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+", type=Path, help="Inventor files (.iv)")
    parser.add_argument("--out", required=True, type=Path, help="folder for the PLY files")
    args = parser.parse_args()
    missing = [str(f) for f in args.files if not f.is_file()]
    if missing:
        sys.exit(f"inventor_to_ply: no such file: {', '.join(missing)}")
    try:
        import pivy.coin  # noqa: F401
    except ImportError:
        sys.exit("inventor_to_ply: needs Coin's Python bindings: run it with Debian's /usr/bin/python3 after "
                 "apt-get install python3-pivy")
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for path in args.files:
        out = args.out / f"{path.stem}.ply"
        if out.exists():
            print(f"{out}: exists, kept")
            continue
        try:
            found = triangles(path)
        except ValueError as error:
            print(f"skipped: {error}")
            failed += 1
            continue
        try:
            write_new_file(out, ply_bytes(found))  # atomic: no partial file, an existing one kept
        except FileExistsError:
            print(f"{out}: exists, kept")
            continue
        print(f"{out}: {len(found)} triangles")
    return 1 if failed == len(args.files) else 0


if __name__ == "__main__":
    sys.exit(main())
