"""MDT-dist few-step flows: a distilled folder from a base folder and the authors' weight files,
sampled with the authors' schedule (Euler, CFG 3.0 at every step, rescale_t 1.0, 1-4 steps)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from trellis_impl import cli
from trellis_impl.pipelines.distilled import write_distilled_folder
from trellis_impl.pipelines.generation import Noise, TrellisPipeline
from trellis_impl.pipelines.model_folder import ModelFolder, ModelFolderError
from trellis_impl.pipelines.random_folder import RANDOM_COND_CHANNELS, write_random_model_folder


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    return write_random_model_folder(tmp_path_factory.mktemp("models") / "TRELLIS-random")


def _shifted(state: dict, amount: float) -> dict:
    """A 'distilled' state dict: the base weights moved, so the tests can tell which ones loaded."""
    return {k: (v.float() + amount).to(v.dtype) if v.is_floating_point() else v for k, v in state.items()}


@pytest.fixture(scope="module")
def weights(base, tmp_path_factory):
    """Files as a training run leaves them: the structure flow as a DDP-prefixed EMA torch checkpoint,
    the latent flow as safetensors, and an unrelated checkpoint that fits neither flow."""
    folder = ModelFolder(base)
    out = tmp_path_factory.mktemp("mdt-dist")
    ss = _shifted(folder.model("sparse_structure_flow_model").state_dict(), 0.01)
    torch.save({"ema": {f"module.{k}": v for k, v in ss.items()}, "step": torch.tensor(10000)},
               out / "ss_flow_denoiser_ema0.9999_step0010000.pt")
    slat = _shifted(folder.model("slat_flow_model").state_dict(), 0.02)
    save_file({k: v.contiguous() for k, v in slat.items()}, str(out / "slat_flow_img_dit_L_64l8p2_fp16.safetensors"))
    decoder = folder.model("slat_decoder_gs").state_dict()
    save_file({k: v.contiguous() for k, v in decoder.items()}, str(out / "unrelated.safetensors"))
    return out, ss, slat


def _reference_cfg_euler(model, x, cond, neg, steps, cfg, rescale_t, sigma_min=1e-5):
    """The authors' sampler written out: t_i = i/steps rescaled, v = (1+w) v(cond) - w v(neg) at
    every step, x <- x - (t - t_prev) v."""
    seq = torch.linspace(1, 0, steps + 1)
    seq = rescale_t * seq / (1 + (rescale_t - 1) * seq)
    for t, t_prev in zip(seq[:-1].tolist(), seq[1:].tolist()):
        tt = torch.full((x.shape[0],), 1000 * t)
        v = (1 + cfg) * model(x, tt, cond) - cfg * model(x, tt, neg)
        x = x - (t - t_prev) * v
    return x


class Recorder(torch.nn.Module):
    """Records (t, condition is the negative one) per model call."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls = model, []
        self.resolution, self.in_channels = model.resolution, model.in_channels

    def forward(self, x, t, cond):
        for i in range(x.shape[0]):
            self.calls.append((round(float(t[i]), 3), bool((cond[i] == 0).all())))
        return self.model(x, t, cond)


def test_distilled_folder_loads_their_weights_and_keeps_the_base_decoders(base, weights, tmp_path):
    source, ss, slat = weights
    out = write_distilled_folder(base, source, tmp_path / "TRELLIS-mdt-dist", steps=2)
    folder = ModelFolder(out)
    for key, expected in (("sparse_structure_flow_model", ss), ("slat_flow_model", slat)):
        loaded = folder.model(key).state_dict()
        assert all(torch.equal(loaded[k].float(), expected[k].float()) for k in expected), key
    base_folder = ModelFolder(base)
    for key in ("sparse_structure_decoder", "slat_decoder_gs", "slat_decoder_mesh", "slat_decoder_rf"):
        assert folder.checkpoint_path(key).resolve() == base_folder.checkpoint_path(key).resolve()
    assert (out / "dinov2" / "config.json").is_file()  # the base's own encoder comes along
    config = json.loads((out / "pipeline.json").read_text())
    for stage in ("sparse_structure_sampler", "slat_sampler"):
        assert config["args"][stage] == {"name": "FlowEulerCfgSampler", "args": {"sigma_min": 1e-5},
                                         "params": {"steps": 2, "cfg_strength": 3.0, "rescale_t": 1.0}}
    assert config["args"]["slat_normalization"] == base_folder.args["slat_normalization"]


