"""The device-side content-addressed cache of an SSH target, and the supervisor that uses it.

Layout on the device (``workdir`` is the target's, ``~/.cache/edgekit`` by default)::

    <workdir>/cache/<sha256>        a verified file (mode 0400): the runner, a model, an .npz
    <workdir>/cache/<sha256>.part-<token>   a transfer in progress (one per writer; resumed
                                            after a dropped link)
    <workdir>/edgekit-run-<uuid>/   one run: hard links into the cache + job.json + results

A file is pushed only when ``cache/<sha256>`` is missing or corrupt; it is written to
``<sha256>.part-<token>`` and becomes ``<sha256>`` only after the device has hashed it and
found the digest it was pushed under (an atomic ``rename``). A cache entry that existed before
is hashed again the first time a target (one deploy) uses it, so a file corrupted on the
device is found, removed and pushed again: the device never runs a cache entry this target
has not verified.

One Python process on the device, the *supervisor* (``runtimes/edgekit_supervisor.py``, loaded
as :data:`SUPERVISOR` and run as ``python -c SUPERVISOR PROTOCOL`` (:func:`supervisor_argv`)
with a one-line JSON spec on stdin: no path or argument is ever put into a shell word), does
everything a run needs in one command:

1. refuses a Python older than the runner's floor (:data:`MIN_PYTHON`), before anything else;
2. creates the cache folder (0700) if needed, hashes the files the host asks it to verify,
   renames verified parts into place (and drops other writers' parts of the same file idle
   for 10 minutes), removes corrupt files, and reports the missing and corrupt ones with any
   unfinished transfer of them idle for ``resume_idle_s`` (exit :data:`EXIT_CACHE_BAD`): the
   host pushes those and runs it again;
3. creates the run directory (mode 0700), writes ``job.json``, links the cache entries in
   under their job names (hard link, else symlink, else copy);
4. forks the runner (``runpy`` in the child, so no second interpreter start), waits with
   ``os.wait4`` and so knows the child's peak RSS even when the kernel's OOM killer ended it,
   reads the ``oom_kill`` counter of ``/proc/vmstat`` before and after, the cgroup's memory
   limit and ``MemTotal``;
5. prints ``result.json`` and the files to fetch (when small) and a status line on stdout
   (:func:`split_blocks` reads them), keeps the status in ``.edgekit-status`` too (for a host
   that lost the connection), then waits for the host to fetch what it needs and say ``rm``
   on stdin: it removes the run directory then, so a run needs no second command. On EOF
   instead of ``rm`` (the link dropped), the directory stays for the host to collect after
   reconnecting.

This module has no paramiko import: it holds the host-side digests, the statistics and the
supervisor's protocol; :mod:`edgekit.targets.ssh` moves the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edgekit.resources import SUPERVISOR_NAME, program_text

CACHE_DIR_NAME = "cache"
PART_SUFFIX = ".part-"  # + the writer's token
STATUS_NAME = ".edgekit-status"
PIDS_NAME = ".edgekit-pids"
MIN_PYTHON = (3, 6)  # the runner's floor: runtimes/edgekit_runner.py, "Python >= 3.6"
INLINE_MAX = 2 << 20  # result.json and fetched files come back on stdout up to this total

EXIT_PYTHON_TOO_OLD = 121
EXIT_CACHE_BAD = 122
EXIT_SETUP_FAILED = 123

STATUS_MARK = "@@edgekit-status "
BLOCKS_MARK = "@@edgekit-blocks"  # then BLOCK_MARK frames: result.json and small fetched files
BLOCK_MARK = "@@edgekit-file "
PYTHON_MARK = "@@edgekit-python "
CACHE_MARK = "@@edgekit-cache "
SETUP_MARK = "@@edgekit-setup "
CLEANED_MARK = "@@edgekit-cleaned "
END_MARK = "@@edgekit-end"

_SHA256_HEX = frozenset("0123456789abcdef")


def is_digest(name: str) -> bool:
    """True for a cache entry name: 64 lower-case hex digits."""
    return len(name) == 64 and set(name) <= _SHA256_HEX


# ---------------------------------------------------------------------------- host side

_digests: dict[tuple[str, int, int, int], str] = {}
_digests_lock = threading.Lock()


def file_digest(path: str | os.PathLike[str]) -> tuple[str, int]:
    """``(sha256 hex, size)`` of a local file, remembered while the file is unchanged.

    Keyed by real path, size, mtime and inode, so a deploy's three jobs and a fleet's devices
    hash an artifact once. Thread-safe.
    """
    real = os.path.realpath(path)
    st = os.stat(real)
    key = (real, st.st_size, st.st_mtime_ns, st.st_ino)
    with _digests_lock:
        known = _digests.get(key)
    if known is not None:
        return known, st.st_size
    digest = hashlib.sha256()
    with open(real, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    value = digest.hexdigest()
    with _digests_lock:
        if len(_digests) > 4096:
            _digests.clear()
        _digests[key] = value
    return value, st.st_size


@dataclass
class TransferStats:
    """What a target moved over its connection(s); cumulative, and per run in ``RunResult``."""

    connections: int = 0  # SSH connections opened (1 per deploy unless the link dropped)
    reconnects: int = 0
    runs: int = 0
    bytes_pushed: int = 0  # file bytes sent into the device's cache
    files_pushed: int = 0
    bytes_resumed: int = 0  # bytes of interrupted transfers that did not have to be sent again
    files_cached: int = 0  # files a run needed that were already in the device's cache
    bytes_cached: int = 0
    bytes_fetched: int = 0  # result files brought back (outputs.npz, ...), not result.json
    corrupt_entries: int = 0  # cache entries or transfers whose sha256 did not match
    runner_s: float = 0.0  # wall time of the runner processes on the device (fork to exit)

    def to_dict(self) -> dict[str, float]:
        return asdict(self)

    def minus(self, before: "TransferStats") -> "TransferStats":
        return TransferStats(**{k: v - getattr(before, k) for k, v in asdict(self).items()})

    def copy(self) -> "TransferStats":
        return TransferStats(**asdict(self))


def parse_marker_json(text: str, mark: str) -> Any:
    """The JSON after the last ``mark`` on its own line in ``text``, or None."""
    index = text.rfind(mark)
    if index < 0:
        return None
    line = text[index + len(mark):].split("\n", 1)[0]
    try:
        return json.loads(line)
    except ValueError:
        return None


def strip_markers(text: str) -> str:
    """``text`` without the supervisor's marker lines (what a user should see)."""
    marks = (STATUS_MARK, PYTHON_MARK, CACHE_MARK, SETUP_MARK, CLEANED_MARK, END_MARK)
    return "\n".join(line for line in text.splitlines() if not line.startswith(marks)).strip("\n")


