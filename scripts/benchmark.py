"""Image -> Gaussians + mesh, this project against the official TRELLIS code, on one CUDA device.

Both codes load the same saved weights (the released TRELLIS-image-large architectures with
random float16-torso weights, written once into ``--weights``) key for key, get the same
condition tokens (1 x 1374 x 1024, what DINOv2 gives a 518 px image; the official code fetches
DINOv2 from torch.hub, which an offline machine cannot) and the same noise (``torch.manual_seed``
then the official draw order), and run the released schedule from pipeline.json:

* stage 1: the structure flow (25 steps) and the structure decoder;
* stage 2: the latent flow (25 steps) on a fixed 19,688-voxel sphere shell (random weights decode
  no meaningful structure; this is the size of a typical asset);
* decoders: Gaussians and mesh (FlexiCubes 256^3).

Each code runs in its own process (its own CUDA context and peak memory): loading, one cold job
(the first asset after loading), then ``--reps`` warm jobs (medians), then the cost of one
guided step of stage 2 for 5k-40k voxels. The official side needs spconv; its attention is
routed as on a machine without the flash-attn package: packed sequences to torch's built-in
FlashAttention-2 varlen kernel (a ``flash_attn`` stand-in module), dense attention to SDPA.
The two stage-2 latents are compared (same weights, same noise: they differ by float16 rounding).
Optional rows: this project with the step cache (``--step-cache N``), on the MDT-dist layout
(``--distilled-steps K``: the same architectures, the authors' K-step CFG sampler), and with the
structure flow and the latent flow's transformer blocks under ``torch.compile`` (``--compile MODE``;
the first job includes compiling).

    python scripts/benchmark.py [--official PATH/TO/TRELLIS] [--weights DIR] [--reps 4]
                                [--step-cache 3] [--distilled-steps 2] [--compile default] [--json OUT.json]

PATH/TO/TRELLIS: a checkout of microsoft/TRELLIS with its FlexiCubes submodule.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.machinery
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
import types
from pathlib import Path
from typing import Callable, Dict, List, Optional

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from device_bench import RELEASED, random_released_model, sphere_shell  # noqa: E402

SEED = 42
COND_TOKENS = (1, 1374, 1024)
JOB_SHELL = (28.7, 30.5)  # inner/outer radius at 64^3: 19,688 voxels
SCALING_VOXELS = (5000, 10000, 20000, 40000)
DECODED = ("gaussian", "mesh")


# ---------------------------------------------------------------- shared inputs

def shell_of(voxels: int, width: float = 2.0, max_outer: float = 30.5) -> torch.Tensor:
    """A shell with about ``voxels`` voxels inside the 64^3 grid: ``width`` voxels thick (area
    4 pi r^2 x width) while that fits within ``max_outer``, else thicker (inner radius bisected)."""
    outer = math.sqrt(voxels / (4 * math.pi * width)) + width / 2
    if outer <= max_outer:
        return sphere_shell(inner=outer - width, outer=outer, device="cpu")
    low, high = 0.0, max_outer
    for _ in range(30):
        inner = (low + high) / 2
        count = sphere_shell(inner=inner, outer=max_outer, device="cpu").shape[0]
        low, high = (inner, high) if count > voxels else (low, inner)
    return sphere_shell(inner=(low + high) / 2, outer=max_outer, device="cpu")


def write_inputs(weights: Path) -> None:
    """Released architectures with random weights (float16 torso, as released) in the released
    layout, and the shared condition and structures, written once."""
    import shutil

    from safetensors.torch import save_file

    if (weights / "inputs.pt").is_file():
        return
    (weights / "ckpts").mkdir(parents=True, exist_ok=True)
    shutil.copy(RELEASED / "pipeline.json", weights / "pipeline.json")
    generator = torch.Generator(device="cuda").manual_seed(0)
    for rel in json.loads((RELEASED / "pipeline.json").read_text())["args"]["models"].values():
        model = random_released_model(rel, generator)
        shutil.copy(RELEASED / f"{rel}.json", weights / f"{rel}.json")
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(weights / f"{rel}.safetensors"))
        del model
    tokens = torch.randn(COND_TOKENS, generator=torch.Generator().manual_seed(1))
    torch.save({"cond": tokens, "neg_cond": torch.zeros_like(tokens),
                "job_shell": sphere_shell(inner=JOB_SHELL[0], outer=JOB_SHELL[1], device="cpu"),
                "scaling": {n: shell_of(n) for n in SCALING_VOXELS}}, weights / "inputs.pt.part")
    os.replace(weights / "inputs.pt.part", weights / "inputs.pt")


def distilled_path(args) -> Path:
    return Path(args.weights).with_name(f"TRELLIS-mdt-dist-{args.distilled_steps}step")


def write_distilled(args) -> None:
    """The MDT-dist layout (the released flows' architectures; here the same random weights) with
    the authors' sampler at ``--distilled-steps`` per stage."""
    from trellis_impl.pipelines.distilled import write_distilled_folder

    if not distilled_path(args).exists():
        ckpts = Path(args.weights) / "ckpts"
        write_distilled_folder(args.weights, [ckpts / "ss_flow_img_dit_L_16l8_fp16.safetensors",
                                              ckpts / "slat_flow_img_dit_L_64l8p2_fp16.safetensors"],
                               distilled_path(args), steps=args.distilled_steps)


# ---------------------------------------------------------------- timing

def synced(fn: Callable[[], object]):
    """(result, seconds) of ``fn`` between two device synchronisations."""
    torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    torch.cuda.synchronize()
    return out, time.perf_counter() - start


def run_jobs(job: Callable[[Dict[str, float]], object], reps: int) -> dict:
    """One cold job, then ``reps`` warm ones; stage medians and the peak memory of a warm job."""
    cold: Dict[str, float] = {}
    job(cold)
    warm: List[Dict[str, float]] = []
    torch.cuda.reset_peak_memory_stats()
    for _ in range(reps):
        times: Dict[str, float] = {}
        result = job(times)
        warm.append(times)
    stages = {k: statistics.median(t[k] for t in warm) for k in warm[0]}
    return {"cold": cold, "warm": stages, "warm_all": warm, "result": result,
            "peak_allocated_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "peak_reserved_gib": torch.cuda.max_memory_reserved() / 2 ** 30}


def working_bytes(fn: Callable[[], object]) -> int:
    """Bytes ``fn`` allocates at its peak beyond what was allocated before it (the resident weights)."""
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    fn()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - base


def context_gib() -> float:
    """Device memory this process holds outside the caching allocator (the CUDA context and
    kernels), assuming no other process on the device."""
    free, total = torch.cuda.mem_get_info()
    return (total - free - torch.cuda.memory_reserved()) / 2 ** 30


def step_costs(step: Callable[[torch.Tensor], object], shells: Dict[int, torch.Tensor], reps: int = 5) -> dict:
    """Median seconds of one guided stage-2 step (cond + uncond forwards) per voxel count."""
    out = {}
    for n, coords in shells.items():
        coords = coords.cuda()
        for _ in range(2):
            step(coords)
        out[str(coords.shape[0])] = statistics.median(synced(lambda: step(coords))[1] for _ in range(reps))
    return out


# ---------------------------------------------------------------- this project

def project_side(args) -> dict:
    from trellis_impl.pipelines import ModelFolder
    from trellis_impl.pipelines.generation import Noise, Structure, TrellisPipeline
    from trellis_impl.sampling.step_cache import StepCache
    from trellis_impl.sparse import SparseTensor

    torch.zeros(1, device="cuda")
    context = context_gib()
    inputs = torch.load(Path(args.weights) / "inputs.pt")
    cond = {k: inputs[k].cuda() for k in ("cond", "neg_cond")}
    job_shell = inputs["job_shell"].cuda()
    path = distilled_path(args) if args.side == "project_mdt_dist" else args.weights

    def load():
        folder = ModelFolder(path, device="cuda")
        for key in folder.args["models"]:
            folder.model(key)
        return folder
    folder, load_s = synced(load)
    pipeline = TrellisPipeline(folder, batch_cfg=True)
    if args.side == "project_compiled":
        compile_flows(folder.model("sparse_structure_flow_model"), folder.model("slat_flow_model"), cond, args.compile)
    params = {}
    if args.step_cache > 1:
        params = {"step_cache": StepCache(interval=args.step_cache)}

    def job(times):
        noise = Noise(SEED)
        structure, times["stage1"] = synced(lambda: pipeline.sample_structure(cond, noise, params=params))
        slat, times["stage2"] = synced(lambda: pipeline.sample_latents(
            cond, Structure(job_shell, 1, pipeline.resolution), noise, params=params))
        decoded, times["decoders"] = synced(lambda: pipeline.decode(slat, DECODED))
        return {"structure_voxels": int(structure.coords.shape[0]), "slat": slat.feats.float().cpu(),
                "slat_coords": slat.coords.cpu(), "gaussians": int(decoded["gaussian"][0].get_xyz.shape[0]),
                "mesh_faces": int(decoded["mesh"][0].faces.shape[0])}
    report = run_jobs(job, args.reps)
    if args.syncs:  # one more job, its host waits per stage
        from sync_sites import sync_sites
        noise, device = Noise(SEED), torch.device("cuda")
        slat = pipeline.sample_latents(cond, Structure(job_shell, 1, pipeline.resolution), noise, params=params)
        report["syncs"] = {
            "stage1": sync_sites(lambda: pipeline.sample_structure(cond, noise, params=params), 1, device),
            "stage2": sync_sites(lambda: pipeline.sample_latents(cond, Structure(job_shell, 1, pipeline.resolution),
                                                                 noise, params=params), 1, device),
            "decoders": sync_sites(lambda: pipeline.decode(slat, DECODED), 1, device)}

    flow = folder.model("slat_flow_model")
    sampler = pipeline.sampler("slat_sampler")
    slat_params = pipeline.sampler_params("slat_sampler")

    def step(coords):
        x = SparseTensor(torch.randn(coords.shape[0], flow.in_channels, device="cuda"), coords)
        return sampler._velocity(flow, x, 0.8, 0, cond["cond"], neg_cond=cond["neg_cond"],
                                 cfg_strength=slat_params["cfg_strength"],
                                 cfg_interval=slat_params.get("cfg_interval", (0.0, 1.0)))
    with torch.no_grad():
        report["step_seconds"] = step_costs(step, inputs["scaling"])
    report.update(load_seconds=load_s, context_gib=context)
    report["working_memory"] = working_memory_table(pipeline, cond, {**inputs["scaling"], "job": job_shell})
    return report


def working_memory_table(pipeline, cond, shells: Dict[object, torch.Tensor]) -> dict:
    """Measured working memory of each stage against ``TrellisPipeline.working_memory``: {stage:
    {voxels: [measured bytes, estimated bytes]}} (latent: a 2-step run, both steps guided)."""
    from trellis_impl.pipelines.generation import Noise, Structure
    from trellis_impl.sparse import SparseTensor

    table = {"structure": {1: [working_bytes(lambda: pipeline.sample_structure(cond, Noise(SEED))),
                               pipeline.working_memory("structure", samples=1)]}}
    for coords in shells.values():
        coords = coords.cuda()
        n = int(coords.shape[0])
        structure = Structure(coords, 1, pipeline.resolution)
        table.setdefault("latent", {})[n] = [
            working_bytes(lambda: pipeline.sample_latents(cond, structure, Noise(SEED), params={"steps": 2})),
            pipeline.working_memory("latent", voxels=n)]
        slat = SparseTensor(torch.randn(n, 8, device="cuda"), coords)
        for fmt in DECODED:
            table.setdefault(fmt, {})[n] = [working_bytes(lambda: pipeline.decode(slat, [fmt])),
                                            pipeline.working_memory(fmt, voxels=n)]
    return table


# ---------------------------------------------------------------- the official code

def _flash_attn_stand_in() -> types.ModuleType:
    """A ``flash_attn`` module for the official code on a machine without the package: packed
    (varlen) calls go to torch's built-in FlashAttention-2 kernel, dense ones to SDPA. Shapes
    as flash-attn 2: dense [B, N, H, C], packed [T, H, C]; qkv/kv packed on dim -3."""
    import torch.nn.functional as F
    from torch.nn.attention.varlen import varlen_attn

    def dense(q, k, v, *_, **__):
        return F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)).transpose(1, 2)

    def varlen(q, k, v, cu_q, cu_k, max_q, max_k, *_, **__):
        return varlen_attn(q, k, v, cu_q, cu_k, int(max_q), int(max_k))

    module = types.ModuleType("flash_attn")
    module.__spec__ = importlib.machinery.ModuleSpec("flash_attn", None)
    module.flash_attn_func = dense
    module.flash_attn_qkvpacked_func = lambda qkv, *a, **k: dense(*qkv.unbind(-3))
    module.flash_attn_kvpacked_func = lambda q, kv, *a, **k: dense(q, *kv.unbind(-3))
    module.flash_attn_varlen_func = varlen
    module.flash_attn_varlen_qkvpacked_func = lambda qkv, cu, m, *a, **k: varlen(*qkv.unbind(-3), cu, cu, m, m)
    module.flash_attn_varlen_kvpacked_func = lambda q, kv, cu_q, cu_k, mq, mk, *a, **k: varlen(
        q, *kv.unbind(-3), cu_q, cu_k, mq, mk)
    return module


