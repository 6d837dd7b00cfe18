"""Figures of docs/editing.md from the coordinates scripts/gpu_edit_check.py saved (edit_coords.npz):
orthographic views (front, side, top; glTF axes: Y up, front +Z) of the voxels of the original
and of each edit, coloured by what the edit did to them. Plain PIL, no plotting library.

    python scripts/editing_figures.py EDIT_COORDS.npz docs/images
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

GREY, RED, BLUE, BOX = (150, 150, 150), (220, 50, 40), (60, 110, 230), (250, 200, 40)
PANEL, SCALE = 200, 3  # 64 voxels * 3 px + margin


def to_gltf(xyz: np.ndarray) -> np.ndarray:
    """TRELLIS voxel indices (x, y, z), Z up -> glTF-axis indices (x, z, -y) (Y up, front +Z)."""
    return np.stack([xyz[:, 0], xyz[:, 2], 63 - xyz[:, 1]], axis=1)


def panel(layers, axes, title: str, region_box) -> Image.Image:
    """One view: points of each (coords, colour) layer projected on ``axes`` (horizontal, up),
    drawn back to front along the third axis; the region's bounding box outlined."""
    img = Image.new("RGB", (PANEL, PANEL + 16), (255, 255, 255))
    draw = ImageDraw.Draw(img)
    h, v = axes
    depth_axis = 3 - h - v
    for coords, colour in layers:
        if len(coords) == 0:
            continue
        order = np.argsort(coords[:, depth_axis])
        for p in coords[order]:
            x, y = 4 + p[h] * SCALE, PANEL - 4 - (p[v] + 1) * SCALE
            draw.rectangle([x, y, x + SCALE - 1, y + SCALE - 1], fill=colour)
    lo, hi = region_box
    draw.rectangle([4 + lo[h] * SCALE, PANEL - 4 - (hi[v] + 1) * SCALE, 4 + (hi[h] + 1) * SCALE,
                    PANEL - 4 - lo[v] * SCALE], outline=BOX, width=2)
    draw.text((4, PANEL + 2), title, fill=(0, 0, 0))
    return img


def figure(layers, region_box, name: str) -> Image.Image:
    views = [((0, 1), f"{name}: front (x, y)"), ((2, 1), "side (z, y)"), ((0, 2), "top (x, z)")]
    panels = [panel(layers, axes, title, region_box) for axes, title in views]
    out = Image.new("RGB", (PANEL * 3, PANEL + 16), (255, 255, 255))
    for i, p in enumerate(panels):
        out.paste(p, (i * PANEL, 0))
    return out


def main(npz_path: str, out_dir: str) -> None:
    data = np.load(npz_path)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    region = data["region"]
    inside_idx = to_gltf(np.argwhere(region))
    region_box = (inside_idx.min(0), inside_idx.max(0))
    original = data["original"]
    orig_set = {tuple(c) for c in original.tolist()}
    figure([(to_gltf(original), GREY)], region_box, "original + region").save(out / "edit_original.png")
    for case in ("region_edit_repaint", "region_delete", "detail_variation_region"):
        coords = data[f"{case}_coords"]
        regenerated = data[f"{case}_regenerated"]
        new_set = {tuple(c) for c in coords.tolist()}
        removed = np.array([c for c in orig_set - new_set], dtype=np.int64).reshape(-1, 3)
        layers = [(to_gltf(coords[~regenerated]), GREY), (to_gltf(coords[regenerated]), RED),
                  (to_gltf(removed), BLUE)]
        figure(layers, region_box, case).save(out / f"{case}.png")
        print(out / f"{case}.png", len(coords), int(regenerated.sum()), len(removed))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
