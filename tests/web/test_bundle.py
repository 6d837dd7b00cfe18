"""The committed viewer bundle (web/js/trellis_viewer.mjs) is exactly what frontend/build.mjs
makes from frontend/src with the locked npm packages."""
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"


@pytest.mark.skipif(shutil.which("node") is None or not (FRONTEND / "node_modules" / "esbuild").is_dir(),
                    reason="needs node and `npm ci --prefix frontend` (the README's test command runs it)")
def test_committed_bundle_is_built_from_the_sources(tmp_path):
    out = tmp_path / "trellis_viewer.mjs"
    subprocess.run(["node", str(FRONTEND / "build.mjs"), "--outfile", str(out)], check=True, capture_output=True,
                   cwd=FRONTEND)
    committed = (REPO / "web" / "js" / "trellis_viewer.mjs").read_bytes()
    assert out.read_bytes() == committed, "web/js/trellis_viewer.mjs is stale: run `npm run build --prefix frontend`"
