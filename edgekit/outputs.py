"""Output paths checked before any work starts, so a run never ends by losing its results.

A path that cannot be written (its folder is a file, it names a folder where a file is wanted,
or the nearest existing folder is not writable) is a ``UsageError`` up front. Missing folders are
not created here: the writer creates them when it writes, so a run that fails leaves nothing
behind.

Every file edgekit writes for a reader (manifests, reports, state) goes through the one atomic
writer here (``write_text_atomic``, ``write_json_atomic``): a temporary file beside the target,
then a rename.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

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


def write_text_atomic(path: str | os.PathLike[str], text: str) -> Path:
    """Write ``text`` to ``path`` (its folders made) through a temporary file beside it and a rename,
    so no reader ever sees half a file and a failure leaves none behind.

    The temporary name is unique (writers in several threads or processes never share one) and
    the file gets the usual permissions (the umask's), like any file the user's tools write.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(6)}.partial")
    try:
        with open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_json_atomic(path: str | os.PathLike[str], data: Any, *, sort_keys: bool = False) -> Path:
    """Write ``data`` as indented JSON (and a final newline) with :func:`write_text_atomic`.

    Paths, numpy and torch scalars, numpy arrays and pydantic models are written as their JSON
    values; anything else that JSON cannot hold is a TypeError.
    """
    return write_text_atomic(path, json.dumps(data, indent=2, sort_keys=sort_keys, default=json_default) + "\n")


def json_default(value: Any) -> Any:
    """``json.dumps(default=...)`` for the values edgekit's manifests and reports hold."""
    if isinstance(value, Path):
        return str(value)
    if hasattr(value, "tolist") and getattr(value, "ndim", 0):  # an array (numpy), not a scalar
        return value.tolist()
    if hasattr(value, "item"):  # numpy and torch scalars
        return value.item()
    if hasattr(value, "model_dump"):
        return value.model_dump()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")


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


__all__ = ["check_output_dir", "check_output_file", "json_default", "missing_folders", "publish_files",
           "remove_folders", "write_json_atomic", "write_text_atomic"]
