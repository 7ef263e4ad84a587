"""Output paths checked before any work starts, so a run never ends by losing its results.

A path that cannot be written (its folder is a file, it names a folder where a file is wanted,
or the nearest existing folder is not writable) is a ``UsageError`` up front. Missing folders are
not created here: the writer creates them when it writes, so a run that fails leaves nothing
behind.
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from edgekit.errors import UsageError


def check_output_file(path: str | os.PathLike[str], what: str, example: str = "out") -> Path:
    """``path`` as a Path, after checking a file can be written there (``what`` names the flag;
    ``example`` is a file name the hint suggests)."""
    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{what} {path} is a folder, not a file", f"name a file, e.g. {path / example}")
    if path.exists() and not os.access(path, os.W_OK):
        raise UsageError(f"{what} {path} is not writable", "choose a file you can write")
    _check_creatable(path.parent, what, path)
    return path


def check_output_dir(path: str | os.PathLike[str], what: str) -> Path:
    """``path`` as a Path, after checking it is, or can be made, a writable folder."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise UsageError(f"{what} {path} is a file, not a folder", "choose a folder (it is created if missing)")
    _check_creatable(path, what, path)
    return path


def _check_creatable(folder: Path, what: str, target: Path) -> None:
    existing = _nearest_existing(folder)
    if not existing.is_dir():
        raise UsageError(f"{what} {target}: {existing} is a file, so no folder can be made there",
                         "choose a path under an existing folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UsageError(f"{what} {target}: cannot write in {existing}", "choose a folder you can write to")


def _nearest_existing(path: Path) -> Path:
    path = path if path.is_absolute() else Path.cwd() / path
    while not path.exists() and path.parent != path:
        path = path.parent
    return path


def missing_folders(path: str | os.PathLike[str]) -> list[Path]:
    """The folders ``mkdir(parents=True)`` would create for ``path``, outermost first."""
    path = Path(path)
    path = path if path.is_absolute() else Path.cwd() / path
    missing = []
    while not path.exists() and path.parent != path:
        missing.append(path)
        path = path.parent
    return missing[::-1]


def remove_folders(created: list[Path]) -> None:
    """Remove the folders of ``missing_folders`` again, innermost first, where they are empty."""
    for folder in reversed(created):
        with contextlib.suppress(OSError):
            folder.rmdir()


def write_text_atomic(path: Path, text: str) -> Path:
    """Write ``text`` to ``path`` (its folders made) through a temporary name and a rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.partial")
    try:
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def publish_files(files: list[Path], out_dir: Path) -> list[Path]:
    """Copy ``files`` into ``out_dir`` (made if missing), each through a temporary name and a rename."""
    if not files:
        return []
    out_dir.mkdir(parents=True, exist_ok=True)
    published = []
    for src in files:
        dest = out_dir / src.name
        tmp = out_dir / f".{src.name}.partial"
        try:
            shutil.copy2(src, tmp)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        published.append(dest)
    return published


__all__ = ["check_output_dir", "check_output_file", "missing_folders", "publish_files", "remove_folders",
           "write_text_atomic"]
