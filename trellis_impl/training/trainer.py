"""The training loop shared by every stage: data order, per-sample randomness, mixed precision,
gradient accumulation and clipping, EMA, DDP, checkpoints and resume.

Randomness is drawn per sample from a generator seeded by (config seed, step, position of the sample
in the step's global batch), never from a global RNG. So a run's result does not depend on how the
global batch is split over processes or micro-batches: two processes with batch B give the same
step as one process with batch 2B, and a resumed run continues exactly as an uninterrupted one.

A run folder::

    RUN/config.json                  the config the run was started with (resuming checks it)
    RUN/log.jsonl                    one JSON line per logged step (losses, grad norm, lr, seconds)
    RUN/checkpoints/step_0000100/    models.safetensors (ROLE.key), ema.safetensors (RATE/ROLE.key),
                                     state.pt (optimizer, scaler, clipper, step); written to a temporary
                                     folder, then renamed: a checkpoint folder is always complete. Without
                                     state.pt (weights carried alone) a resume starts a fresh optimizer.
"""
from __future__ import annotations

import json
import logging
import shutil
import tempfile
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import ExitStack, nullcontext
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn as nn

from ..backends.precision import tf32_products
from ..models.base import TrellisModel
from .config import TrainConfig
from .dataset import TrainingData, write_json_atomic
from .distributed import DistributedContext, init_distributed, mean_over_processes

__all__ = ["Trainer", "AdaptiveGradClipper", "sample_generator", "RunError"]

_log = logging.getLogger("trellis_impl")
# Called after every step with (step, max_steps, logged values); may raise to interrupt.
StepCallback = Callable[[int, int, Dict[str, float]], None]


class RunError(ValueError):
    """A run folder that cannot be started or resumed."""


def sample_generator(seed: int, step: int, position: int) -> torch.Generator:
    """The CPU generator of one training sample: a function of (seed, step, position in the step's
    global batch) only."""
    mixed = ((seed * 1_000_003 + step) * 1_000_033 + position) % (2 ** 63 - 1)
    return torch.Generator().manual_seed(mixed)


class AdaptiveGradClipper:
    """The official AdaptiveGradClipper: clip the global gradient norm to ``max_norm`` until the
    buffer of recent norms is full, then to ``min(max_norm, percentile(recent norms))``."""

    def __init__(self, max_norm: Optional[float] = 1.0, clip_percentile: float = 95.0, buffer_size: int = 1000):
        self.max_norm, self.clip_percentile, self.buffer_size = max_norm, clip_percentile, buffer_size
        self.norms = np.zeros(buffer_size, dtype=np.float32)
        self.current_max = max_norm
        self.pointer = self.length = 0

    def __call__(self, parameters) -> torch.Tensor:
        limit = self.current_max if self.current_max is not None else float("inf")
        norm = torch.nn.utils.clip_grad_norm_(parameters, max_norm=limit)
        if torch.isfinite(norm):
            self.norms[self.pointer] = float(norm)
            self.pointer = (self.pointer + 1) % self.buffer_size
            self.length = min(self.length + 1, self.buffer_size)
            if self.length == self.buffer_size:
                self.current_max = float(np.percentile(self.norms, self.clip_percentile))
                if self.max_norm is not None:
                    self.current_max = min(self.current_max, self.max_norm)
        return norm

    def state_dict(self) -> dict:
        return {"norms": self.norms.copy(), "current_max": self.current_max, "pointer": self.pointer,
                "length": self.length}

    def load_state_dict(self, state: dict) -> None:
        self.norms = np.asarray(state["norms"], dtype=np.float32)
        self.current_max, self.pointer, self.length = state["current_max"], state["pointer"], state["length"]


def _optimizer(spec: dict, params: List[nn.Parameter]) -> torch.optim.Optimizer:
    return getattr(torch.optim, spec["name"])(params, **spec.get("args", {}))


