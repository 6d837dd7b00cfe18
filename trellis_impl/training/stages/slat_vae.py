"""The SLat VAE and its decoders, trained with rendering losses (official SLatVaeGaussianTrainer,
SLatVaeRadianceFieldDecoderTrainer; the Gaussian decoder alone on frozen latents is this project's).

Each sample is an asset's voxels with their inputs (view-averaged image features for the VAE,
precomputed SLat latents for the decoders trained on the frozen encoder) and ONE random view of
its renders, as official, or ``data.views_per_sample`` distinct ones (a cheap way to see more of
each decoded asset per step when the decoder, not the rasteriser, is the step's cost). The decoded
representation is rendered from each view over a random black or white background (official
``bg_color: 'random'``) and compared with the view composited on the same background: ``l1`` (or
``l2``) ``+ lambda_ssim (1 - SSIM) + lambda_lpips LPIPS``; the VAE adds ``lambda_kl KL`` and the
Gaussian regularisers (``regularizations``: ``lambda_vol`` on the mean scale product,
``lambda_opacity`` on ``(opacity - 1)^2``). The perceptual term needs LPIPS weights that no
registry ships offline (see ``losses.perceptual_loss``): without them it is skipped and
said so once in the log.
"""
from __future__ import annotations

import logging
from typing import Dict, List

import numpy as np
import torch
import torch.nn as nn
from PIL import Image

from ...render.gaussian_raster import render_gaussians_batch
from ...render.radiance_field_render import render_radiance_field
from ...sparse import SparseTensor
from .. import losses
from ..dataset import stored_camera
from .base import Stage, initialise_weights, per_sample_normal

__all__ = ["SLatGaussianVAEStage", "GaussianDecoderStage", "RadianceFieldDecoderStage", "MeshDecoderStage", "RenderStage"]

_log = logging.getLogger("trellis_impl")
IMAGE_LOSSES = {"l1": losses.l1_loss, "l2": losses.l2_loss}


def _resized(channel_image: Image.Image, size: int) -> torch.Tensor:
    if channel_image.size != (size, size):
        channel_image = channel_image.resize((size, size), Image.Resampling.LANCZOS)
    return torch.tensor(np.array(channel_image)).float() / 255.0


