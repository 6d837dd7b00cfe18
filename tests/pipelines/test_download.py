"""The download path, tested against local folders: huggingface_hub.snapshot_download is replaced
by a copy from a local source, so no test touches a hub."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

huggingface_hub = pytest.importorskip("huggingface_hub")

from trellis_impl.pipelines import ModelFolderError, open_model_folder, write_random_model_folder  # noqa: E402
from trellis_impl.pipelines.encoders import image_encoder_path  # noqa: E402


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A local stand-in for the hub: repo id -> folder."""
    root = tmp_path_factory.mktemp("hub")
    image = write_random_model_folder(root / "image")
    shutil.move(str(image / "dinov2"), str(root / "dinov2"))  # the encoder is its own repository
    return {"microsoft/TRELLIS-image-large": image, "facebook/dinov2-with-registers-large": root / "dinov2"}


@pytest.fixture
def fake_snapshot_download(hub, monkeypatch):
    calls = []

    def snapshot_download(repo_id, local_dir, allow_patterns):
        calls.append((repo_id, Path(local_dir), list(allow_patterns)))
        if repo_id not in hub:
            raise OSError(f"offline: cannot reach the hub for {repo_id}")
        shutil.copytree(hub[repo_id], local_dir, dirs_exist_ok=True)
        return local_dir

    monkeypatch.setattr(huggingface_hub, "snapshot_download", snapshot_download)
    return calls


def test_known_repository_downloads_into_the_models_dir(tmp_path, fake_snapshot_download):
    with pytest.raises(ModelFolderError, match="download it there"):
        open_model_folder("microsoft/TRELLIS-image-large", tmp_path)
    folder = open_model_folder("microsoft/TRELLIS-image-large", tmp_path, download=True)
    assert folder.path == tmp_path / "TRELLIS-image-large" and not folder.missing_files()
    repo, target, patterns = fake_snapshot_download[0]
    assert (repo, target) == ("microsoft/TRELLIS-image-large", tmp_path / "TRELLIS-image-large")
    assert patterns == ["pipeline.json", "ckpts/*"]
    # complete on disk: opened without another download
    open_model_folder("microsoft/TRELLIS-image-large", tmp_path, download=True)
    assert len(fake_snapshot_download) == 1


def test_missing_encoder_downloads_beside_the_model_folder(tmp_path, fake_snapshot_download):
    folder = open_model_folder("microsoft/TRELLIS-image-large", tmp_path, download=True)
    shutil.rmtree(folder.path / "dinov2", ignore_errors=True)
    with pytest.raises(ModelFolderError, match="DINOv2 weights not found"):
        image_encoder_path(folder)
    assert image_encoder_path(folder, download=True) == tmp_path / "dinov2-with-registers-large"
    assert fake_snapshot_download[-1][0] == "facebook/dinov2-with-registers-large"


def test_offline_download_says_what_is_missing_and_where(tmp_path, fake_snapshot_download):
    with pytest.raises(ModelFolderError, match=r"could not download microsoft/TRELLIS-text-large .*Put pipeline.json"):
        open_model_folder("microsoft/TRELLIS-text-large", tmp_path, download=True)
    with pytest.raises(ModelFolderError, match="not a known repository"):
        open_model_folder("someone/else", tmp_path, download=True)


def test_names_are_looked_up_in_every_models_dir(tmp_path, fake_snapshot_download):
    """The command line and the ComfyUI loader share this lookup: several roots in order, the first
    one taking downloads; a known repository or a plain folder name found under any of them."""
    first, second = tmp_path / "first", tmp_path / "second"
    folder = open_model_folder("microsoft/TRELLIS-image-large", [first, second], download=True)
    assert folder.path == first / "TRELLIS-image-large"
    second.mkdir()
    shutil.move(str(folder.path), str(second / "TRELLIS-image-large"))
    for name in ("microsoft/TRELLIS-image-large", "TRELLIS-image-large"):
        assert open_model_folder(name, [first, second]).path == second / "TRELLIS-image-large"
    assert len(fake_snapshot_download) == 1  # found, not downloaded again
    with pytest.raises(ModelFolderError, match="not a folder under"):
        open_model_folder("TRELLIS-other", [first, second])