class _Absent:
    """What a missing optional package's names resolve to: fails only if actually used."""

    def __init__(self, name: str):
        self._name = name

    def __call__(self, *args, **kwargs):
        raise RuntimeError(f"{self._name} is not installed here; the benchmark does not use it")

    def __getattr__(self, attr):
        return _Absent(f"{self._name}.{attr}")


def _check_tensor(tensor, shape=None, dtype=None, device=None, throw=True) -> bool:
    """kaolin.utils.testing.check_tensor: FlexiCubes' input assertions (None = any size)."""
    ok = (shape is None or (tensor.dim() == len(shape) and all(s is None or s == d for s, d in zip(shape, tensor.shape)))) \
        and (dtype is None or tensor.dtype == dtype) and (device is None or tensor.device == torch.device(device))
    if not ok and throw:
        raise ValueError(f"tensor {tuple(tensor.shape)} {tensor.dtype} does not match {shape} {dtype} {device}")
    return ok


def _absent_attribute(module: str, attr: str):
    if attr.startswith("__"):  # import machinery probes (__path__, __spec__...): a plain module
        raise AttributeError(attr)
    return _Absent(f"{module}.{attr}")


def _stand_in(name: str, **attrs) -> None:
    """Register ``name`` (and its parents) as modules whose other names are ``_Absent``."""
    parts = name.split(".")
    for i in range(1, len(parts) + 1):
        full = ".".join(parts[:i])
        if full not in sys.modules:
            module = types.ModuleType(full)
            module.__spec__ = importlib.machinery.ModuleSpec(full, None)  # find_spec() probes need one
            module.__getattr__ = lambda attr, full=full: _absent_attribute(full, attr)
            sys.modules[full] = module
            if i > 1:
                setattr(sys.modules[".".join(parts[:i - 1])], parts[i - 1], module)
    for key, value in attrs.items():
        setattr(sys.modules[name], key, value)