class RenderStage(Stage):
    """Shared by the stages supervised by renders: data filtering, random views, image losses."""
    data_kinds = ("voxels", "renders")

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.image_size = int(config.data.get("image_size", 512))
        self.views_per_sample = config.data.get("views_per_sample", 1)
        if not isinstance(self.views_per_sample, int) or isinstance(self.views_per_sample, bool) \
                or self.views_per_sample < 1:
            raise ValueError(f"{config.source}: data.views_per_sample must be a whole number >= 1, "
                             f"got {self.views_per_sample!r}")
        limit = config.data.get("max_num_voxels")
        if limit is not None:  # the official datasets drop larger assets
            self.names = [n for n in self.names if data.manifest["assets"][n].get("num_voxels", 0) <= limit]
            if not self.names:
                raise ValueError(f"{config.source}: no asset has at most data.max_num_voxels={limit} voxels")
        loss = config.loss
        self.image_loss = IMAGE_LOSSES.get(loss.get("loss_type", "l1"))
        if self.image_loss is None:
            raise ValueError(f"{config.source}: loss.loss_type must be one of {', '.join(IMAGE_LOSSES)}")
        self.lambda_ssim = float(loss.get("lambda_ssim", 0.2))
        self.lambda_lpips = float(loss.get("lambda_lpips", 0.2))
        spec = loss.get("perceptual")
        self.perceptual = losses.perceptual_loss(str(config.path(spec)) if spec not in (None, "lpips") else spec) \
            if self.lambda_lpips > 0 else None
        if self.lambda_lpips > 0 and self.perceptual is None:
            _log.warning("[trellis] %s: no perceptual network (loss.perceptual); the lambda_lpips term is left out",
                         self.name)

    def load_views(self, name: str, generator: torch.Generator) -> dict:
        """V = ``views_per_sample`` distinct random views (repeating only when the asset has fewer):
        image [V, 3, S, S] and alpha [V, S, S] in [0, 1], V camera tensors each, background [V, 3]."""
        count = self.data.num_views(name, "renders")
        order = torch.randperm(count, generator=generator)
        images, alphas, extrinsics, intrinsics = [], [], [], []
        for k in range(self.views_per_sample):
            data = self.data.view(name, "renders", int(order[k % count]))
            rgba = Image.fromarray(data["images"].numpy())
            images.append(_resized(rgba.convert("RGB"), self.image_size).permute(2, 0, 1))
            alphas.append(_resized(rgba.getchannel(3), self.image_size))
            extrinsics.append(data["extrinsics"])
            intrinsics.append(data["intrinsics"])
        white = torch.rand(self.views_per_sample, generator=generator) < 0.5
        return {"image": torch.stack(images), "alpha": torch.stack(alphas), "extrinsics": extrinsics,
                "intrinsics": intrinsics, "background": white[:, None].float().expand(-1, 3).clone()}

    def collate_views(self, items: List[dict]) -> dict:
        """Views of all items, item-major: image [B V, 3, S, S], alpha [B V, S, S], B V cameras, background
        [B V, 3]; the items' noise generators [B]."""
        return {"image": torch.cat([i["image"] for i in items]), "alpha": torch.cat([i["alpha"] for i in items]),
                "cameras": [stored_camera(e, k, self.image_size) for i in items
                            for e, k in zip(i["extrinsics"], i["intrinsics"])],
                "background": torch.cat([i["background"] for i in items]), "generators": [i["generator"] for i in items]}

    def per_view(self, per_item: List) -> List:
        """Each item's entry repeated for its views, in ``collate_views``' order."""
        return [entry for entry in per_item for _ in range(self.views_per_sample)]

    def image_terms(self, rendered: torch.Tensor, batch: dict) -> Dict[str, torch.Tensor]:
        """Reconstruction terms of renders [B, 3, H, W] against the views on their backgrounds."""
        alpha = batch["alpha"].to(self.device)[:, None]
        target = batch["image"].to(self.device) * alpha + (1 - alpha) * batch["background"].to(self.device)[..., None, None]
        rendered = rendered.float()
        terms = {"image": self.image_loss(rendered, target)}
        rec = terms["image"]
        if self.lambda_ssim > 0:
            terms["ssim"] = losses.dssim(rendered, target)
            rec = rec + self.lambda_ssim * terms["ssim"]
        if self.perceptual is not None:
            terms["lpips"] = self.perceptual(rendered, target)
            rec = rec + self.lambda_lpips * terms["lpips"]
        terms["rec"] = rec
        return terms

    @staticmethod
    def sparse_batch(items: List[dict], key: str) -> SparseTensor:
        coords = torch.cat([torch.cat([torch.full((len(i["coords"]), 1), b, dtype=torch.int32), i["coords"]], 1)
                            for b, i in enumerate(items)])
        return SparseTensor(torch.cat([i[key] for i in items]), coords, batch_size=len(items))

    def render_gaussian_views(self, gaussians: list, batch: dict) -> torch.Tensor:
        """Each item's decoded Gaussians from its views, [B * V, 3, H, W]: every view of every object
        in one rasteriser call (gsplat; one by one on the PyTorch path); unclamped colours, as the
        official rasteriser (a clamp would stop the gradient of bright pixels)."""
        return render_gaussians_batch(self.per_view(gaussians), batch["cameras"], list(batch["background"]),
                                      clamp=False)["color"]


class GaussianRegularisers:
    """The official Gaussian regularisers (``loss.regularizations``): ``lambda_vol`` times the mean
    scale product, ``lambda_opacity`` times ``(opacity - 1)^2``."""

    def __init__(self, config):
        regs = config.loss.get("regularizations", {})
        self.lambda_vol = float(regs.get("lambda_vol", 0.0))
        self.lambda_opacity = float(regs.get("lambda_opacity", 0.0))

    def add(self, total: torch.Tensor, gaussians: list, terms: Dict[str, torch.Tensor]) -> torch.Tensor:
        """``total`` plus the weighted regularisers of ``gaussians``; each term logged into ``terms``."""
        if self.lambda_vol > 0:
            terms["reg_vol"] = losses.gaussian_volume_regularizer(torch.cat([g.get_scaling for g in gaussians]))
            total = total + self.lambda_vol * terms["reg_vol"]
        if self.lambda_opacity > 0:
            terms["reg_opacity"] = losses.gaussian_opacity_regularizer(torch.cat([g.get_opacity for g in gaussians]))
            total = total + self.lambda_opacity * terms["reg_opacity"]
        return total