@pytest.mark.parametrize("steps", [1, 2])
@pytest.mark.parametrize("batch_cfg", [False, True])
def test_distilled_schedule_is_the_authors(base, weights, tmp_path, steps, batch_cfg):
    out = write_distilled_folder(base, weights[0], tmp_path / "distilled", steps=steps)
    folder = ModelFolder(out)
    flow = folder.model("sparse_structure_flow_model")
    recorder = Recorder(flow)
    folder._models["sparse_structure_flow_model"] = recorder
    cond = torch.randn(1, 5, RANDOM_COND_CHANNELS["image"], generator=torch.Generator().manual_seed(3))
    neg = torch.zeros_like(cond)
    structure = TrellisPipeline(folder, batch_cfg=batch_cfg).sample_structure({"cond": cond, "neg_cond": neg},
                                                                              Noise(7))
    times = [1000.0 * (1 - i / steps) for i in range(steps)]
    assert sorted(recorder.calls) == sorted((t, neg_call) for t in times for neg_call in (False, True))
    noise = torch.randn(structure.noise_shape, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        expected = _reference_cfg_euler(flow, noise, cond, neg, steps, cfg=3.0, rescale_t=1.0)
    torch.testing.assert_close(structure.latent, expected, rtol=1e-4, atol=1e-4)


def test_bad_inputs_are_refused_and_leave_nothing(base, weights, tmp_path):
    source, _, _ = weights
    with pytest.raises(ValueError, match="steps must be one of"):
        write_distilled_folder(base, source, tmp_path / "a", steps=25)
    only_one = tmp_path / "only_slat"
    only_one.mkdir()
    (only_one / "slat.safetensors").write_bytes((source / "slat_flow_img_dit_L_64l8p2_fp16.safetensors").read_bytes())
    with pytest.raises(ModelFolderError, match="no file fits the sparse_structure_flow_model"):
        write_distilled_folder(base, only_one, tmp_path / "b")
    with pytest.raises(ModelFolderError, match="does not exist"):
        write_distilled_folder(base, tmp_path / "missing", tmp_path / "c")
    existing = tmp_path / "existing"
    existing.mkdir()
    with pytest.raises(ModelFolderError, match="already exists"):
        write_distilled_folder(base, source, existing)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["existing", "only_slat"]


def test_cli_writes_the_folder_and_the_nodes_interval_is_accepted(base, weights, tmp_path, capsys):
    out = tmp_path / "TRELLIS-mdt-dist"
    assert cli.run(["distilled-folder", str(base), str(weights[0]), "--out", str(out), "--steps", "1"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    folder = ModelFolder(out)
    cond = torch.randn(1, 5, RANDOM_COND_CHANNELS["image"], generator=torch.Generator().manual_seed(3))
    # The nodes always pass a CFG interval; the all-steps sampler takes it.
    params = {"steps": 1, "cfg_strength": 3.0, "cfg_interval": [0.0, 1.0], "rescale_t": 1.0}
    structure = TrellisPipeline(folder).sample_structure({"cond": cond, "neg_cond": torch.zeros_like(cond)},
                                                         Noise(1), params=params)
    assert structure.latent.shape[0] == 1 and torch.isfinite(structure.latent).all()
    with pytest.raises(ValueError, match="give the distilled weights"):
        cli.run(["distilled-folder", str(base), "--out", str(tmp_path / "x")])
