"""Browser test of the offline preview viewer (web/js/trellis_viewer.mjs).

Writes a GLB, a 3DGS PLY, an .spz and a .splat of the same two-coloured sphere with the pack's own
writers, serves them and tests/web/viewer_page.html over a local HTTP server, and drives headless
Chromium (Debian ``chromium``, SwiftShader WebGL) through playwright-core
(tests/web/run_viewer_page.mjs). For mesh, splat (PLY, SPZ, .splat) and side-by-side modes it
asserts that the centre of the screenshot is not blank, that the sphere is upright in every
format (red half up, blue half down: checks the per-format frame rotation), and that the page
logged no errors. Then loads the ComfyUI extension web/js/trellis_preview.js against a stand-in
``app`` (tests/web/fake_comfy_app.mjs), feeds its ``onExecuted`` a ``trellis_preview`` ui output
(files fetched through ``/api/view?...``) and checks the widget draws.

Skipped only when no chromium binary or no node is found. Missing Node modules are installed with
``npm ci --prefix frontend``.
"""
import functools
import http.server
import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
FRONTEND = REPO / "frontend"
BUNDLE = REPO / "web" / "js" / "trellis_viewer.mjs"
DRIVER = Path(__file__).with_name("run_viewer_page.mjs")
BACKGROUND = (0x20, 0x20, 0x20)
RED = np.array([0.85, 0.12, 0.10])
BLUE = np.array([0.10, 0.20, 0.85])


def _find_chromium():
    env = os.environ.get("TRELLIS_CHROMIUM")
    if env and Path(env).exists():
        return env
    for name in ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _write_assets(out: Path):
    import torch
    import trimesh

    from trellis_impl.export.mesh_files import save_glb
    from trellis_impl.export.splat_files import save_splat, save_spz
    from trellis_impl.representations.gaussians import Gaussians

    # Mesh in the glTF frame (Y up): upper half red, lower half blue.
    sphere = trimesh.creation.icosphere(subdivisions=4, radius=0.35)
    v = np.asarray(sphere.vertices, dtype=np.float32)
    colors = np.where(v[:, 1:2] > 0, RED, BLUE).astype(np.float32)
    save_glb(out / "sphere.glb", v, np.asarray(sphere.faces), vertex_colors=colors)

    # The same sphere as Gaussians in TRELLIS's Z-up frame: glTF (x, y, z) = (x_t, z_t, -y_t).
    pts = trimesh.creation.icosphere(subdivisions=4, radius=0.35).vertices  # 2,562 (software WebGL is slow)
    xyz_t = np.stack([pts[:, 0], -pts[:, 2], pts[:, 1]], axis=1)
    col = np.where(xyz_t[:, 2:3] > 0, RED, BLUE)
    n = len(xyz_t)
    g = Gaussians(aabb=(-0.5, -0.5, -0.5, 1.0, 1.0, 1.0))
    g.from_xyz(torch.tensor(xyz_t, dtype=torch.float32))
    g.from_features(torch.tensor((col - 0.5) / 0.28209479177387814, dtype=torch.float32)[:, None, :])
    g.from_scaling(torch.full((n, 3), 0.024, dtype=torch.float32))
    g.from_rotation(torch.tensor([[1.0, 0.0, 0.0, 0.0]]).repeat(n, 1))
    g.from_opacity(torch.full((n, 1), 0.95, dtype=torch.float32))
    g.save_ply(out / "sphere.ply")
    save_spz(g, out / "sphere.spz")
    save_splat(g, out / "sphere.splat")


