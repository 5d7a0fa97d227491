"""Small shared helpers: atomic file writes, and the listing and checking of input files."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Optional


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None):
    """Yield a temporary path beside `path`; rename it onto `path` only if the block succeeds.

    A reader never sees a half-written file, and a crash leaves the previous file intact.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = path.suffix if suffix is None else suffix
    handle, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{suffix}", dir=path.parent)
    os.close(handle)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike):
    """Yield a temporary directory beside `path`; rename it onto `path` when the block succeeds.

    An existing directory at `path` is replaced only after the new one is complete.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_umask())
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def list_inputs(folder: str | os.PathLike, extensions: tuple[str, ...]) -> list[Path]:
    """Entries directly inside `folder` whose name ends in one of `extensions` (any case), sorted.

    Files, and also broken symbolic links, so that reading them reports the link rather than the
    entry vanishing from the count. Folders and hidden names (the temporary files of atomic
    writes and downloads in progress) are left out.
    """
    return sorted(p for p in Path(folder).iterdir()
                  if p.suffix.lower() in extensions and not p.name.startswith(".")
                  and (p.is_file() or (p.is_symlink() and not p.exists())))


def unreadable_reason(path: str | os.PathLike) -> Optional[str]:
    """Why `path` is no file to read, in a few words, or None when it is a non-empty file."""
    path = Path(path)
    if path.is_symlink() and not path.exists():
        return f"broken symbolic link (its target {os.readlink(path)} does not exist)"
    if not path.exists():
        return "file not found"
    if path.is_dir():
        return "is a folder, not a file"
    if path.stat().st_size == 0:
        return "empty file (0 bytes)"
    return None
