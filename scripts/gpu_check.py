"""Conformance of every backend on a CUDA device, in one call (docs/gpu.md).

Runs every conformance case (the ones tests/models/test_conformance.py and
tests/sampling/test_flow_euler.py check on CPU) on ``--device`` with each combination of the
attention and sparse-convolution backends available there, in float32 and in a float16 and a
bfloat16 torso, and compares with the stored official outputs:

* float32: network outputs within 1e-4 x max|ref|, sampler outputs within 1e-3, integer outputs
  (coordinates, faces, depths) exact;
* float16 / bfloat16: float outputs within 1e-2 x max|ref|; integer outputs are reported as
  match / mismatch counts (half precision can flip the sign of a near-zero logit or SDF), and
  float outputs whose shape follows a mismatched integer output (mesh vertices) are skipped.

Then, for information, times the sparse convolution and attention backends at realistic sizes
with CUDA events (medians). Prints a table and 'N passed, M failed'; writes everything as JSON.

    python scripts/gpu_check.py [--device cuda] [--dtypes fp32,fp16,bf16] [--json PATH] [--no-bench]

The JSON goes to PATH, else $OUT/gpu_check.json, else ./gpu_check.json. On CPU
(``--device cpu``) it runs the CPU backends: a dry run of the same checks.
"""
from __future__ import annotations

import argparse
import importlib.metadata
import itertools
import json
import logging
import os
import platform
import subprocess
import sys
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests"), str(ROOT / "tests" / "models"), str(ROOT / "tests" / "sampling")]

from conftest import ckpt_path, load_case  # noqa: E402
from device_bench import median_ms, sphere_shell  # noqa: E402
from test_conformance import GS_FIELDS, NET_TOL  # noqa: E402
from test_flow_euler import SAMPLER_TOL  # noqa: E402
from trellis_impl.backends.attention import ATTENTION, SeqLens, varlen_attention  # noqa: E402
from trellis_impl.backends.registry import set_backend  # noqa: E402
from trellis_impl.backends.sparse_conv import SPARSE_CONV, build_neighbour_map, submanifold_conv3d  # noqa: E402
from trellis_impl.models import load_model  # noqa: E402
from trellis_impl.sampling import FlowEulerGuidanceIntervalSampler  # noqa: E402
from trellis_impl.sparse import SparseTensor, window_partition  # noqa: E402

HALF_TOL = 1e-2
DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
# The float32 references of the backends themselves, not accelerated paths: not in the matrix.
REFERENCE_BACKENDS = {"naive"}


@dataclass
class Output:
    """One compared output: ``integer`` outputs must be exact (float32) or are counted (half).
    ``follows`` names the integer output that indexes this one (mesh faces index the vertices):
    in half precision, where that one differs, this one is not compared."""
    name: str
    got: torch.Tensor
    ref: torch.Tensor
    integer: bool = False
    follows: Optional[str] = None


@dataclass
class Case:
    """A conformance case: ``run(device, dtype)`` -> outputs; ``families``: the backend families
    its models dispatch through (dense attention always runs SDPA, so it is not one)."""
    name: str
    run: Callable[[torch.device, torch.dtype], List[Output]]
    families: Tuple[str, ...]
    float32_tol: float = NET_TOL


# ----------------------------------------------------------------------------------- the cases
def _sparse_input(t, device) -> SparseTensor:
    return SparseTensor(t["feats"].to(device), t["coords"].to(device))


def _ss_enc(device, dtype):
    t, _ = load_case("ss_enc")
    z, mean, logvar = load_model(ckpt_path("ss_enc"), dtype=dtype, device=device)(
        t["x"].to(device), sample_posterior=False, return_raw=True)
    return [Output("z", z, t["z"]), Output("mean", mean, t["mean"]), Output("logvar", logvar, t["logvar"])]