def official_side(args) -> dict:
    os.environ.update(ATTN_BACKEND="sdpa", SPARSE_ATTN_BACKEND="flash_attn", SPCONV_ALGO="native")
    sys.modules["flash_attn"] = _flash_attn_stand_in()
    # The text pipeline (CLIP, open3d) is not benchmarked: its module is left out.
    text = types.ModuleType("trellis.pipelines.trellis_text_to_3d")
    text.TrellisTextTo3DPipeline = _Absent("TrellisTextTo3DPipeline")
    sys.modules[text.__name__] = text
    # Imported at module level by parts the benchmark does not run (preprocessing, file export):
    # stand-ins only where the package is missing.
    for name in ("rembg", "utils3d", "plyfile", "torchvision"):
        try:
            importlib.import_module(name)
        except ImportError:
            _stand_in(name)
    try:
        importlib.import_module("kaolin.utils.testing")
    except ImportError:
        _stand_in("kaolin.utils.testing", check_tensor=_check_tensor)
    try:
        importlib.import_module("tqdm")
    except ImportError:
        _stand_in("tqdm", tqdm=lambda iterable=None, *a, **k: iterable)
    sys.path.insert(0, str(Path(args.official).resolve()))
    from trellis.modules import sparse as sp
    from trellis.pipelines import TrellisImageTo3DPipeline

    # DINOv2 comes from torch.hub there; both codes get the same condition tokens instead.
    TrellisImageTo3DPipeline._init_image_cond_model = lambda self, name: None
    torch.zeros(1, device="cuda")
    context = context_gib()
    inputs = torch.load(Path(args.weights) / "inputs.pt")
    cond = {k: inputs[k].cuda() for k in ("cond", "neg_cond")}
    job_shell = inputs["job_shell"].cuda()

    def load():
        pipe = TrellisImageTo3DPipeline.from_pretrained(args.weights)
        pipe.cuda()
        return pipe
    pipe, load_s = synced(load)

    @torch.no_grad()  # as the official run()
    def job(times):
        torch.manual_seed(SEED)
        coords, times["stage1"] = synced(lambda: pipe.sample_sparse_structure(cond, 1))
        slat, times["stage2"] = synced(lambda: pipe.sample_slat(cond, job_shell))
        decoded, times["decoders"] = synced(lambda: pipe.decode_slat(slat, ["mesh", "gaussian"]))
        return {"structure_voxels": int(coords.shape[0]), "slat": slat.feats.float().cpu(),
                "slat_coords": slat.coords.cpu(), "gaussians": int(decoded["gaussian"][0].get_xyz.shape[0]),
                "mesh_faces": int(decoded["mesh"][0].faces.shape[0])}
    report = run_jobs(job, args.reps)

    flow = pipe.models["slat_flow_model"]
    params = pipe.slat_sampler_params

    def step(coords):
        x = sp.SparseTensor(feats=torch.randn(coords.shape[0], flow.in_channels, device="cuda"), coords=coords)
        return pipe.slat_sampler._inference_model(flow, x, 0.8, cond["cond"], cond["neg_cond"],
                                                  params["cfg_strength"], params["cfg_interval"])
    with torch.no_grad():
        report["step_seconds"] = step_costs(step, inputs["scaling"])
    report.update(load_seconds=load_s, context_gib=context)
    return report