class SLatGaussianVAEStage(RenderStage):
    """Encoder (view-averaged features -> SLat, posterior sampled) and Gaussian decoder, trained together."""
    name = "slat_vae_gs"
    roles = ("encoder", "decoder")
    pipeline_keys = {"decoder": "slat_decoder_gs"}
    data_kinds = ("voxels", "renders", "features")

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.lambda_kl = float(config.loss.get("lambda_kl", 1e-6))
        self.regularisers = GaussianRegularisers(config)

    def initialise(self, role: str, model: nn.Module) -> None:
        initialise_weights(model, zero=("out_layer",) if role == "decoder" else ())

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        name = self.names[index]
        return {"coords": self.data.tensors(name, "voxels")["coords"].int(),
                "feats": self.data.tensors(name, "features")["patchtokens"].float(), **self.load_views(name, generator)}

    def collate(self, items: List[dict]) -> dict:
        return {"feats": self.sparse_batch(items, "feats"), **self.collate_views(items)}

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        feats = batch["feats"].to(self.device)
        _, mean, logvar = models["encoder"](feats, sample_posterior=False, return_raw=True)
        shapes = [(rows.stop - rows.start, mean.shape[1]) for rows in feats.layout]
        noise = torch.cat(per_sample_normal(batch["generators"], shapes)).to(self.device)
        z = feats.replace(mean + torch.exp(0.5 * logvar) * noise)
        gaussians = models["decoder"](z)
        terms = self.image_terms(self.render_gaussian_views(gaussians, batch), batch)
        terms["kl"] = losses.kl_diagonal_gaussian(mean.float(), logvar.float())
        terms["loss"] = self.regularisers.add(terms["rec"] + self.lambda_kl * terms["kl"], gaussians, terms)
        return terms


class FrozenLatentStage(RenderStage):
    """A decoder alone on the frozen encoder's SLat (precomputed ``slat`` latents, the posterior
    means, as official), from the official zero-initialised output layer."""
    roles = ("decoder",)
    data_kinds = ("voxels", "renders", "slat")

    def initialise(self, role: str, model: nn.Module) -> None:
        initialise_weights(model, zero=("out_layer",))

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        name = self.names[index]
        return {"coords": self.data.tensors(name, "voxels")["coords"].int(),
                "latents": self.data.tensors(name, "slat")["feats"].float(), **self.load_views(name, generator)}

    def collate(self, items: List[dict]) -> dict:
        return {"latents": self.sparse_batch(items, "latents"), **self.collate_views(items)}


class GaussianDecoderStage(FrozenLatentStage):
    """The Gaussian decoder alone on the frozen encoder's SLat (precomputed ``slat`` latents, the
    posterior means), with the VAE's image losses and Gaussian regularisers: it goes on improving
    the reconstruction while the flows learn the same, now fixed, latents."""
    name = "slat_dec_gs"
    pipeline_keys = {"decoder": "slat_decoder_gs"}

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        self.regularisers = GaussianRegularisers(config)

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        gaussians = models["decoder"](batch["latents"].to(self.device))
        terms = self.image_terms(self.render_gaussian_views(gaussians, batch), batch)
        terms["loss"] = self.regularisers.add(terms["rec"], gaussians, terms)
        return terms


class RadianceFieldDecoderStage(FrozenLatentStage):
    """Strivec decoder on the frozen encoder's SLat (precomputed ``slat`` latents, as official)."""
    name = "slat_dec_rf"
    pipeline_keys = {"decoder": "slat_decoder_rf"}

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        fields = models["decoder"](batch["latents"].to(self.device))
        rendered = torch.stack([render_radiance_field(f, camera, background)["color"] for f, camera, background in
                                zip(self.per_view(fields), batch["cameras"], batch["background"])])
        terms = self.image_terms(rendered, batch)
        terms["loss"] = terms["rec"]
        return terms