def _ss_dec(device, dtype):
    t, _ = load_case("ss_dec")
    logits = load_model(ckpt_path("ss_dec"), dtype=dtype, device=device)(t["z"].to(device))
    coords = torch.argwhere(logits > 0)[:, [0, 2, 3, 4]].int()
    return [Output("logits", logits, t["logits"]), Output("coords", coords, t["coords"], integer=True)]


def _ss_flow(device, dtype):
    t, _ = load_case("ss_flow")
    out = load_model(ckpt_path("ss_flow"), dtype=dtype, device=device)(
        t["x"].to(device), t["t"].to(device), t["cond"].to(device))
    return [Output("out", out, t["out"])]


def _slat_flow(name):
    def run(device, dtype):
        t, _ = load_case(name)
        out = load_model(ckpt_path(name), dtype=dtype, device=device)(
            _sparse_input(t, device), t["t"].to(device), t["cond"].to(device))
        return [Output("coords", out.coords, t["coords"], integer=True), Output("out_feats", out.feats, t["out_feats"])]
    return run


def _slat_enc(name):
    def run(device, dtype):
        t, _ = load_case(name)
        z, mean, logvar = load_model(ckpt_path(name), dtype=dtype, device=device)(
            _sparse_input(t, device), sample_posterior=False, return_raw=True)
        return [Output("coords", z.coords, t["coords"], integer=True), Output("z", z.feats, t["z_feats"]),
                Output("mean", mean, t["mean"]), Output("logvar", logvar, t["logvar"])]
    return run


def _slat_decoder(name, item_outputs):
    """A decoder case: the raw network output, then ``item_outputs(prefix, representation, t)``
    for each batch item."""
    def run(device, dtype):
        t, _ = load_case(name)
        model = load_model(ckpt_path(name), dtype=dtype, device=device)
        raw = model.forward_features(_sparse_input(t, device))
        outputs = [Output("out_layer_feats", raw.feats, t["out_layer_feats"])]
        if "out_layer_coords" in t:  # the mesh decoder subdivides: its output voxels are new
            outputs.insert(0, Output("out_layer_coords", raw.coords, t["out_layer_coords"], integer=True))
        for i, rep in enumerate(model.to_representation(raw)):
            outputs += item_outputs(f"item{i}", rep, t)
        return outputs
    return run


def _gaussian_outputs(p, g, t):
    return [Output(f"{p}.{f}", getattr(g, f), t[f"{p}.{f}"]) for f in GS_FIELDS]


def _strivec_outputs(p, rf, t):
    return [Output(f"{p}.depth", rf.depth, t[f"{p}.depth"], integer=True)] + [
        Output(f"{p}.{f}", getattr(rf, f), t[f"{p}.{f}"]) for f in ("position", "trivec", "density", "features_dc")]


def _mesh_outputs(p, mesh, t):
    return [Output(f"{p}.faces", mesh.faces, t[f"{p}.faces"], integer=True),
            Output(f"{p}.vertices", mesh.vertices, t[f"{p}.vertices"], follows=f"{p}.faces"),
            Output(f"{p}.vertex_attrs", mesh.vertex_attrs, t[f"{p}.vertex_attrs"], follows=f"{p}.faces")]


def _sampler_ss(batch_cfg):
    def run(device, dtype):
        t, meta = load_case("sampler_ss")
        model = load_model(ckpt_path(meta["model"]), dtype=dtype, device=device)
        sampler = FlowEulerGuidanceIntervalSampler(**meta["sampler_args"], batch_cfg=batch_cfg)
        out = sampler.sample(model, t["noise"].to(device), cond=t["cond"].to(device),
                             neg_cond=t["neg_cond"].to(device), **meta["params"])
        outputs = [Output("samples", out.samples, t["samples"])]
        for k in range(meta["params"]["steps"]):
            outputs += [Output(f"step{k}.pred_x_prev", out.pred_x_t[k], t[f"step{k}.pred_x_prev"]),
                        Output(f"step{k}.pred_x_0", out.pred_x_0[k], t[f"step{k}.pred_x_0"])]
        return outputs
    return run


