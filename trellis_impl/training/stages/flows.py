"""The two rectified-flow transformers (official FlowMatchingCFGTrainer / SparseFlowMatchingCFGTrainer
with the image- or text-conditioned mixins).

Per sample: ``t = sigmoid(N(mean, std))`` (logit-normal, official mean 1, std 1) or uniform;
``x_t = (1 - t) x_0 + (sigma_min + (1 - sigma_min) t) noise``; the model sees ``1000 t``; the target
velocity is ``(1 - sigma_min) noise - x_0``; loss = MSE. With probability ``p_uncond`` (0.1) the
condition is replaced by the unconditional one (zeros for images, CLIP's empty prompt for text) so
the model learns classifier-free guidance.

Conditions are encoded on the fly from the data, as official: an image stage crops a conditioning
view around its object (1.2x the alpha box), resizes it to 518 px, puts it on black and takes the
frozen DINOv2's layer-normed tokens; a text stage takes a random caption through the frozen CLIP.

With ``data.condition_cache_gb`` > 0 an image stage keeps the tokens of each (asset, view) it has
encoded, on the training device, up to that many GiB: the encoder is frozen, so a view's tokens never
change, and a cached view is neither decoded nor resized again by the loader. Views are then encoded
one at a time, so a view's tokens do not depend on which others shared its batch (a resumed run
stays exact); the views drawn, and so the training, are the same as without the cache. Under a
bfloat16 or float16 autocast the tokens are kept in that type, half the memory: they reach the model
only through the cross-attentions' ``to_kv`` linear layers, which autocast feeds in that type anyway,
so the step computes the same. With ``data.condition_cache_prefill`` the first step first encodes
every view, in a fixed order and fixed batches (images decoded on the loader's threads), until the
cache is full: no step then waits for the views it draws first (drawn at random, the last ones
would take thousands of steps to come up), and a resumed run gets the same tokens again. With
``data.condition_cache_files`` as well, the prefill saves each asset's tokens beside the data
(``DATA/condition_tokens/FINGERPRINT/ASSET.safetensors``; the fingerprint covers the encoder's files,
the image size and the token type) and a later run, of this stage or of the other flow, loads them
instead of encoding again: the two flows of the demo model each spent 155 s of every device call
re-encoding the same 24,000 views.
"""
from __future__ import annotations

import hashlib
import logging
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image

from ...sparse import SparseTensor
from .base import Stage, initialise_weights, per_sample_normal

__all__ = ["StructureFlowStage", "LatentFlowStage", "condition_image", "CachedView"]

CONDITION_KINDS = ("image", "text")
PREFILL_BATCH = 32  # views per encoder call while the cache is prefilled
_log = logging.getLogger("trellis_impl")


def condition_image(rgba: torch.Tensor, size: int = 518) -> torch.Tensor:
    """A conditioning view as the official training data prepares it.

    Args:
        rgba: uint8 [H, W, 4] render with the object's alpha.
    Returns:
        float32 [3, size, size] in [0, 1]: the square of 1.2x the alpha box's larger side around its
        centre (``int`` truncation as official), LANCZOS-resized, RGB multiplied by alpha.
    """
    image = Image.fromarray(rgba.numpy())
    alpha = np.asarray(image.getchannel(3))
    rows, cols = alpha.nonzero()
    if rows.size == 0:
        raise ValueError("conditioning view has an empty alpha channel (no object in it)")
    box = [cols.min(), rows.min(), cols.max(), rows.max()]
    center = [(box[0] + box[2]) / 2, (box[1] + box[3]) / 2]
    half = max(box[2] - box[0], box[3] - box[1]) / 2 * 1.2
    image = image.crop((int(center[0] - half), int(center[1] - half), int(center[0] + half), int(center[1] + half)))
    image = image.resize((size, size), Image.Resampling.LANCZOS)
    alpha = torch.tensor(np.array(image.getchannel(3))).float() / 255.0
    rgb = torch.tensor(np.array(image.convert("RGB"))).permute(2, 0, 1).float() / 255.0
    return rgb * alpha[None]


class CachedView(NamedTuple):
    """A conditioning view of a stage with a condition cache: its (asset, view) key and, unless the
    loader found its tokens cached, its image (``condition_image``)."""
    key: Tuple[str, int]
    image: Optional[torch.Tensor]


