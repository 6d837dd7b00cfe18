"""write_new_file: no overwrite unless asked, no partial files, clear errors."""
from __future__ import annotations

import os

import pytest

from trellis_impl.files import write_new_file


def test_writes_new_file_and_refuses_existing(tmp_path):
    path = tmp_path / "a.bin"
    assert write_new_file(path, b"one") == str(path)
    with pytest.raises(FileExistsError, match="a.bin"):
        write_new_file(path, b"two")
    assert path.read_bytes() == b"one"
    write_new_file(path, b"three", overwrite=True)
    assert path.read_bytes() == b"three"
    assert os.listdir(tmp_path) == ["a.bin"]


def test_unwritable_directory_raises_and_leaves_nothing(tmp_path, monkeypatch):
    import trellis_impl.files as files_module

    def refuse(*args, **kwargs):  # what a read-only directory does (root would bypass a chmod)
        raise PermissionError(13, "Permission denied", str(args[0]))

    monkeypatch.setattr(files_module.os, "open", refuse)
    with pytest.raises(PermissionError):
        write_new_file(tmp_path / "x.bin", b"data")
    assert os.listdir(tmp_path) == []


def test_failure_while_writing_removes_the_temporary_file(tmp_path, monkeypatch):
    import trellis_impl.files as files_module

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(files_module.os, "link", fail)
    monkeypatch.setattr(files_module.os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_new_file(tmp_path / "x.bin", b"data")
    assert os.listdir(tmp_path) == []


def test_library_imports_itself_only_relatively():
    """Inside ComfyUI the pack is imported under a mangled name with its folder off sys.path, so an
    absolute ``trellis_impl`` import in the library would fail there."""
    import re
    from pathlib import Path
    root = Path(__file__).resolve().parents[1]
    offenders = [f"{p.relative_to(root)}:{i + 1}" for p in sorted((root / "trellis_impl").rglob("*.py"))
                 for i, line in enumerate(p.read_text().splitlines())
                 if re.match(r"\s*(from|import)\s+trellis_impl\b", line)]
    offenders += [f"{p.relative_to(root)}:{i + 1}" for p in sorted((root / "nodes").rglob("*.py"))
                  for i, line in enumerate(p.read_text().splitlines())
                  if re.match(r"\s*(from|import)\s+(trellis_impl|nodes)\b", line)]
    assert offenders == []