class _Quiet(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm"}

    def log_message(self, *args):
        pass


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """Serve the repository root, with the generated assets under /_assets/."""
    assets = tmp_path_factory.mktemp("viewer_assets")
    _write_assets(assets)

    class Handler(_Quiet):
        def translate_path(self, path):
            route = path.split("?")[0]
            if route.startswith("/_assets/"):
                return str(assets / Path(route).name)
            if route == "/api/view":  # ComfyUI's /view: ?filename=&subfolder=&type=
                from urllib.parse import parse_qs, urlsplit
                q = parse_qs(urlsplit(path).query)
                return str(assets / Path(q["filename"][0]).name)
            if route == "/scripts/app.js":
                return str(Path(__file__).with_name("fake_comfy_app.mjs"))
            if route.startswith("/extensions/trellis/"):
                return str(REPO / "web" / route[len("/extensions/trellis/"):])
            return super().translate_path(path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(REPO)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


def _ensure_node_modules(node):
    if (FRONTEND / "node_modules" / "playwright-core" / "package.json").exists():
        return
    npm = shutil.which("npm")
    if not npm:
        pytest.fail("frontend/node_modules is missing and npm was not found; run `npm ci --prefix frontend`")
    r = subprocess.run([npm, "ci", "--prefix", str(FRONTEND), "--no-audit", "--no-fund"],
                       capture_output=True, text=True, timeout=300)
    if r.returncode != 0:
        pytest.fail(f"`npm ci --prefix frontend` failed ({r.returncode}):\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")


def _analyse(path: Path):
    from PIL import Image

    img = np.asarray(Image.open(path).convert("RGB")).astype(np.int16)
    h, w, _ = img.shape
    fg = np.abs(img - np.array(BACKGROUND)).max(axis=2) > 24
    centre = fg[h // 4: 3 * h // 4, w // 4: 3 * w // 4]
    red = (img[..., 0] > img[..., 2] + 40) & fg
    blue = (img[..., 2] > img[..., 0] + 40) & fg
    rows = np.arange(h)[:, None]
    ys = np.nonzero(fg)[0]
    mid = (ys.min() + ys.max()) / 2 if len(ys) else h / 2
    upper, lower = rows < mid, rows >= mid
    return {
        "centre_fraction": float(centre.mean()),
        "fraction": float(fg.mean()),
        "left_fraction": float(fg[:, : w // 2].mean()),
        "right_fraction": float(fg[:, w // 2:].mean()),
        "red_up": int((red & upper).sum()), "red_down": int((red & lower).sum()),
        "blue_up": int((blue & upper).sum()), "blue_down": int((blue & lower).sum()),
    }


def test_viewer_renders_mesh_and_splats(server, tmp_path):
    chromium = _find_chromium()
    if not chromium:
        pytest.skip("no chromium binary found (apt-get install -y chromium, or set TRELLIS_CHROMIUM)")
    node = shutil.which("node")
    if not node:
        pytest.skip("node not found (needed to drive chromium through playwright-core)")
    assert BUNDLE.exists(), f"{BUNDLE} missing: run `npm ci --prefix frontend && npm run --prefix frontend build`"
    _ensure_node_modules(node)

    a = f"{server}/_assets"
    scenarios = [
        {"name": "mesh", "load": {"mesh": f"{a}/sphere.glb", "splat": None}, "mode": "mesh"},
        {"name": "splat_ply", "load": {"mesh": None, "splat": f"{a}/sphere.ply", "splatFormat": "ply"},
         "mode": "splat", "settleMs": 1200},
        {"name": "splat_spz", "load": {"mesh": None, "splat": f"{a}/sphere.spz", "splatFormat": "spz"},
         "mode": "splat", "settleMs": 1200},
        {"name": "splat_splat", "load": {"mesh": None, "splat": f"{a}/sphere.splat", "splatFormat": "splat"},
         "mode": "splat", "settleMs": 1200},
        {"name": "side_by_side", "load": {"mesh": f"{a}/sphere.glb", "splat": f"{a}/sphere.ply",
                                          "meshFormat": "glb", "splatFormat": "ply"},
         "mode": "side_by_side", "settleMs": 1200,
         "editBoxes": [{"min": [-0.1, 0.1, -0.1], "max": [0.1, 0.4, 0.1]}]},
    ]
    config = {"chromium": chromium, "frontendDir": str(FRONTEND), "baseUrl": server, "outDir": str(tmp_path),
              "background": "#%02x%02x%02x" % BACKGROUND, "scenarios": scenarios,
              "extension": {"output": {"trellis_preview": [{
                  "mesh": {"filename": "sphere.glb", "subfolder": "trellis", "type": "output"},
                  "splat": {"filename": "sphere.spz", "subfolder": "trellis", "type": "output"},
                  "splat_format": "spz", "edit_boxes": []}]}}}
    cfg = tmp_path / "config.json"
    cfg.write_text(json.dumps(config))
    r = subprocess.run([node, str(DRIVER), str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, f"driver failed:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    report = json.loads(r.stdout.strip().splitlines()[-1])
    assert report["ok"], report["pageErrors"]
    assert not report["pageErrors"], report["pageErrors"]
    assert not report["consoleErrors"], report["consoleErrors"]

    keep = os.environ.get("TRELLIS_VIEWER_SHOTS")
    stats = {}
    for res in report["results"]:
        shot = Path(res["screenshot"])
        if keep:
            Path(keep).mkdir(parents=True, exist_ok=True)
            shutil.copy(shot, Path(keep) / shot.name)
        s = stats[res["name"]] = {**_analyse(shot), "mode": res["effectiveMode"], "ms": res["ms"]}
        assert s["centre_fraction"] > 0.2, (res["name"], s)
        # upright: red half above blue half, whatever the file format
        assert s["red_up"] > 3 * s["red_down"] and s["blue_down"] > 3 * s["blue_up"], (res["name"], s)
    assert stats["side_by_side"]["mode"] == "side_by_side"
    assert stats["extension"]["mode"] == "mesh", stats["extension"]
    extension = next(r for r in report["results"] if r["name"] == "extension")
    assert extension["foreignWidgets"] == 0  # a core Trellis2* node is not this pack's
    # a saved size smaller than the widgets is grown on load (the fake node's computeSize is 300 x 460)
    assert extension["configuredSize"] == [400, 460], extension["configuredSize"]
    assert stats["side_by_side"]["left_fraction"] > 0.05 and stats["side_by_side"]["right_fraction"] > 0.05
    print(json.dumps(stats, indent=1))
