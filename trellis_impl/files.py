"""Writing output files safely: never over an existing file unless asked, never a partial file."""
from __future__ import annotations

import os
import uuid
from typing import Union

PathLike = Union[str, os.PathLike]

__all__ = ["write_new_file"]


def write_new_file(path: PathLike, data: bytes, overwrite: bool = False) -> str:
    """Write ``data`` to ``path`` atomically and return the path.

    The bytes go to a temporary file in the same directory first. Without ``overwrite`` the
    temporary file is hard-linked to ``path``, which fails if ``path`` exists, even when another
    process creates it meanwhile; with ``overwrite`` it replaces ``path``. On any error the
    temporary file is removed, so no partial output is left.

    Raises:
        FileExistsError: ``path`` exists and ``overwrite`` is False.
        PermissionError / OSError: the directory is not writable, the disk is full, ...
    """
    path = os.fspath(path)
    if not overwrite and os.path.lexists(path):
        raise FileExistsError(f"refusing to overwrite existing file {path!r}")
    directory, filename = os.path.split(os.path.abspath(path))
    temporary = os.path.join(directory, f".{filename}.{uuid.uuid4().hex}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with os.fdopen(descriptor, "wb") as file:
            file.write(data)
        if overwrite:
            os.replace(temporary, path)
        else:
            try:
                os.link(temporary, path)
            except FileExistsError:
                raise FileExistsError(f"refusing to overwrite existing file {path!r}") from None
            except OSError:  # file systems without hard links: the pre-check above has to do
                if os.path.lexists(path):
                    raise FileExistsError(f"refusing to overwrite existing file {path!r}") from None
                os.replace(temporary, path)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return path