class Trainer:
    """Trains the models of one stage.

    Args:
        config: the stage's TrainConfig.
        data_dir: the prepared training-data folder.
        run_dir: the run folder; an existing run there is resumed from its last checkpoint (its
            config must be the same).
        device: 'cuda', 'cpu' or None (CUDA when available; one GPU per process under torchrun).
        context: a DistributedContext (default: from torchrun's environment).
        log: where progress lines go (main process only); None: silent.
    """

    def __init__(self, config: TrainConfig, data_dir: Union[str, Path], run_dir: Union[str, Path],
                 device: Union[str, torch.device, None] = None, context: Optional[DistributedContext] = None,
                 log: Optional[Callable[[str], None]] = print):
        from .stages import STAGES
        self.config = config
        self.context = context or init_distributed(device)
        self.device = self.context.device
        self.run_dir = Path(run_dir)
        self.log_fn = log if self.context.is_main else None
        t = config.trainer
        self.seed, self.max_steps = t["seed"], t["max_steps"]
        self.batch_size, self.batch_split = t["batch_size_per_gpu"], t["batch_split"]
        self.data = TrainingData(data_dir)
        self.stage = STAGES[config.stage](config, self.data, self.device)
        self.models: Dict[str, nn.Module] = self._build_models()
        self.trained = self._wrap_ddp()
        self.params = [p for m in self.models.values() for p in m.parameters() if p.requires_grad]
        self.param_names = [f"{role}.{name}" for role, m in self.models.items()
                            for name, p in m.named_parameters() if p.requires_grad]
        self.optimizer = _optimizer(t["optimizer"], self.params)
        self.ema = {rate: [p.detach().clone() for p in self.params] for rate in t["ema_rate"]}
        clip = t["grad_clip"]
        self.clipper = None if clip is None else AdaptiveGradClipper(clip.get("max_norm"), clip.get("clip_percentile", 95))
        mp = t["mixed_precision"]
        self.autocast_dtype = config.autocast_dtype
        self.scaler = torch.amp.GradScaler(self.device.type) if mp == "fp16" else None
        self.tf32 = mp == "tf32"
        self.step = 0
        self.bad_assets: set = set()
        self._bad_lock = threading.Lock()  # samples load on threads
        threads = t["loader_threads"]
        self._loader = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None  # one pool for the run
        # with threads, the next step's samples load while this step computes (they depend only on
        # the step and their positions, so loading them early changes nothing)
        self._look_ahead = ThreadPoolExecutor(max_workers=1) if threads > 1 else None
        self._next_batches: Optional[Tuple[int, Future]] = None
        self._epoch_cache: Dict[int, torch.Tensor] = {}
        self._prepare_run_dir()

    # ------------------------------------------------------------------ set-up
    def _build_models(self) -> Dict[str, nn.Module]:
        models = {}
        for role in self.stage.roles:
            if role not in self.config.models:
                raise RunError(f"{self.config.source}: stage {self.config.stage} trains models.{role}; it is missing")
            with torch.random.fork_rng(devices=[]):  # the official initialisation, from the run's seed
                torch.manual_seed(self.seed)
                if role in self.config.init:
                    model = self.stage.load_init(role, self.config.path(self.config.init[role]))
                else:
                    model = self.stage.build(role, self.config.models[role])
                    self.stage.initialise(role, model)
            if isinstance(model, TrellisModel):
                model.set_compute_dtype(torch.float32)  # master weights in float32; autocast does the rest
                model.use_checkpoint = bool(self.config.trainer["grad_checkpoint"])
            models[role] = model.to(self.device).train().requires_grad_(True)
        return models

    def _wrap_ddp(self) -> Dict[str, nn.Module]:
        if self.context.world_size == 1:
            return dict(self.models)
        from torch.nn.parallel import DistributedDataParallel
        ids = [self.device.index] if self.device.type == "cuda" else None
        return {role: DistributedDataParallel(m, device_ids=ids) for role, m in self.models.items()}

    def _prepare_run_dir(self) -> None:
        """A new run writes its config; an existing one (same config) is resumed by every process."""
        config_path = self.run_dir / "config.json"
        if self.context.is_main:
            if config_path.is_file():
                previous = json.loads(config_path.read_text(encoding="utf-8"))
                if previous != self.config.to_json():
                    raise RunError(f"{self.run_dir} holds a run with another config; give a new --out to start a "
                                   f"new run, or the same config to resume it")
            elif self.run_dir.exists() and any(self.run_dir.iterdir()):
                raise RunError(f"{self.run_dir} exists and is not a run folder (no config.json); choose a new --out")
            else:
                self.run_dir.mkdir(parents=True, exist_ok=True)
                # what an exported model folder needs from this stage (e.g. the SLat normalisation)
                write_json_atomic(self.run_dir / "stage.json", {"stage": self.config.stage,
                                                                 "pipeline_args": self.stage.pipeline_args()})
                write_json_atomic(config_path, self.config.to_json())
        self.context.barrier()
        self.resume()

    # ------------------------------------------------------------------ data
    def _dataset_index(self, position: int) -> int:
        """The dataset item at a position of the endless stream of shuffled epochs."""
        n = len(self.stage.names)
        epoch, offset = divmod(position, n)
        cache = self._epoch_cache  # one read: the look-ahead thread may replace it meanwhile
        if epoch not in cache:
            cache = self._epoch_cache = {epoch: torch.randperm(n, generator=torch.Generator().manual_seed(self.seed + epoch))}
        return int(cache[epoch][offset])

    def micro_batches(self, step: int) -> List[dict]:
        """This process's micro-batches of ``step``: global positions step * G + (m * W + rank) * B + j."""
        b, w, r = self.batch_size, self.context.world_size, self.context.rank
        global_batch = b * w * self.batch_split
        jobs = []
        for m in range(self.batch_split):
            for j in range(b):
                position = (m * w + r) * b + j
                jobs.append((self._dataset_index(step * global_batch + position), sample_generator(self.seed, step, position)))
        # each sample depends only on its own generator, so loading them on threads changes nothing
        if self._loader is not None:
            items = list(self._loader.map(lambda job: self._load_sample(*job), jobs))
        else:
            items = [self._load_sample(*job) for job in jobs]
        return [self.stage.collate(items[m * b:(m + 1) * b]) for m in range(self.batch_split)]

    def _step_batches(self, step: int) -> List[dict]:
        """``micro_batches(step)``, taken from the look-ahead when it loaded them; then starts
        loading step + 1's."""
        ahead, self._next_batches = self._next_batches, None
        batches = ahead[1].result() if ahead is not None and ahead[0] == step else self.micro_batches(step)
        if self._look_ahead is not None and step + 1 < self.max_steps:
            self._next_batches = (step + 1, self._look_ahead.submit(self.micro_batches, step + 1))
        return batches

    def _load_sample(self, index: int, generator: torch.Generator) -> dict:
        """The sample of dataset item ``index``; an asset whose files cannot be read is logged (once)
        and replaced by the next readable one, a rule that depends only on which files are bad, so
        every process and every resumed run makes the same choice."""
        n = len(self.stage.names)
        for k in range(n):
            candidate = (index + k) % n
            state = generator.get_state()
            try:
                item = self.stage.load_item(candidate, generator)
            except (KeyboardInterrupt, SystemExit):
                raise
            except Exception as error:  # a damaged or missing asset file must not stop the run
                name = self.stage.names[candidate]
                with self._bad_lock:
                    first = name not in self.bad_assets
                    self.bad_assets.add(name)
                if first:
                    _log.warning("[trellis] %s: skipping asset %s (%s: %s)", self.config.stage, name,
                                 type(error).__name__, error)
                generator.set_state(state)
                continue
            item["generator"] = generator
            return item
        raise RunError(f"{self.data.path}: no asset of stage {self.config.stage} can be read")

    # ------------------------------------------------------------------ one step
    def train_step(self) -> Dict[str, float]:
        """Run one optimisation step (all micro-batches); returns the logged values, with
        ``data_wait``: the seconds this step waited for its samples."""
        self.optimizer.zero_grad(set_to_none=True)
        totals: Dict[str, float] = {}
        asked = time.perf_counter()
        batches = self._step_batches(self.step)
        waited = time.perf_counter() - asked  # loading not hidden behind the previous step
        autocast = (torch.autocast(self.device.type, dtype=self.autocast_dtype) if self.autocast_dtype is not None
                    else nullcontext())
        for i, batch in enumerate(batches):
            with ExitStack() as stack:
                if self.tf32:
                    stack.enter_context(tf32_products(matmul=True, convolutions=True))
                if i < len(batches) - 1:  # DDP reduces the gradients once, after the last micro-batch
                    for model in self.trained.values():
                        if hasattr(model, "no_sync"):
                            stack.enter_context(model.no_sync())
                with autocast:
                    terms = self.stage.losses(self.trained, batch)
                loss = terms["loss"] / len(batches)
                (self.scaler.scale(loss) if self.scaler is not None else loss).backward()
            for key, value in terms.items():
                totals[key] = totals.get(key, 0.0) + float(value.detach()) / len(batches)
        if self.scaler is not None:
            self.scaler.unscale_(self.optimizer)
        if self.clipper is not None:
            norm = self.clipper(self.params)
        else:
            norm = torch.nn.utils.clip_grad_norm_(self.params, float("inf"))
        finite = bool(torch.isfinite(norm))
        if self.scaler is not None:
            self.scaler.step(self.optimizer)  # skips non-finite steps itself
            self.scaler.update()
        elif finite:
            self.optimizer.step()
        if finite:
            self._update_ema()
        self.step += 1
        logged = mean_over_processes(totals, self.context)
        logged["grad_norm"] = float(norm) if finite else float("nan")
        logged["lr"] = self.optimizer.param_groups[0]["lr"]
        logged["data_wait"] = waited
        if self.device.type == "cuda":  # for planning runs that share a GPU
            logged["gpu_peak_gib"] = torch.cuda.max_memory_allocated(self.device) / 2 ** 30
        return logged

    @torch.no_grad()
    def evaluate(self, steps: Sequence[int] = (0,)) -> Dict[str, float]:
        """The mean loss terms of the batches of ``steps`` (their samples, times and noise) under
        the current weights, without training: a fixed yardstick to compare weights with."""
        totals: Dict[str, float] = {}
        batches = [batch for step in steps for batch in self.micro_batches(step)]
        for batch in batches:
            for key, value in self.stage.losses(self.trained, batch).items():
                totals[key] = totals.get(key, 0.0) + float(value) / len(batches)
        return totals

    @torch.no_grad()
    def _update_ema(self) -> None:
        # a fixed rate of 0.999 keeps a quarter of the initial weights after 1,400 steps; the
        # warm-up (config ema_warmup) averages over about the last tenth of the run instead
        warm = (1 + self.step) / (10 + self.step) if self.config.trainer["ema_warmup"] else 1.0
        for rate, shadow in self.ema.items():
            torch._foreach_lerp_(shadow, [p.detach() for p in self.params], 1.0 - min(rate, warm))

    # ------------------------------------------------------------------ the loop
    def run(self, steps: Optional[int] = None, callback: Optional[StepCallback] = None,
            max_seconds: Optional[float] = None) -> int:
        """Train until ``max_steps`` (or ``steps`` more steps, or the first step that ends after
        ``max_seconds`` of training); returns the step reached. A checkpoint is written every
        ``i_save`` steps and at the end, so a time-limited run resumes where it stopped."""
        end = self.max_steps if steps is None else min(self.max_steps, self.step + steps)
        t = self.config.trainer
        started, data_seconds = time.perf_counter(), 0.0
        while self.step < end:
            logged = self.train_step()
            logged["seconds"] = time.perf_counter() - started
            data_seconds += logged.pop("data_wait")
            logged["data_seconds"] = data_seconds  # of "seconds", those spent waiting for samples
            if max_seconds is not None:  # every process asks every step, so they stop at the same step
                late = float(logged["seconds"] >= max_seconds)
                if mean_over_processes({"late": late}, self.context)["late"] > 0:
                    end = self.step
            if self.step % t["i_log"] == 0 or self.step == end:
                self._log(logged)
            if callback is not None:
                callback(self.step, end, logged)
            if self.step % t["i_save"] == 0 and self.step != end:
                self.save()
        self.save()
        return self.step

    def _log(self, logged: Dict[str, float]) -> None:
        if not self.context.is_main:
            return
        with open(self.run_dir / "log.jsonl", "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": self.step, **logged}) + "\n")
        if self.log_fn is not None:
            shown = " ".join(f"{k}={v:.4g}" for k, v in logged.items() if k not in ("lr", "seconds", "data_seconds"))
            self.log_fn(f"[{self.config.stage}] step {self.step}/{self.max_steps} {shown} ({logged['seconds']:.1f} s, "
                        f"{logged['data_seconds']:.1f} s waiting for data)")

    # ------------------------------------------------------------------ checkpoints
    def checkpoints(self) -> List[Path]:
        """Complete checkpoint folders of the run, oldest first."""
        folder = self.run_dir / "checkpoints"
        return sorted(p for p in folder.glob("step_*") if p.is_dir()) if folder.is_dir() else []

    def model_state(self, ema_rate: Optional[float] = None) -> Dict[str, Dict[str, torch.Tensor]]:
        """Per role, the state dict of the trained weights (or of one EMA)."""
        states = {role: {k: v.detach().clone() for k, v in m.state_dict().items()} for role, m in self.models.items()}
        if ema_rate is not None:
            for name, value in zip(self.param_names, self.ema[ema_rate]):
                role, key = name.split(".", 1)
                states[role][key] = value.detach().clone()
        return states

    def save(self) -> Optional[Path]:
        """Write a checkpoint of the current step (main process) and drop the oldest beyond
        ``keep_checkpoints``. Returns its folder."""
        if not self.context.is_main:
            self.context.barrier()
            return None
        from safetensors.torch import save_file
        folder = self.run_dir / "checkpoints"
        folder.mkdir(parents=True, exist_ok=True)
        target = folder / f"step_{self.step:07d}"
        if not target.exists():
            tmp = Path(tempfile.mkdtemp(prefix=".step_", dir=folder))
            try:
                flat = {f"{role}.{k}": v.contiguous() for role, s in self.model_state().items() for k, v in s.items()}
                save_file(flat, str(tmp / "models.safetensors"))
                ema = {f"{rate}/{name}": v.detach().contiguous() for rate, values in self.ema.items()
                       for name, v in zip(self.param_names, values)}
                save_file(ema, str(tmp / "ema.safetensors"))
                torch.save({"step": self.step, "optimizer": self.optimizer.state_dict(),
                            "scaler": None if self.scaler is None else self.scaler.state_dict(),
                            "clipper": None if self.clipper is None else self.clipper.state_dict()},
                           tmp / "state.pt")
                tmp.rename(target)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        for old in self.checkpoints()[:-self.config.trainer["keep_checkpoints"]]:
            shutil.rmtree(old, ignore_errors=True)
        self.context.barrier()
        return target

    def resume(self) -> bool:
        """Load the run's last checkpoint (models, EMA, optimizer, scaler, clipper, step)."""
        from safetensors.torch import load_file
        checkpoints = self.checkpoints()
        if not checkpoints:
            return False
        folder = checkpoints[-1]
        flat = load_file(str(folder / "models.safetensors"))
        for role, model in self.models.items():
            model.load_state_dict({k.split(".", 1)[1]: v for k, v in flat.items() if k.split(".", 1)[0] == role})
        ema = load_file(str(folder / "ema.safetensors"))
        for rate in self.ema:
            self.ema[rate] = [ema[f"{rate}/{name}"].to(self.device) for name in self.param_names]
        if not (folder / "state.pt").is_file():
            # weights only (e.g. carried between machines without the optimizer's moments): training
            # goes on from these weights with a fresh optimizer, no longer bit-identical to one run
            self.step = int(folder.name.split("_")[1])
            _log.warning("[trellis] %s: %s has no state.pt; resuming the weights at step %d with a fresh optimizer",
                         self.config.stage, folder, self.step)
            return True
        state = torch.load(folder / "state.pt", map_location=self.device, weights_only=False)
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scaler is not None and state["scaler"] is not None:
            self.scaler.load_state_dict(state["scaler"])
        if self.clipper is not None and state["clipper"] is not None:
            self.clipper.load_state_dict(state["clipper"])
        self.step = int(state["step"])
        if self.log_fn is not None:
            self.log_fn(f"[{self.config.stage}] resumed {self.run_dir} at step {self.step}")
        return True