class _FlowStage(Stage):
    roles = ("denoiser",)

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        loss = config.loss
        self.sigma_min = float(loss.get("sigma_min", 1e-5))
        self.p_uncond = float(loss.get("p_uncond", 0.1))
        schedule = loss.get("t_schedule", {"name": "logitNormal", "args": {"mean": 1.0, "std": 1.0}})
        if schedule.get("name") not in ("logitNormal", "uniform"):
            raise ValueError(f"{config.source}: loss.t_schedule.name must be 'logitNormal' or 'uniform'")
        self.t_schedule = schedule
        self.condition = config.data.get("condition", "image")
        if self.condition not in CONDITION_KINDS:
            raise ValueError(f"{config.source}: data.condition must be one of {CONDITION_KINDS}")
        self.image_size = int(config.data.get("image_size", 518))
        self.cond_views = config.data.get("cond_views", "cond")  # asset kind the condition images come from
        cache_gb = config.data.get("condition_cache_gb", 0)
        if isinstance(cache_gb, bool) or not isinstance(cache_gb, (int, float)) or not 0 <= cache_gb < float("inf"):
            raise ValueError(f"{config.source}: data.condition_cache_gb must be a number of GiB >= 0, got {cache_gb!r}")
        self.cache_bytes_limit = int(cache_gb * 2 ** 30) if self.condition == "image" else 0
        self.cache_dtype = config.autocast_dtype or torch.float32
        self.cached: Dict[Tuple[str, int], torch.Tensor] = {}  # (asset, view) -> [1, T, C] tokens
        self.cached_bytes = 0
        prefill = config.data.get("condition_cache_prefill", False)
        if not isinstance(prefill, bool) or (prefill and not self.cache_bytes_limit):
            raise ValueError(f"{config.source}: data.condition_cache_prefill must be true or false, and true only "
                             f"with an image condition and data.condition_cache_gb > 0; got {prefill!r}")
        self.prefill_pending = prefill
        files = config.data.get("condition_cache_files", False)
        if not isinstance(files, bool) or (files and not prefill):
            raise ValueError(f"{config.source}: data.condition_cache_files must be true or false, and true only "
                             f"with data.condition_cache_prefill; got {files!r}")
        self.cache_files = files
        self.decode_threads = config.trainer["loader_threads"]
        self._encoder = None
        if self.condition == "image":
            data.require([self.cond_views], self.name)
        else:
            data.require(["caption"], self.name)

    def initialise(self, role: str, model: nn.Module) -> None:
        """Official DiT initialisation: adaLN modulations and the output layer zeroed, the timestep
        MLP N(0, 0.02)."""
        modulations = ["adaLN_modulation.1"] if model.share_mod else \
            [f"blocks.{i}.adaLN_modulation.1" for i in range(len(model.blocks))]
        initialise_weights(model, zero=("out_layer", *modulations))
        for layer in (model.t_embedder.mlp[0], model.t_embedder.mlp[2]):
            nn.init.normal_(layer.weight, std=0.02)

    # ------------------------------------------------------------------ conditions
    def encoder(self):
        """The frozen condition encoder (``frozen.image_encoder`` / ``frozen.text_encoder``), loaded once."""
        if self._encoder is None:
            key = f"{self.condition}_encoder"
            if key not in self.config.frozen:
                raise ValueError(f"{self.config.source}: frozen.{key} must name the condition encoder "
                                 f"({'a DINOv2 folder or .pth' if self.condition == 'image' else 'a CLIP folder'})")
            path = str(self.config.path(self.config.frozen[key]))
            # loaded on first use, inside the step's autocast: the weights' conversion is no step of it
            # (CPU autocast refuses to concatenate the float16 checkpoint's tensors)
            with torch.autocast(self.device.type, enabled=False):
                if self.condition == "image":
                    from ...conditioning import load_dinov2
                    self._encoder = load_dinov2(path, device=self.device)
                else:
                    from ...conditioning import ClipTextEncoder
                    self._encoder = ClipTextEncoder.from_folder(path, device=self.device)
        return self._encoder

    def load_condition(self, name: str, generator: torch.Generator):
        """A random conditioning view (image; a ``CachedView`` with a condition cache) or caption
        (text) of asset ``name``. Runs on the loader's threads."""
        if self.condition == "image":
            view = int(torch.randint(self.data.num_views(name, self.cond_views), (1,), generator=generator))
            if self.cache_bytes_limit and (name, view) in self.cached:  # entries are never dropped
                return CachedView((name, view), None)
            image = condition_image(self.data.view(name, self.cond_views, view)["images"], self.image_size)
            return CachedView((name, view), image) if self.cache_bytes_limit else image
        captions = self.data.captions(name)
        return captions[int(torch.randint(len(captions), (1,), generator=generator))]

    def _view_tokens(self, view: CachedView) -> torch.Tensor:
        """[1, T, C] tokens of one conditioning view, from the cache or encoded (and kept while
        the cache has room)."""
        from ...conditioning import encode_image
        tokens = self.cached.get(view.key)
        if tokens is None:
            tokens = encode_image(self.encoder(), view.image[None]).to(self.cache_dtype)
            self._keep(view.key, tokens)
        return tokens

    def _keep(self, key: Tuple[str, int], tokens: torch.Tensor) -> bool:
        """Cache ``tokens`` [1, T, C] (in ``cache_dtype``) of view ``key`` if there is room; whether
        it was kept."""
        if self.cached_bytes + tokens.nbytes > self.cache_bytes_limit:
            return False
        self.cached[key] = tokens
        self.cached_bytes += tokens.nbytes
        return True

    def token_folder(self) -> Path:
        """Where the prefill saves and finds each asset's tokens: named by a fingerprint of the
        encoder's files, the image size and the token type, so other tokens are never taken."""
        source = self.config.path(self.config.frozen[f"{self.condition}_encoder"])
        digest = hashlib.sha256(f"{self.image_size}:{self.cache_dtype}".encode())
        for file in sorted(p for p in ([source] if source.is_file() else source.rglob("*")) if p.is_file()):
            digest.update(file.relative_to(source.parent).as_posix().encode())
            with file.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1 << 24), b""):
                    digest.update(chunk)
        return self.data.path / "condition_tokens" / digest.hexdigest()[:16]

    def _source_stamp(self, name: str) -> str:
        """The asset's conditioning file as it is now (size, modification time): tokens saved from
        another file of the same name are not taken."""
        stat = self.data.file(name, self.cond_views).stat()
        return f"{stat.st_size}:{stat.st_mtime_ns}"

    def _load_token_files(self, folder: Path) -> bool:
        """Cache the saved tokens of every asset that has them; whether the cache filled up."""
        from safetensors import safe_open
        for name in self.names:
            path = folder / f"{name}.safetensors"
            if not path.is_file():
                continue
            with safe_open(str(path), "pt", device=str(self.device)) as f:
                if f.metadata().get("source") != self._source_stamp(name):
                    continue
                tokens = f.get_tensor("tokens")                                    # [V, T, C]
            for view in range(tokens.shape[0]):
                if (name, view) not in self.cached and not self._keep((name, view), tokens[view:view + 1]):
                    return True
        return False

    def _save_token_files(self, folder: Path, views: Dict[str, int]) -> int:
        """Save the tokens of every asset whose ``views[name]`` views are all cached and that has no
        file yet (``write_new_file``: atomic, no partial file; one the other flow wrote meanwhile is
        kept); returns the files written."""
        from safetensors.torch import save
        from ...files import write_new_file
        folder.mkdir(parents=True, exist_ok=True)
        written = 0
        for name, count in views.items():
            path = folder / f"{name}.safetensors"
            keys = [(name, view) for view in range(count)]
            if path.is_file() or not all(key in self.cached for key in keys):
                continue
            data = save({"tokens": torch.cat([self.cached[key] for key in keys]).cpu()},
                        metadata={"source": self._source_stamp(name)})
            try:
                write_new_file(path, data)
            except FileExistsError:
                continue
            written += 1
        return written

    @torch.no_grad()
    def prefill_cache(self) -> int:
        """Encode the conditioning views of every asset (assets in ``names`` order, views ascending;
        batches of ``PREFILL_BATCH``) into the cache until it is full, the images decoded on
        ``loader_threads`` threads, a batch each, as many batches ahead. Returns the views cached."""
        from ...conditioning import encode_image
        self.prefill_pending = False  # once per run
        started, count = time.perf_counter(), len(self.cached)
        folder = self.token_folder() if self.cache_files else None
        full = folder is not None and folder.is_dir() and self._load_token_files(folder)
        loaded = len(self.cached) - count
        views = {name: self.data.num_views(name, self.cond_views) for name in self.names}
        keys = [] if full else [(name, view) for name, n in views.items() for view in range(n)
                                if (name, view) not in self.cached]
        batches = [keys[i:i + PREFILL_BATCH] for i in range(0, len(keys), PREFILL_BATCH)]

        def decode(batch):  # -> the views that decode and their images; the others are left to the steps
            kept, images = [], []
            for name, view in batch:
                try:
                    images.append(condition_image(self.data.view(name, self.cond_views, view)["images"], self.image_size))
                    kept.append((name, view))
                except Exception as error:  # a damaged view: its asset fails in a step, and the trainer skips it
                    _log.warning("[trellis] %s: prefill leaves out %s view %d (%s: %s)", self.name, name, view,
                                 type(error).__name__, error)
            return kept, torch.stack(images) if images else None

        with ThreadPoolExecutor(max_workers=self.decode_threads) as pool:
            pending = deque(pool.submit(decode, batch) for batch in batches[:self.decode_threads])
            queued = len(pending)
            while pending and not full:
                decoded = pending.popleft()
                if queued < len(batches):
                    pending.append(pool.submit(decode, batches[queued]))
                    queued += 1
                batch, images = decoded.result()
                if images is None:
                    continue
                tokens = encode_image(self.encoder(), images).to(self.cache_dtype)
                full = not all(self._keep(key, tokens[i:i + 1].clone()) for i, key in enumerate(batch))
            for decoded in pending:  # the cache is full
                decoded.cancel()
        saved = self._save_token_files(folder, views) if folder is not None else 0
        files = f" ({loaded} views loaded from {folder}, {saved} assets saved there)" if folder is not None else ""
        _log.info("[trellis] %s: condition cache prefilled with %d views (%.2f GiB) in %.0f s%s%s", self.name,
                  len(self.cached) - count, self.cached_bytes / 2 ** 30, time.perf_counter() - started,
                  files, "; full" if full else "")
        return len(self.cached) - count

    @torch.no_grad()
    def encode_conditions(self, conditions: list) -> Dict[str, torch.Tensor]:
        """{'cond': [B, T, C], 'neg_cond': [1, T, C]} on the device."""
        if self.condition == "image":
            from ...conditioning import encode_image
            if self.prefill_pending:
                self.prefill_cache()
            if self.cache_bytes_limit:
                cond = torch.cat([self._view_tokens(view) for view in conditions])
            else:
                cond = encode_image(self.encoder(), torch.stack(conditions))
            return {"cond": cond, "neg_cond": torch.zeros_like(cond[:1])}
        out = self.encoder().get_cond(list(conditions))
        return {k: v.to(self.device) for k, v in out.items()}

    # ------------------------------------------------------------------ the flow-matching loss
    def sample_time(self, generator: torch.Generator) -> torch.Tensor:
        if self.t_schedule["name"] == "uniform":
            return torch.rand((), generator=generator)
        args = self.t_schedule.get("args", {})
        return torch.sigmoid(torch.randn((), generator=generator) * args.get("std", 1.0) + args.get("mean", 0.0))

    def draws(self, generators: List[torch.Generator]):
        """Per sample: t [B] and the keep-condition mask [B] (False = dropped for CFG)."""
        t = torch.stack([self.sample_time(g) for g in generators])
        keep = torch.stack([torch.rand((), generator=g) >= self.p_uncond for g in generators])
        return t.to(self.device), keep.to(self.device)

    def conditions_with_dropout(self, batch: dict, keep: torch.Tensor) -> torch.Tensor:
        cond = self.encode_conditions(batch["conditions"])
        neg = cond["neg_cond"].expand_as(cond["cond"])
        return torch.where(keep[:, None, None], cond["cond"], neg)

    def diffuse(self, x_0: torch.Tensor, noise: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """x_t for per-row times ``t`` (already broadcast to x_0's shape)."""
        return (1 - t) * x_0 + (self.sigma_min + (1 - self.sigma_min) * t) * noise

    def velocity(self, x_0: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        return (1 - self.sigma_min) * noise - x_0


class StructureFlowStage(_FlowStage):
    """Stage-1 flow on the dense structure latents (``ss_latent``), optionally normalised by
    ``data.normalization`` {'mean', 'std'} (scalars or per channel)."""
    name = "ss_flow"
    pipeline_keys = {"denoiser": "sparse_structure_flow_model"}
    data_kinds = ("ss_latent",)

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        name = self.names[index]
        x_0 = self.data.tensors(name, "ss_latent")["latent"].float()
        norm = self.config.data.get("normalization")
        if norm is not None:
            shape = (-1,) + (1,) * (x_0.dim() - 1)
            x_0 = (x_0 - torch.tensor(norm["mean"]).reshape(shape)) / torch.tensor(norm["std"]).reshape(shape)
        return {"x_0": x_0, "condition": self.load_condition(name, generator)}

    def collate(self, items: List[dict]) -> dict:
        return {"x_0": torch.stack([i["x_0"] for i in items]), "conditions": [i["condition"] for i in items],
                "generators": [i["generator"] for i in items]}

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        generators = batch["generators"]
        t, keep = self.draws(generators)
        x_0 = batch["x_0"].to(self.device)
        noise = torch.stack(per_sample_normal(generators, [tuple(x_0.shape[1:])] * len(generators))).to(self.device)
        cond = self.conditions_with_dropout(batch, keep)
        t_full = t.reshape(-1, *[1] * (x_0.dim() - 1))
        pred = models["denoiser"](self.diffuse(x_0, noise, t_full), t * 1000, cond)
        mse = F.mse_loss(pred.float(), self.velocity(x_0, noise))
        return {"mse": mse, "loss": mse}


class LatentFlowStage(_FlowStage):
    """Stage-2 flow on the per-voxel latents (``slat``), normalised by ``data.normalization``
    {'mean': [8], 'std': [8]} (the official slat_normalization; 'auto' computes them from the data)."""
    name = "slat_flow"
    pipeline_keys = {"denoiser": "slat_flow_model"}
    data_kinds = ("voxels", "slat")

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        norm = config.data.get("normalization", "auto")
        self.normalization = latent_statistics(data) if norm == "auto" else {
            k: torch.tensor(norm[k], dtype=torch.float32) for k in ("mean", "std")}

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        name = self.names[index]
        feats = self.data.tensors(name, "slat")["feats"].float()
        return {"coords": self.data.tensors(name, "voxels")["coords"].int(),
                "x_0": (feats - self.normalization["mean"]) / self.normalization["std"],
                "condition": self.load_condition(name, generator)}

    def collate(self, items: List[dict]) -> dict:
        coords = torch.cat([torch.cat([torch.full((len(i["coords"]), 1), b, dtype=torch.int32), i["coords"]], 1)
                            for b, i in enumerate(items)])
        return {"x_0": SparseTensor(torch.cat([i["x_0"] for i in items]), coords, batch_size=len(items)),
                "conditions": [i["condition"] for i in items], "generators": [i["generator"] for i in items]}

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        generators = batch["generators"]
        t, keep = self.draws(generators)
        x_0 = batch["x_0"].to(self.device)
        shapes = [(rows.stop - rows.start, x_0.feats.shape[1]) for rows in x_0.layout]
        noise = torch.cat(per_sample_normal(generators, shapes)).to(self.device)
        t_rows = t[x_0.batch_index()][:, None]
        cond = self.conditions_with_dropout(batch, keep)
        x_t = x_0.replace(self.diffuse(x_0.feats, noise, t_rows))
        pred = models["denoiser"](x_t, t * 1000, cond)
        mse = F.mse_loss(pred.feats.float(), self.velocity(x_0.feats, noise))
        return {"mse": mse, "loss": mse}

    def pipeline_args(self) -> dict:
        return {"slat_normalization": {k: v.tolist() for k, v in self.normalization.items()}}


def latent_statistics(data) -> Dict[str, torch.Tensor]:
    """Per-channel mean and standard deviation of every asset's SLat feats (official stat_latent)."""
    total, total_sq, count = None, None, 0
    for name in data.names:
        feats = data.tensors(name, "slat")["feats"].double()
        total = feats.sum(0) if total is None else total + feats.sum(0)
        total_sq = (feats ** 2).sum(0) if total_sq is None else total_sq + (feats ** 2).sum(0)
        count += feats.shape[0]
    mean = total / count
    std = (total_sq / count - mean ** 2).clamp_min(1e-12).sqrt()
    return {"mean": mean.float(), "std": std.float()}