class MeshDecoderStage(FrozenLatentStage):
    """FlexiCubes mesh decoder on the frozen encoder's SLat (official SLatVaeMeshDecoderTrainer).

    Per item and view, the ground-truth mesh is rendered (mask, depth, camera-facing normals) and the
    decoded training mesh is compared with it: ``mask l1 + lambda_depth depth (smooth_l1, beta
    1/(2 res), or l1) + normal (l1 + lambda_ssim D-SSIM + lambda_lpips LPIPS)``, plus
    ``lambda_tsdf`` times the TSDF regulariser and the FlexiCubes regularisers (``Mesh.reg_loss``).
    With ``lambda_color > 0`` the vertex colours are rendered against the view (on black) and the
    normal-map channels against the ground-truth normals, each weighted by ``lambda_color``. Items
    whose mesh is empty count only through their regularisers, as official; the logged term
    ``empty`` is their share of the batch.
    """
    name = "slat_dec_mesh"
    pipeline_keys = {"decoder": "slat_decoder_mesh"}
    data_kinds = ("voxels", "renders", "slat", "mesh")

    def __init__(self, config, data, device):
        super().__init__(config, data, device)
        loss = config.loss
        self.lambda_depth = float(loss.get("lambda_depth", 10.0))
        self.lambda_tsdf = float(loss.get("lambda_tsdf", 0.01))
        self.lambda_color = float(loss.get("lambda_color", 0.1))
        self.depth_loss = loss.get("depth_loss_type", "smooth_l1")
        if self.depth_loss not in ("l1", "smooth_l1"):
            raise ValueError(f"{config.source}: loss.depth_loss_type must be 'l1' or 'smooth_l1'")

    def load_item(self, index: int, generator: torch.Generator) -> dict:
        mesh = self.data.tensors(self.names[index], "mesh")
        return {**super().load_item(index, generator), "mesh": (mesh["vertices"].float(), mesh["faces"].long())}

    def collate(self, items: List[dict]) -> dict:
        return {**super().collate(items), "meshes": [i["mesh"] for i in items]}

    def perceptual_terms(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """l1 + lambda_ssim D-SSIM (+ lambda_lpips LPIPS) of [B, 3, H, W] images (official ``_perceptual_loss``)."""
        total = losses.l1_loss(pred, target) + self.lambda_ssim * losses.dssim(pred, target)
        if self.perceptual is not None:
            total = total + self.lambda_lpips * self.perceptual(pred, target)
        return total

    def losses(self, models: Dict[str, nn.Module], batch: dict) -> Dict[str, torch.Tensor]:
        from ...render.mesh_raster import face_camera_normals, render_mesh_training
        meshes = models["decoder"](batch["latents"].to(self.device))
        terms = {"reg": torch.stack([m.reg_loss for m in meshes]).mean()}
        total = terms["reg"]
        # logged, not trained on: the share of empty meshes, which the loss counts only through the
        # regularisers (as official), so a run that drifts into emptiness shows it here
        terms["empty"] = torch.tensor(sum(not m.success for m in meshes) / len(meshes))
        views = self.views_per_sample
        item_cameras = [batch["cameras"][i * views:(i + 1) * views] for i in range(len(meshes))]
        targets, predictions, kept = [], [], []  # per item, each [V, ...]; kept: the non-empty meshes
        for i, (mesh, cameras) in enumerate(zip(meshes, item_cameras)):
            with torch.no_grad():
                vertices, faces = (t.to(self.device) for t in batch["meshes"][i])
                target = render_mesh_training(vertices, faces, cameras)
                target["normal"] = face_camera_normals(target["normal"], cameras)
            targets.append(target)
            if mesh.success:
                predictions.append(render_mesh_training(mesh.vertices, mesh.faces, cameras, mesh.vertex_attrs))
                kept.append(i)
        if self.lambda_tsdf > 0:
            tsdf = torch.stack([losses.mesh_tsdf_loss(m.tsdf_v, m.tsdf_s, m.res, t["depth"][v, 0], camera)
                                for m, t, cameras in zip(meshes, targets, item_cameras)
                                for v, camera in enumerate(cameras)]).mean()
            terms["tsdf"] = torch.where(torch.isfinite(tsdf), tsdf, torch.zeros_like(tsdf))  # no vertex near the surface
            total = total + self.lambda_tsdf * terms["tsdf"]
        if kept:
            pred = {k: torch.cat([p[k] for p in predictions]) for k in predictions[0]}
            target = {k: torch.cat([targets[i][k] for i in kept]) for k in ("mask", "depth", "normal")}
            mask = target["mask"]
            terms["mask"] = losses.l1_loss(pred["mask"], mask)
            if self.depth_loss == "smooth_l1":
                terms["depth"] = losses.smooth_l1_loss(pred["depth"] * mask, target["depth"] * mask,
                                                       beta=1.0 / (2 * meshes[kept[0]].res))
            else:
                terms["depth"] = losses.l1_loss(pred["depth"] * mask, target["depth"] * mask)
            terms["normal"] = self.perceptual_terms(pred["normal"] * mask, target["normal"] * mask)
            total = total + terms["mask"] + self.lambda_depth * terms["depth"] + terms["normal"]
            if self.lambda_color > 0 and "attrs" in pred:
                kept_views = [i * views + v for i in kept for v in range(views)]
                alpha = batch["alpha"][kept_views].to(self.device)[:, None]
                image = batch["image"][kept_views].to(self.device) * alpha
                terms["color"] = self.perceptual_terms(pred["attrs"][:, :3], image)
                terms["normal_map"] = self.perceptual_terms(pred["attrs"][:, 3:6], target["normal"] * mask)
                total = total + self.lambda_color * (terms["color"] + terms["normal_map"])
        terms["loss"] = total
        return terms
