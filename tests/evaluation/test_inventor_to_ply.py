"""scripts/inventor_to_ply.py: Open Inventor scenes (Debian's inventor-data) to PLY meshes with their
part colours, for the real-object figures of docs/demo_model.md. The conversion runs under Debian's
own Python with Coin's bindings (python3-pivy); the refusals need neither."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "inventor_to_ply.py"
DEBIAN_PYTHON = "/usr/bin/python3"
SCENE = """#Inventor V2.1 ascii
Separator {
  Material { diffuseColor 1 0 0 }
  Translation { translation 0 2 0 }
  Cube { width 2 height 4 depth 2 }
}
"""


def _has_pivy() -> bool:
    if not Path(DEBIAN_PYTHON).is_file():
        return False
    return subprocess.run([DEBIAN_PYTHON, "-c", "import pivy.coin"], capture_output=True).returncode == 0


def test_a_missing_file_is_refused_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, str(SCRIPT), str(tmp_path / "none.iv"), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode != 0 and done.stderr.strip() == f"inventor_to_ply: no such file: {tmp_path / 'none.iv'}"
    assert not (tmp_path / "out").exists()


@pytest.mark.skipif(not _has_pivy(), reason="needs Debian's python3 with python3-pivy (apt-get install python3-pivy)")
def test_a_coloured_cube_becomes_its_triangles_in_world_coordinates(tmp_path):
    import numpy as np
    import trimesh
    scene = tmp_path / "box.iv"
    scene.write_text(SCENE)
    done = subprocess.run([DEBIAN_PYTHON, str(SCRIPT), str(scene), "--out", str(tmp_path / "out")],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    mesh = trimesh.load(tmp_path / "out" / "box.ply", process=False)
    assert len(mesh.faces) == 12
    np.testing.assert_allclose(mesh.bounds, [[-1, 0, -1], [1, 4, 1]], atol=1e-6)  # the translation applied
    assert (np.asarray(mesh.visual.vertex_colors)[:, :3] == [255, 0, 0]).all()
    again = subprocess.run([DEBIAN_PYTHON, str(SCRIPT), str(scene), "--out", str(tmp_path / "out")],
                           capture_output=True, text=True)
    assert "exists, kept" in again.stdout  # never overwritten
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".partial")]
