"""How much of an object's kind the demo model's image encoder tells the flows (docs/demo_model.md).

A linear probe (multinomial logistic regression, L-BFGS) on the encoder's condition tokens (the CLS
token beside the mean patch token, as ``encode_image`` gives them for the official 518 px crop) of
procedural objects' conditioning views: fitted on training-split objects, scored on held-out ones.
Beside it, for scale: the same ViT with random weights, and the distillation teacher
(EfficientNet-Lite0: its pooled head beside its mean stride-16 feature).

Then whether its patch tokens tell where the object is, which the structure flow has to follow: a
linear probe per patch token (logistic regression) of "more than half of this 14 px patch is the
object" on the same kind of views, cropped as the flows' training crops them (``condition_image``),
scored on held-out objects' patches (accuracy and the IoU of the predicted inside against the true).

    python scripts/demo_vit_probe.py trellis_impl/demo_model [--per-kind 6] [--held-per-kind 3] [--views 3]
"""
from __future__ import annotations

import argparse
import sys
import zlib
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trellis_impl.conditioning import encode_image, load_dinov2  # noqa: E402
from trellis_impl.conditioning.image_preprocess import preprocess_image  # noqa: E402
from trellis_impl.encoding.albedo import render_albedo, to_rgba8  # noqa: E402
from trellis_impl.training.prepare import conditioning_cameras  # noqa: E402
from trellis_impl.evaluation import textured_procedural_object  # noqa: E402
from trellis_impl.training.procedural import OBJECT_KINDS, object_name, object_plan  # noqa: E402
from trellis_impl.training.stages.flows import condition_image  # noqa: E402

KINDS = list(OBJECT_KINDS)


def rendered_views(split: str, per_kind: int, views: int):
    """[(kind, uint8 RGBA render [256, 256, 4])] of ``per_kind`` objects of every kind, ``views`` each."""
    out = []
    for kind, seed in object_plan(per_kind * len(KINDS), split=split):
        mesh = textured_procedural_object(kind, seed).normalized()
        cameras = conditioning_cameras(views, seed=zlib.crc32(object_name(kind, seed).encode()) % 1000, resolution=256)
        out += [(kind, rgba) for rgba in to_rgba8(render_albedo(mesh, cameras, 1, torch.device("cpu")))]
    return out


def condition_views(split: str, per_kind: int, views: int):
    """[(kind index, 518 px condition image)] of ``per_kind`` objects of every kind, ``views`` each."""
    return [(KINDS.index(kind), preprocess_image(Image.fromarray(rgba, "RGBA")))
            for kind, rgba in rendered_views(split, per_kind, views)]


@torch.no_grad()
def patch_silhouettes(model, split: str, per_kind: int, views: int):
    """Patch tokens [P, C] of the training crops of the views and whether each patch is mostly object [P]."""
    tokens, inside = [], []
    grid = 518 // model.config.patch_size
    for _, rgba in rendered_views(split, per_kind, views):
        rgba = torch.from_numpy(rgba)
        white = rgba.clone()
        white[..., :3] = 255
        alpha = condition_image(white)[0]  # the crop's alpha (RGB times alpha on white)
        tokens.append(encode_image(model, condition_image(rgba)[None])[0, -grid * grid:])
        inside.append(torch.nn.functional.adaptive_avg_pool2d(alpha[None, None], grid).flatten() > 0.5)
    return torch.cat(tokens), torch.cat(inside).long()


@torch.no_grad()
def vit_features(model, data) -> torch.Tensor:
    tokens = torch.cat([encode_image(model, [image for _, image in data[i:i + 16]]) for i in range(0, len(data), 16)])
    registers = 1 + model.config.num_register_tokens
    return torch.cat([tokens[:, 0], tokens[:, registers:].mean(1)], 1)


@torch.no_grad()
def teacher_vectors(data) -> torch.Tensor:
    from trellis_impl.training.teachers import load_efficientnet_lite0, teacher_features
    teacher = load_efficientnet_lite0()
    pixels = torch.stack([torch.tensor(np.asarray(image)).permute(2, 0, 1).float() / 255 for _, image in data])
    maps, pooled = zip(*[teacher_features(teacher, pixels[i:i + 16]) for i in range(0, len(pixels), 16)])
    return torch.cat([torch.cat(pooled), torch.cat(maps).mean((2, 3))], 1)


def linear_probe(train_x, train_y, test_x, classes: int = len(KINDS)) -> torch.Tensor:
    """Multinomial logistic regression (L-BFGS, L2) fitted on ``train_x`` -> ``train_y``; the
    predicted classes of ``test_x``."""
    mean, std = train_x.mean(0), train_x.std(0) + 1e-6
    train_x, test_x = (train_x - mean) / std, (test_x - mean) / std
    weight = torch.zeros(train_x.shape[1], classes, requires_grad=True)
    bias = torch.zeros(classes, requires_grad=True)
    optimizer = torch.optim.LBFGS([weight, bias], max_iter=200)

    def closure():
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(train_x @ weight + bias, train_y) + 1e-2 * weight.pow(2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return (test_x @ weight + bias).argmax(1)


def probe_accuracy(train_x, train_y, test_x, test_y) -> float:
    return float((linear_probe(train_x, train_y, test_x) == test_y).float().mean())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", type=Path, help="a model folder with dinov2/")
    parser.add_argument("--per-kind", type=int, default=6, help="training-split objects per kind")
    parser.add_argument("--held-per-kind", type=int, default=3, help="held-out objects per kind")
    parser.add_argument("--views", type=int, default=3, help="conditioning views per object")
    args = parser.parse_args()
    train, test = condition_views("train", args.per_kind, args.views), condition_views("held_out", args.held_per_kind, args.views)
    train_y, test_y = torch.tensor([k for k, _ in train]), torch.tensor([k for k, _ in test])
    print(f"{len(train)} training views, {len(test)} held-out views, {len(KINDS)} kinds (chance {1 / len(KINDS):.3f})")
    vit = load_dinov2(str(args.model / "dinov2"), device="cpu")
    random_vit = load_dinov2(str(args.model / "dinov2"), device="cpu")
    torch.manual_seed(0)
    for module in random_vit.modules():
        if isinstance(module, torch.nn.Linear):
            torch.nn.init.trunc_normal_(module.weight, std=0.02)
            torch.nn.init.zeros_(module.bias)
    for name, features in (("the folder's ViT", lambda d: vit_features(vit, d)),
                           ("the same ViT, random weights", lambda d: vit_features(random_vit, d)),
                           ("the teacher, EfficientNet-Lite0", teacher_vectors)):
        print(f"{name}: held-out kind accuracy {probe_accuracy(features(train), train_y, features(test), test_y):.3f}")
    for name, model in (("the folder's ViT", vit), ("the same ViT, random weights", random_vit)):
        (train_x, train_y), (test_x, test_y) = (patch_silhouettes(model, split, n, args.views) for split, n in
                                                (("train", args.per_kind), ("held_out", args.held_per_kind)))
        predicted, truth = linear_probe(train_x, train_y, test_x, classes=2).bool(), test_y.bool()
        print(f"{name}: held-out patches inside the object, accuracy {float((predicted == truth).float().mean()):.4f} "
              f"(all 'outside': {1 - float(truth.float().mean()):.4f}), IoU {float((predicted & truth).sum() / (predicted | truth).sum()):.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
