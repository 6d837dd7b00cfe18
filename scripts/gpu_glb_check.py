"""GLB export and mesh rasterisers on a CUDA device (docs/gpu.md).

1. nvdiffrast against the PyTorch mesh rasteriser on the bench asset (decoded-size mesh and its
   simplified version): agreement of triangle ids, depth/barycentric differences, median times.
2. ``to_glb`` of the bench asset (``device_bench.bench_asset``: ~20k voxels at 64^3, ~0.9M faces
   at 256^3) with simplify 0.95 and texture 1024, bake 'fast' and 'opt' (2500 steps): seconds per
   phase (one warm-up export first, so JIT builds are not counted), peak GPU memory, counts, and
   a reload of the GLB with trimesh.

    python scripts/gpu_glb_check.py [--res 256] [--device cuda] [--out DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from device_bench import bench_asset, median_ms  # noqa: E402
from trellis_impl.export.glb_export import to_glb  # noqa: E402
from trellis_impl.export.mesh_cleanup import simplify  # noqa: E402
from trellis_impl.render import orbit_cameras, rasterize  # noqa: E402


def compare_rasterisers(vertices, faces, resolution, results, label):
    cams = orbit_cameras(4, pitch=0.4, radius=2.0, fov_degrees=40.0, width=resolution, height=resolution)
    worst_agree, worst_depth, worst_bary = 1.0, 0.0, 0.0
    for cam in cams:
        ref = rasterize(vertices, faces, cam, backend="torch")
        fast = rasterize(vertices, faces, cam, backend="nvdiffrast")
        cov_ref, cov_fast = ref["triangle_id"] >= 0, fast["triangle_id"] >= 0
        covered = cov_ref | cov_fast
        same = (ref["triangle_id"] == fast["triangle_id"]) & cov_ref
        agree = float(same.sum()) / max(int(covered.sum()), 1)
        worst_agree = min(worst_agree, agree)
        if bool(same.any()):
            worst_depth = max(worst_depth, float((ref["depth"][same] - fast["depth"][same]).abs().max()))
            worst_bary = max(worst_bary, float((ref["barycentrics"][same] - fast["barycentrics"][same]).abs().max()))
    cam = cams[0]
    t_torch = median_ms(lambda: rasterize(vertices, faces, cam, backend="torch"), warmup=1, reps=5)
    t_nv = median_ms(lambda: rasterize(vertices, faces, cam, backend="nvdiffrast"), warmup=2, reps=20)
    row = {"faces": int(faces.shape[0]), "resolution": resolution, "same_triangle_fraction": worst_agree,
           "max_depth_diff": worst_depth, "max_bary_diff": worst_bary, "torch_ms": t_torch, "nvdiffrast_ms": t_nv}
    results[f"raster_{label}_{resolution}"] = row
    print(f"raster {label} {faces.shape[0]} faces @ {resolution}: same triangle {100 * worst_agree:.3f}% of covered "
          f"pixels, depth diff <= {worst_depth:.2e}, bary diff <= {worst_bary:.2e}; torch {t_torch:.2f} ms, "
          f"nvdiffrast {t_nv:.3f} ms")
    return worst_agree


def export(mesh, gaussians, out_dir, name, results, **options):
    path = os.path.join(out_dir, f"{name}.glb")
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    start = time.perf_counter()
    result = to_glb(path, mesh, gaussians, **options)
    torch.cuda.synchronize()
    wall = time.perf_counter() - start
    peak = (torch.cuda.max_memory_allocated() - base) / 2 ** 30
    import trimesh
    scene = trimesh.load(path)
    geom = list(scene.geometry.values())[0]
    tex = geom.visual.material.baseColorTexture
    row = {"wall_s": wall, "phases_s": result.timings, "peak_gpu_gib_above_inputs": peak,
           "faces_in": result.report["input"]["faces"], "faces_out": int(result.faces.shape[0]),
           "visibility": result.report.get("visibility"), "texture": list(tex.size) if tex is not None else None,
           "reload_faces": int(len(geom.faces)), "bytes": os.path.getsize(path)}
    row["cleanup_s"] = result.report["cleanup"]["seconds"]
    results[name] = row
    vis = result.report.get("visibility") or {}
    print(f"  cleanup {', '.join(f'{k} {v:.2f}' for k, v in row['cleanup_s'].items())}; visibility "
          f"{', '.join(f'{k} {v:.2f}' for k, v in vis.items() if k.endswith('seconds'))}; "
          f"{vis.get('interior_faces_removed')} interior faces removed, {vis.get('holes_filled')} holes filled")
    phases = ", ".join(f"{k} {v:.2f}" for k, v in result.timings.items())
    print(f"{name}: {wall:.2f} s wall ({phases}); peak GPU +{peak:.2f} GiB; faces {row['faces_in']} -> "
          f"{row['faces_out']}; texture {row['texture']}; reload {row['reload_faces']} faces; {row['bytes']} bytes")
    return wall


def profile_opt_steps(mesh, gaussians, steps: int = 200):
    """Where the time of the optimising bake's steps goes (torch.profiler, top ops)."""
    from trellis_impl.export.glb_export import prepare_glb
    from trellis_impl.export.texture_bake import bake_cameras, bake_texture_optimised
    from trellis_impl.render import render_gaussians
    prepared = prepare_glb(mesh, gaussians, bake="none", simplify=0.95)
    from trellis_impl.export.uv_atlas import unwrap
    from trellis_impl.export.mesh_files import GLTF_TO_TRELLIS
    import numpy as np
    v = prepared.vertices.astype(np.float64) @ GLTF_TO_TRELLIS
    vmap, f, uv = unwrap(v, prepared.faces, texture_size=1024)
    v, f, uv = (torch.as_tensor(x, device="cuda") for x in (v[vmap], f, uv))
    views = []
    for cam in bake_cameras(16, 512):
        out = render_gaussians(gaussians, cam)
        views.append((cam, out["color"], out["alpha"][0]))
    bake_texture_optimised(v, f, uv, views, 1024, steps=20)
    torch.cuda.synchronize()
    start = time.perf_counter()
    bake_texture_optimised(v, f, uv, views, 1024, steps=steps)
    torch.cuda.synchronize()
    total = time.perf_counter() - start
    start = time.perf_counter()
    bake_texture_optimised(v, f, uv, views, 1024, steps=1)
    torch.cuda.synchronize()
    setup = time.perf_counter() - start
    print(f"opt bake: setup {setup:.2f} s, {1000 * (total - setup) / (steps - 1):.2f} ms per step")
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU,
                                            torch.profiler.ProfilerActivity.CUDA]) as prof:
        bake_texture_optimised(v, f, uv, views, 1024, steps=50)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=12))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--res", type=int, default=256)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--out", default=os.environ.get("OUT", "."))
    args = parser.parse_args()
    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu"}
    t = time.perf_counter()
    mesh, gaussians, voxels = bench_asset(args.res, args.device)
    print(f"bench asset: {voxels} voxels at 64^3, {mesh.faces.shape[0]} faces, {mesh.vertices.shape[0]} vertices "
          f"({time.perf_counter() - t:.1f} s)")
    results["asset"] = {"voxels64": voxels, "faces": int(mesh.faces.shape[0]), "gaussians": int(mesh.vertices.shape[0])}

    ok = True
    v_small, f_small, _ = simplify(mesh.vertices.cpu().numpy(), mesh.faces.cpu().numpy(), target_ratio=0.95)
    v_small, f_small = torch.as_tensor(v_small, device=args.device), torch.as_tensor(f_small, device=args.device)
    for label, (v, f) in {"decoded": (mesh.vertices, mesh.faces), "simplified": (v_small, f_small)}.items():
        for resolution in (512, 1024):
            ok &= compare_rasterisers(v, f, resolution, results, label) >= 0.99

    with tempfile.TemporaryDirectory() as tmp:
        export(mesh, gaussians, tmp, "warmup", results, texture_size=1024, simplify=0.95, bake="fast")
        fast = export(mesh, gaussians, tmp, "glb_fast", results, texture_size=1024, simplify=0.95, bake="fast")
        opt = export(mesh, gaussians, tmp, "glb_opt", results, texture_size=1024, simplify=0.95, bake="opt",
                     bake_steps=2500)
        export(mesh, gaussians, tmp, "glb_vertex_colors", results, simplify=0.95, bake="vertex_colors")
    profile_opt_steps(mesh, gaussians)
    print(f"fast {fast:.2f} s ({'pass' if fast < 5 else 'FAIL'} at 5 s); opt {opt:.2f} s "
          f"({'pass' if opt < 20 else 'FAIL'} at 20 s)")
    ok &= fast < 5 and opt < 20
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "gpu_glb_check.json").write_text(json.dumps(results, indent=1, default=float))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