def _sampler_slat(batch_cfg):
    def run(device, dtype):
        t, meta = load_case("sampler_slat")
        model = load_model(ckpt_path(meta["model"]), dtype=dtype, device=device)
        sampler = FlowEulerGuidanceIntervalSampler(**meta["sampler_args"], batch_cfg=batch_cfg)
        noise = SparseTensor(t["noise_feats"].to(device), t["coords"].to(device))
        out = sampler.sample(model, noise, cond=t["cond"].to(device), neg_cond=t["neg_cond"].to(device),
                             **meta["params"])
        slat = out.samples * t["slat_norm_std"].to(device) + t["slat_norm_mean"].to(device)
        outputs = [Output("coords", out.samples.coords, t["coords"], integer=True),
                   Output("samples", out.samples.feats, t["samples_feats"]), Output("slat", slat.feats, t["slat_feats"])]
        for k in range(meta["params"]["steps"]):
            outputs += [Output(f"step{k}.pred_x_prev", out.pred_x_t[k].feats, t[f"step{k}.pred_x_prev_feats"]),
                        Output(f"step{k}.pred_x_0", out.pred_x_0[k].feats, t[f"step{k}.pred_x_0_feats"])]
        return outputs
    return run


ATTN, CONV = "attention", "sparse_conv"
CASES: List[Case] = [
    Case("ss_enc", _ss_enc, ()),
    Case("ss_dec", _ss_dec, ()),
    Case("ss_flow", _ss_flow, ()),
    *[Case(n, _slat_flow(n), (ATTN, CONV)) for n in ("slat_flow", "slat_flow_elastic")],
    *[Case(n, _slat_enc(n), (ATTN,)) for n in ("slat_enc", "slat_enc_elastic")],
    *[Case(n, _slat_decoder(n, _gaussian_outputs), (ATTN,)) for n in ("slat_dec_gs", "slat_dec_gs_elastic")],
    *[Case(n, _slat_decoder(n, _strivec_outputs), (ATTN,)) for n in ("slat_dec_rf", "slat_dec_rf_elastic")],
    *[Case(n, _slat_decoder(n, _mesh_outputs), (ATTN, CONV)) for n in ("slat_dec_mesh", "slat_dec_mesh_elastic")],
    Case("sampler_ss", _sampler_ss(False), (), SAMPLER_TOL),
    Case("sampler_ss_batch_cfg", _sampler_ss(True), (), SAMPLER_TOL),
    Case("sampler_slat", _sampler_slat(False), (ATTN, CONV), SAMPLER_TOL),
    Case("sampler_slat_batch_cfg", _sampler_slat(True), (ATTN, CONV), SAMPLER_TOL),
]
FAMILIES = {ATTN: ATTENTION, CONV: SPARSE_CONV}


# ------------------------------------------------------------------------------- comparisons
def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.detach().double().cpu(), ref.detach().double().cpu()
    if not torch.isfinite(got).all():
        return float("inf")
    return float((got - ref).abs().max() / ref.abs().max().clamp_min(1e-12)) if ref.numel() else 0.0


def _integer_mismatch(got: torch.Tensor, ref: torch.Tensor) -> Dict[str, int]:
    """Counts of differing entries (same shape) or of rows found in only one side (else)."""
    got, ref = got.detach().long().cpu(), ref.detach().long().cpu()
    if got.shape == ref.shape:
        return {"elements": ref.numel(), "mismatched": int((got != ref).sum())}
    rows_got = set(map(tuple, got.reshape(got.shape[0], -1).tolist()))
    rows_ref = set(map(tuple, ref.reshape(ref.shape[0], -1).tolist()))
    return {"ref_rows": ref.shape[0], "got_rows": got.shape[0], "rows_only_in_ref": len(rows_ref - rows_got),
            "rows_only_in_got": len(rows_got - rows_ref)}