# ---------------------------------------------------------------- report

def compile_flows(structure_flow, latent_flow, cond: dict, mode: str) -> None:
    """``torch.compile`` in place the structure flow's forward (one graph, no break, once its
    backends are chosen: an eager forward first, since choosing logs) and the latent flow's
    transformer blocks on dense tokens (``dense_blocks``: one graph, dynamic in the token count;
    its sparse input and output blocks stay eager). The first job then pays the compilation."""
    device = cond["cond"].device
    x = torch.zeros(1, structure_flow.in_channels, *(structure_flow.resolution,) * 3, device=device)
    with torch.no_grad():
        structure_flow(x, torch.zeros(1, device=device), cond["cond"])
    structure_flow.forward = torch.compile(structure_flow.forward, mode=mode, dynamic=False)
    latent_flow.dense_blocks = torch.compile(latent_flow.dense_blocks, mode=mode, dynamic=True)


def run_side(side: str, args, out: Path) -> Optional[dict]:
    """Run one side in a fresh process; its report (None if it failed, with its output shown)."""
    command = [sys.executable, __file__, "--side", side, "--weights", str(args.weights), "--reps", str(args.reps),
               "--step-cache", str(args.step_cache if side == "project_cached" else 1), "--report", str(out),
               "--distilled-steps", str(args.distilled_steps), "--compile", args.compile or "default"]
    if args.official:
        command += ["--official", str(args.official)]
    if args.syncs and side == "project":
        command.append("--syncs")
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"--- {side} failed (exit {done.returncode}):\n{done.stdout[-4000:]}\n{done.stderr[-8000:]}")
        return None
    return torch.load(out, weights_only=False)