def split_blocks(stdout: bytes) -> tuple[bytes, dict[str, bytes], dict[str, Any] | None]:
    """Split the supervisor's stdout: ``(the runner's own stdout, {name: bytes}, status or None)``.

    After the runner exits the supervisor prints ``@@edgekit-blocks``, then one frame per file
    it sends back inline (``@@edgekit-file <size> <json name>`` + the bytes: result.json and
    small fetched files), then its status line. A truncated frame is dropped (the host reads
    that file by SFTP instead).
    """
    info = None
    status_at = stdout.rfind(b"\n" + STATUS_MARK.encode("ascii"))
    if status_at >= 0:
        line = stdout[status_at + 1 + len(STATUS_MARK):].split(b"\n", 1)[0]
        try:
            parsed = json.loads(line.decode("utf-8", "replace"))
            info = parsed if isinstance(parsed, dict) else None
        except ValueError:
            info = None
        stdout = stdout[:status_at]
    mark = b"\n" + BLOCKS_MARK.encode("ascii") + b"\n"
    start = stdout.rfind(mark)
    if start < 0:
        return stdout, {}, info
    human, pos, files = stdout[:start], start + len(mark), {}
    frame = b"\n" + BLOCK_MARK.encode("ascii")
    while stdout.startswith(frame, pos):
        header_end = stdout.find(b"\n", pos + 1)
        if header_end < 0:
            break
        size_text, _, name_text = stdout[pos + len(frame):header_end].decode("utf-8", "replace").partition(" ")
        try:
            size, name = int(size_text), json.loads(name_text)
        except ValueError:
            break
        body = stdout[header_end + 1:header_end + 1 + size]
        if size < 0 or len(body) != size or not isinstance(name, str):
            break
        files[name] = body
        pos = header_end + 1 + size
    return human, files, info


def read_local(path: Path, offset: int = 0, chunk: int = 1 << 20):  # noqa: ANN201 - a generator
    """Chunks of a local file from ``offset``."""
    with open(path, "rb") as handle:
        handle.seek(offset)
        for block in iter(lambda: handle.read(chunk), b""):
            yield block


# ---------------------------------------------------------------------------- device side
#
# The supervisor is runtimes/edgekit_supervisor.py (its rules are written at its top: it must
# compile with any Python so that an old one reaches the version check). The constants above
# that it shares are passed to it as data, argv[1], never written into its code.

SUPERVISOR = program_text(SUPERVISOR_NAME)


def supervisor_protocol() -> dict[str, Any]:
    """The constants the supervisor shares with this module (its argv[1], as JSON)."""
    return {
        "min_python": list(MIN_PYTHON), "too_old": EXIT_PYTHON_TOO_OLD, "cache_bad": EXIT_CACHE_BAD,
        "setup_failed": EXIT_SETUP_FAILED, "pids": PIDS_NAME, "status": STATUS_NAME,
        "inline_max": INLINE_MAX, "part_suffix": PART_SUFFIX, "python_mark": PYTHON_MARK,
        "cache_mark": CACHE_MARK, "setup_mark": SETUP_MARK, "status_mark": STATUS_MARK,
        "block_mark": BLOCK_MARK, "blocks_mark": BLOCKS_MARK, "cleaned_mark": CLEANED_MARK,
        "end_mark": END_MARK,
    }


def supervisor_argv() -> list[str]:
    """What follows the device's python command to start the supervisor (unquoted words)."""
    return ["-c", SUPERVISOR, json.dumps(supervisor_protocol(), separators=(",", ":"))]


__all__ = [
    "CACHE_DIR_NAME",
    "MIN_PYTHON",
    "PART_SUFFIX",
    "SUPERVISOR",
    "supervisor_argv",
    "TransferStats",
    "file_digest",
    "is_digest",
]