def compare(outputs: Sequence[Output], tol: float, half: bool) -> dict:
    """Per-output results and the case status: 'pass', 'fail', or 'pass*' (half precision, all
    compared float outputs within tolerance, some integer outputs differ)."""
    fields, failed = {}, []
    for o in outputs:  # integer outputs come before the outputs that follow them
        if o.integer:
            exact = o.got.shape == o.ref.shape and torch.equal(o.got.detach().long().cpu(), o.ref.long())
            fields[o.name] = {"exact": exact} if exact else {"exact": False, **_integer_mismatch(o.got, o.ref)}
            if not exact and not half:
                failed.append(o.name)
        elif half and o.follows and not fields[o.follows]["exact"]:
            fields[o.name] = {"skipped": f"{o.follows} differs"}
        elif o.got.shape != o.ref.shape:
            fields[o.name] = {"shape": list(o.got.shape), "ref_shape": list(o.ref.shape)}
            failed.append(o.name)
        else:
            err = _rel_err(o.got, o.ref)
            fields[o.name] = {"rel_err": err}
            if not err <= tol:
                failed.append(o.name)
    integer_differs = any(f.get("exact") is False for f in fields.values())
    float_errs = [f["rel_err"] for f in fields.values() if "rel_err" in f]
    status = "fail" if failed else ("pass*" if integer_differs else "pass")
    return {"status": status, "failed": failed, "max_rel_err": max(float_errs, default=0.0), "tol": tol,
            "fields": fields}


# ------------------------------------------------------------------------------- the matrix
def backend_choices(family_name: str, device: torch.device, dtype: torch.dtype) -> List[str]:
    family = FAMILIES[family_name]
    return [n for n in family.names() if n not in REFERENCE_BACKENDS and family.backends[n].available(device, dtype)]


def run_matrix(device: torch.device, dtype_names: Sequence[str], case_names: Optional[Sequence[str]]) -> List[dict]:
    results = []
    for dtype_name in dtype_names:
        dtype = DTYPES[dtype_name]
        half = dtype != torch.float32
        for case in CASES:
            if case_names and case.name not in case_names:
                continue
            tol = HALF_TOL if half else case.float32_tol
            choices = [backend_choices(f, device, dtype) for f in case.families]
            for combo in itertools.product(*choices):
                backends = dict(zip(case.families, combo))
                for f, name in backends.items():
                    set_backend(f, name)
                row = {"case": case.name, "dtype": dtype_name, "attention": backends.get(ATTN, "-"),
                       "sparse_conv": backends.get(CONV, "-")}
                start = time.perf_counter()
                try:
                    with torch.no_grad():
                        row.update(compare(case.run(device, dtype), tol, half))
                except Exception as e:  # one broken backend must not hide the others' results
                    traceback.print_exc()
                    row.update(status="error", error=f"{type(e).__name__}: {e}"[:500], tol=tol)
                finally:
                    for f in backends:
                        set_backend(f, None)
                row["seconds"] = round(time.perf_counter() - start, 3)
                results.append(row)
                _print_row(row)
    return results


def _note(row: dict) -> str:
    if row["status"] == "error":
        return row["error"][:90]
    notes = [f"{row['failed'][0]}{' +%d' % (len(row['failed']) - 1) if len(row['failed']) > 1 else ''} over tol"] \
        if row["failed"] else []
    for name, f in row["fields"].items():
        if f.get("exact") is False:
            if "mismatched" in f:
                notes.append(f"{name}: {f['mismatched']}/{f['elements']} differ")
            else:
                notes.append(f"{name}: {f['got_rows']} vs {f['ref_rows']} rows, "
                             f"{f['rows_only_in_ref']}/{f['rows_only_in_got']} only in ref/got")
    skipped = [n for n, f in row["fields"].items() if "skipped" in f]
    if skipped:
        notes.append(f"{len(skipped)} outputs indexed by those not compared")
    return "; ".join(notes)


HEADER = f"{'case':24} {'attention':13} {'conv':7} {'dtype':5} {'max rel err':>11} {'tol':>7}  status  note"