def latent_difference(a: dict, b: dict) -> Optional[float]:
    """Relative RMS difference of two stage-2 latents over the same voxels (None if they differ)."""
    if not torch.equal(a["slat_coords"], b["slat_coords"]):
        order_a = _order(a["slat_coords"])
        order_b = _order(b["slat_coords"])
        if not torch.equal(a["slat_coords"][order_a], b["slat_coords"][order_b]):
            return None
        fa, fb = a["slat"][order_a], b["slat"][order_b]
    else:
        fa, fb = a["slat"], b["slat"]
    return float((fa - fb).norm() / fb.norm())


def _order(coords: torch.Tensor) -> torch.Tensor:
    key = ((coords[:, 0].long() * 64 + coords[:, 1]) * 64 + coords[:, 2]) * 64 + coords[:, 3]
    return torch.argsort(key)


def table(reports: Dict[str, dict]) -> str:
    base = reports.get("official")
    lines = ["| | total | stage 1 | stage 2 | decoders | first job | load | peak allocated | peak reserved + context |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name, r in reports.items():
        w = r["warm"]
        total = sum(w.values())
        ratio = f" ({sum(base['warm'].values()) / total:.2f}x)" if base and name != "official" else ""
        lines.append(f"| {name} | {total:.3f} s{ratio} | {w['stage1']:.3f} | {w['stage2']:.3f} | {w['decoders']:.3f} | "
                     f"{sum(r['cold'].values()):.3f} s | {r['load_seconds']:.1f} s | {r['peak_allocated_gib']:.2f} GiB | "
                     f"{r['peak_reserved_gib'] + r['context_gib']:.2f} GiB |")
    names = list(reports)
    lines += ["", "ms per guided stage-2 step (cond + uncond) vs voxels: " + " / ".join(names),
              "| voxels | " + " | ".join(names) + (" | official / project |" if base and "project" in reports else " |"),
              "|---" * (len(names) + 1 + (1 if base and "project" in reports else 0)) + "|"]
    for n in reports[names[0]]["step_seconds"]:
        row = [f"{reports[k]['step_seconds'][n] * 1000:.1f}" for k in names]
        if base and "project" in reports:
            row.append(f"{base['step_seconds'][n] / reports['project']['step_seconds'][n]:.2f}x")
        lines.append(f"| {n} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--official", default=None, help="a microsoft/TRELLIS checkout (with its FlexiCubes submodule)")
    parser.add_argument("--weights", default=str(Path(tempfile.gettempdir()) / "trellis_bench" / "TRELLIS-image-large"),
                        help="folder for the random released-architecture weights (written if absent)")
    parser.add_argument("--reps", type=int, default=4, help="warm jobs per side (medians)")
    parser.add_argument("--step-cache", type=int, default=1,
                        help="also run this project with the step cache at this interval (> 1)")
    parser.add_argument("--distilled-steps", type=int, default=0,
                        help="also run this project on the MDT-dist layout at this many steps per stage (1-4)")
    parser.add_argument("--compile", default=None, choices=["default", "reduce-overhead", "max-autotune-no-cudagraphs"],
                        help="also run this project with the flows under torch.compile in this mode")
    parser.add_argument("--syncs", action="store_true",
                        help="also count this project's host waits per stage in one more job (scripts/sync_sites.py)")
    parser.add_argument("--json", default=None, help="write every figure here")
    parser.add_argument("--side", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--report", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        report = official_side(args) if args.side == "official" else project_side(args)
        torch.save(report, args.report)
        return 0

    weights = Path(args.weights)
    _, seconds = synced(lambda: write_inputs(weights))
    print(f"weights and inputs in {weights} ({seconds:.1f} s)")
    if args.distilled_steps:
        write_distilled(args)
    sides = (["official"] if args.official else []) + ["project"] + (["project_cached"] if args.step_cache > 1 else []) \
        + (["project_mdt_dist"] if args.distilled_steps else []) + (["project_compiled"] if args.compile else [])
    reports = {}
    with tempfile.TemporaryDirectory() as tmp:
        for side in sides:
            report = run_side(side, args, Path(tmp) / f"{side}.pt")
            if report is not None:
                reports[side] = report
    if not reports:
        return 1
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; {args.reps} warm jobs per side (medians)")
    print(table(reports))
    summary = {name: {k: v for k, v in r.items() if k != "result"} | {
        k: v for k, v in r["result"].items() if k not in ("slat", "slat_coords")} for name, r in reports.items()}
    # Same weights and noise: official vs project differ by rounding; the step cache by its forecasts.
    for name, against in (("project", "official"), ("project_cached", "official"), ("project_cached", "project"),
                          ("project_compiled", "project")):
        if name in reports and against in reports:
            summary[name][f"slat_rel_rms_vs_{against}"] = latent_difference(reports[name]["result"],
                                                                            reports[against]["result"])
    for name, s in summary.items():
        print(f"{name}: structure voxels {s['structure_voxels']}, Gaussians {s['gaussians']}, mesh faces "
              f"{s['mesh_faces']}" + "".join(f", stage-2 latent rel. RMS vs {k[len('slat_rel_rms_vs_'):]} {v:.2e}"
                                             for k, v in s.items() if k.startswith("slat_rel_rms_vs_") and v is not None))
    for name, r in reports.items():
        for stage, sites in r.get("syncs", {}).items():
            print(f"{name} {stage}: host waits per job: " + (", ".join(f"{site} {n:g}" for site, n in sites.items())
                                                            or "none"))
    for name, r in reports.items():
        if "working_memory" in r:
            print(f"\n{name}: working memory beyond the weights, measured / estimated (GiB)")
            for stage, rows in r["working_memory"].items():
                print(f"  {stage:<10s} " + "  ".join(f"{n}: {m / 2 ** 30:.2f} / {e / 2 ** 30:.2f}"
                                                  for n, (m, e) in sorted(rows.items())))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=1, default=float))
    return 0 if len(reports) == len(sides) else 1


if __name__ == "__main__":
    sys.exit(main())
