"""Loss curves of training runs as one picture, and the time each run spent (docs/demo_model.md).

Reads the trainer's ``log.jsonl`` files (one JSON object per logged step: ``step``, ``loss``,
``seconds`` since the run started, ...) and draws one panel per file: the loss against the step on a
log scale. Prints a Markdown table of steps and seconds per run.

    python scripts/demo_loss_curves.py models/demo_state/logs/*.jsonl --out docs/images/demo_losses.png
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from PIL import Image, ImageDraw

PANEL = (360, 220)  # px per panel
MARGIN = 40          # px around each plot area, for the labels


def read_log(path: Path) -> tuple:
    """(the logged records of one run in step order, its training seconds in all). A resumed run
    logs again from its resume point with ``seconds`` restarting at 0: the last record of each step
    wins, and the time is the sum of each segment's last ``seconds``."""
    records, total, last = {}, 0.0, 0.0
    for line in path.read_text().splitlines():
        if line.strip():
            record = json.loads(line)
            records[record["step"]] = record
            if record["seconds"] < last:  # a new segment
                total += last
            last = record["seconds"]
    return [records[step] for step in sorted(records)], total + last


def draw_panel(draw: ImageDraw.ImageDraw, origin: tuple, title: str, steps: list, losses: list) -> None:
    """One panel at ``origin`` (x, y px): loss (log10 scale) against step, axis ranges written."""
    x0, y0 = origin[0] + MARGIN, origin[1] + 20
    width, height = PANEL[0] - MARGIN - 10, PANEL[1] - 20 - MARGIN
    draw.text((origin[0] + MARGIN, origin[1] + 4), title, fill="black")
    draw.rectangle((x0, y0, x0 + width, y0 + height), outline="gray")
    points = [(s, math.log10(v)) for s, v in zip(steps, losses) if v > 0 and math.isfinite(v)]
    if len(points) < 2:
        draw.text((x0 + 8, y0 + 8), "fewer than 2 logged steps", fill="red")
        return
    s_max = max(s for s, _ in points)
    lo, hi = min(v for _, v in points), max(v for _, v in points)
    hi = hi if hi > lo else lo + 1.0
    xy = [(x0 + width * s / s_max, y0 + height * (hi - v) / (hi - lo)) for s, v in points]
    draw.line(xy, fill=(30, 90, 200), width=1)
    draw.text((origin[0] + 2, y0 - 4), f"{10 ** hi:.3g}", fill="black")
    draw.text((origin[0] + 2, y0 + height - 8), f"{10 ** lo:.3g}", fill="black")
    draw.text((x0, y0 + height + 4), "0", fill="black")
    draw.text((x0 + width - 40, y0 + height + 4), f"{s_max} steps", fill="black")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="+", type=Path, help="log.jsonl files (the panel is named after the file)")
    parser.add_argument("--out", required=True, type=Path, help="PNG to write (refused if it exists)")
    args = parser.parse_args()
    if args.out.exists():
        raise SystemExit(f"--out: {args.out} exists; choose a new name")
    # runs/NAME/log.jsonl or logs/NAME.jsonl (the packed model folder's)
    runs = [(path.parent.name if path.name == "log.jsonl" else path.name.removesuffix(".jsonl"), *read_log(path))
            for path in args.logs]
    columns = 2
    rows = math.ceil(len(runs) / columns)
    image = Image.new("RGB", (PANEL[0] * columns, PANEL[1] * rows), "white")
    draw = ImageDraw.Draw(image)
    print("| run | steps | minutes | first loss | last loss |\n| --- | --- | --- | --- | --- |")
    for k, (name, records, seconds) in enumerate(runs):
        steps = [r["step"] for r in records]
        losses = [r["loss"] for r in records]
        draw_panel(draw, (PANEL[0] * (k % columns), PANEL[1] * (k // columns)), name, steps, losses)
        if records:
            print(f"| {name} | {steps[-1]} | {seconds / 60:.1f} | {losses[0]:.4g} | {losses[-1]:.4g} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    partial = args.out.with_name(args.out.name + ".partial")
    image.save(partial, format="PNG")
    partial.rename(args.out)


if __name__ == "__main__":
    main()