def _print_row(row: dict) -> None:
    err = f"{row['max_rel_err']:.2e}" if "max_rel_err" in row else "-"
    print(f"{row['case']:24} {row['attention']:13} {row['sparse_conv']:7} {row['dtype']:5} {err:>11} "
          f"{row['tol']:>7.0e}  {row['status']:6}  {_note(row)}", flush=True)


def print_summary(results: List[dict]) -> None:
    """Per case and dtype: runs passed / run over the backend combinations, worst error; then
    every row that did not pass cleanly."""
    dtypes = list(dict.fromkeys(r["dtype"] for r in results))
    print(f"\nsummary: passed/runs, worst max rel err over the backend combinations\n{'case':24}"
          + "".join(f" {d:>18}" for d in dtypes))
    for case in dict.fromkeys(r["case"] for r in results):
        cells = []
        for d in dtypes:
            rows = [r for r in results if r["case"] == case and r["dtype"] == d]
            ok = sum(r["status"] in ("pass", "pass*") for r in rows)
            worst = max((r.get("max_rel_err", float("inf")) for r in rows), default=float("nan"))
            cells.append(f"{ok}/{len(rows)} {worst:.1e}" if rows else "-")
        print(f"{case:24}" + "".join(f" {c:>18}" for c in cells))
    odd = [r for r in results if r["status"] != "pass"]
    if odd:
        print(f"\nnot a clean pass ({len(odd)}):\n{HEADER}")
        for row in odd:
            _print_row(row)


# --------------------------------------------------------------------------------- timings
def bench_conv(device: torch.device) -> List[dict]:
    coords = sphere_shell(device=device)
    g = torch.Generator(device=device).manual_seed(0)
    channels = 128
    feats32 = torch.randn(coords.shape[0], channels, device=device, generator=g)
    weight32 = torch.randn(channels, 3, 3, 3, channels, device=device, generator=g) / (27 * channels) ** 0.5
    bias32 = torch.randn(channels, device=device, generator=g)
    reference = submanifold_conv3d(feats32, coords, build_neighbour_map(coords, 3), weight32, bias32, backend="torch")
    what = f"conv, 64^3 sphere shell of {coords.shape[0]} voxels, {channels}->{channels}, 3^3"
    rows = []
    for dtype_name in ("fp16", "bf16", "fp32"):
        dtype = DTYPES[dtype_name]
        feats, weight, bias = feats32.to(dtype), weight32.to(dtype), bias32.to(dtype)
        for name in backend_choices(CONV, device, dtype):
            neighbours = build_neighbour_map(coords, 3)
            cached = lambda: submanifold_conv3d(feats, coords, neighbours, weight, bias, backend=name)  # noqa: E731
            fresh = lambda: submanifold_conv3d(feats, coords, build_neighbour_map(coords, 3), weight, bias,  # noqa: E731
                                               backend=name)
            rows.append({"what": what, "backend": name, "dtype": dtype_name, "ms": median_ms(cached),
                         "ms_with_map_build": median_ms(fresh, 1, 10),
                         "rel_err_vs_torch_fp32": _rel_err(cached(), reference)})
            r = rows[-1]
            print(f"  conv  {name:13} {dtype_name}: {r['ms']:.3f} ms, {r['ms_with_map_build']:.3f} ms with the map "
                  f"build; rel err {r['rel_err_vs_torch_fp32']:.1e}", flush=True)
    return rows


def bench_attention(device: torch.device) -> List[dict]:
    coords = sphere_shell(device=device)
    order, _, windows = window_partition(coords, 8, 0)
    cases = [(f"swin windows of 8: {len(windows.lengths)} windows, {windows.total} tokens, 12 x 64", windows, 12),
             ("full varlen 20000 + 8000 tokens, 16 x 64", SeqLens([20000, 8000]), 16)]
    rows = []
    for what, lens, heads in cases:
        g = torch.Generator(device=device).manual_seed(0)
        q32, k32, v32 = (torch.randn(lens.total, heads, 64, device=device, generator=g) for _ in range(3))
        reference = varlen_attention(q32, k32, v32, lens, backend="sdpa")
        for dtype_name in ("fp16", "bf16"):
            dtype = DTYPES[dtype_name]
            q, k, v = q32.to(dtype), k32.to(dtype), v32.to(dtype)
            for name in backend_choices(ATTN, device, dtype):
                run = lambda: varlen_attention(q, k, v, lens, backend=name)  # noqa: E731
                rows.append({"what": what, "backend": name, "dtype": dtype_name, "ms": median_ms(run),
                             "rel_err_vs_sdpa_fp32": _rel_err(run(), reference)})
                print(f"  attn  {name:13} {dtype_name}: {rows[-1]['ms']:.3f} ms, rel err "
                      f"{rows[-1]['rel_err_vs_sdpa_fp32']:.1e}  ({what})", flush=True)
    return rows


# --------------------------------------------------------------------------------- the run
def _version(dist: str) -> Optional[str]:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def environment(device: torch.device, dtype_names: Sequence[str]) -> dict:
    env = {"date": time.strftime("%Y-%m-%d %H:%M:%S %Z"), "python": platform.python_version(),
           "torch": torch.__version__, "cuda": torch.version.cuda,
           "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
           "packages": {d: _version(d) for d in ("triton", "spconv-cu126", "cumm-cu126", "flash-attn-4", "flash-attn",
                                                "nvidia-cutlass-dsl", "quack-kernels")},
           "backends": {n: {f: backend_choices(f, device, DTYPES[n]) for f in FAMILIES} for n in dtype_names}}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
        try:
            env["driver"] = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                                           capture_output=True, text=True, timeout=30).stdout.strip()
        except (OSError, subprocess.SubprocessError) as e:
            env["driver"] = f"unknown ({e})"
    try:
        import inspect
        from torch.nn.attention.varlen import varlen_attn
        env["varlen_attn_signature"] = str(inspect.signature(varlen_attn))
    except ImportError:
        env["varlen_attn_signature"] = None
    return env


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--dtypes", default="fp32,fp16,bf16")
    parser.add_argument("--cases", default="", help="comma-separated case names (default: all)")
    parser.add_argument("--json", default=None, help="output path (default $OUT/gpu_check.json)")
    parser.add_argument("--no-bench", action="store_true", help="skip the timings")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    device = torch.device(args.device)
    dtype_names = [d for d in args.dtypes.split(",") if d]
    # float32 means IEEE float32: TF32 (cuDNN convolutions default to it) misses the 1e-4 tolerance.
    torch.backends.cuda.matmul.fp32_precision = "ieee"
    torch.backends.cudnn.conv.fp32_precision = "ieee"

    env = environment(device, dtype_names)
    print(json.dumps(env, indent=1), flush=True)
    print(HEADER, flush=True)
    results = run_matrix(device, dtype_names, [c for c in args.cases.split(",") if c])
    bench = {}
    if device.type == "cuda" and not args.no_bench:
        print("timings (medians, CUDA events):", flush=True)
        for name, fn in (("sparse_conv", bench_conv), ("attention", bench_attention)):
            try:
                bench[name] = fn(device)
            except Exception as e:
                traceback.print_exc()
                bench[name] = f"error: {type(e).__name__}: {e}"

    passed = sum(r["status"] in ("pass", "pass*") for r in results)
    failed = len(results) - passed
    summary = {"passed": passed, "failed": failed,
               "integer_mismatch_reported": sum(r["status"] == "pass*" for r in results)}
    out_path = Path(args.json or Path(os.environ.get("OUT", ".")) / "gpu_check.json")
    out_path.write_text(json.dumps({"env": env, "results": results, "bench": bench, "summary": summary}, indent=1))
    print_summary(results)
    print(f"results: {out_path}")
    print(f"{passed} passed, {failed} failed ({summary['integer_mismatch_reported']} of the passed are half-precision "
          f"runs with integer mismatches reported)")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
