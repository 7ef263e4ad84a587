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

One Python process on the device, the *supervisor* (:data:`SUPERVISOR`, run as
``python -c SUPERVISOR`` with a one-line JSON spec on stdin: no path or argument is ever put
into a shell word), does everything a run needs in one command:

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
device-side code; :mod:`edgekit.targets.ssh` moves the bytes.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

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
# SUPERVISOR runs on the device as ``python -c SUPERVISOR``. It must *compile* with any
# Python (2.6 too), so that an old interpreter reaches the version check and says so: no
# f-strings, no keyword-only arguments, no nonlocal, no print(). Past the check it may use
# Python 3.6. tests/targets/test_ssh_cache.py checks both with vermin.

SUPERVISOR = r'''
import sys, os
def _err(text):
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:
        pass
if tuple(sys.version_info[:2]) < (%(major)d, %(minor)d):
    _err("\n%(python_mark)s" + ".".join([str(v) for v in sys.version_info[:3]]) + " " + str(sys.executable) + "\n")
    sys.exit(%(too_old)d)
import errno, hashlib, json, shutil, signal, time, traceback

def _vmstat_oom():
    try:
        with open("/proc/vmstat") as f:
            for line in f:
                if line.startswith("oom_kill "):
                    return int(line.split()[1])
    except Exception:
        pass
    return None

def _mem_limit():
    try:
        with open("/proc/self/cgroup") as f:
            lines = f.read().splitlines()
    except Exception:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        if "memory" in parts[1].split(","):
            path = "/sys/fs/cgroup/memory" + parts[2] + "/memory.limit_in_bytes"
        elif parts[0] == "0" and parts[1] == "":
            path = "/sys/fs/cgroup" + parts[2] + "/memory.max"
        else:
            continue
        try:
            with open(path) as f:
                value = f.read().strip()
            if value.isdigit():
                return int(value)
        except Exception:
            pass
    return None

def _mem_total_kib():
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1])
    except Exception:
        pass
    return None

def _sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while True:
            block = f.read(1 << 20)
            if not block:
                break
            digest.update(block)
    return digest.hexdigest()

def _drop_stale_parts(cache, digest):
    prefix = digest + "%(part_suffix)s"
    now = time.time()
    try:
        for name in os.listdir(cache):
            if name.startswith(prefix):
                path = os.path.join(cache, name)
                if now - os.stat(path).st_mtime > 600:
                    os.remove(path)
    except OSError:
        pass

def _setup_failed(doing, exc):
    _err("\n%(setup_mark)s" + json.dumps({"doing": doing, "errno": getattr(exc, "errno", None),
                                         "message": str(exc)}) + "\n")
    sys.exit(%(setup_failed)d)

def _link(src, dst):
    try:
        os.link(src, dst)
        return
    except OSError:
        pass
    try:
        os.symlink(src, dst)
        return
    except OSError:
        pass
    shutil.copyfile(src, dst)

def _run_child(runner, args, run_dir, site_dirs=()):
    try:
        fd = os.open(os.devnull, os.O_RDONLY)
        os.dup2(fd, 0)
        os.close(fd)
        sys.path[:] = [p for p in sys.path if p not in ("", ".", run_dir)]
        # runtimes installed by `edgekit provision` come first, as PYTHONPATH would put them
        sys.path[:0] = [d for d in (os.path.expanduser(d) for d in site_dirs) if os.path.isdir(d)]
        sys.argv[:] = [runner] + list(args)
        import runpy
        runpy.run_path(runner, run_name="__main__")
        code = 0
    except SystemExit as exc:
        if exc.code is None:
            code = 0
        elif isinstance(exc.code, int):
            code = exc.code
        else:
            _err(str(exc.code) + "\n")
            code = 1
    except BaseException:
        _err(traceback.format_exc())
        code = 1
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    finally:
        os._exit(code & 255)

def _parts(cache, digests, idle_s):
    """The largest unfinished transfer of each digest nobody wrote to for idle_s: {digest: [name, size]}."""
    found = {}
    now = time.time()
    try:
        names = os.listdir(cache)
    except OSError:
        return found
    for name in names:
        digest, sep, _ = name.partition("%(part_suffix)s")
        if sep and digest in digests:
            try:
                st = os.stat(os.path.join(cache, name))
            except OSError:
                continue
            size = st.st_size
            if now - st.st_mtime < idle_s:
                continue  # another deploy may still be writing it
            if digest not in found or size > found[digest][1]:
                found[digest] = [name, size]
    return found

def _cache_bad(cache, bad, verified, idle_s):
    report = {"bad": bad, "parts": _parts(cache, bad, idle_s), "verified": verified, "cache": cache}
    _err("\n%(cache_mark)s" + json.dumps(report) + "\n")
    return %(cache_bad)d

def _blocks(fetch):
    """result.json and the small fetched files, framed: (bytes, {name: size or None})."""
    out = []
    sizes = {}
    budget = %(inline_max)d
    for name in ["result.json"] + list(fetch):
        try:
            size = os.path.getsize(name)
        except OSError:
            sizes[name] = None
            continue
        sizes[name] = size
        if size > budget:
            continue
        try:
            with open(name, "rb") as f:
                body = f.read()
        except OSError:
            continue
        budget -= len(body)
        header = "\n%(block_mark)s" + str(len(body)) + " " + json.dumps(name) + "\n"
        out.append(header.encode("utf-8") + body)
    return b"".join(out), sizes

def main():
    spec = json.loads(sys.stdin.buffer.readline().decode("utf-8"))
    if spec.get("mode") == "check":
        _err("\n%(python_mark)s" + ".".join([str(v) for v in sys.version_info[:3]]) + " ok\n")
        return 0
    cache = os.path.abspath(spec["cache"])
    run_dir = os.path.abspath(spec["run_dir"])
    try:
        if not os.path.isdir(cache):
            os.makedirs(cache, 0o700)
    except OSError as exc:
        if not os.path.isdir(cache):
            _setup_failed("creating the cache " + cache, exc)
    bad = {}
    verified = []
    for digest, part in spec.get("verify", []):
        path = os.path.join(cache, part) if part else os.path.join(cache, digest)
        if part and not os.path.exists(path):
            part, path = None, os.path.join(cache, digest)  # finished meanwhile (by another run)?
        try:
            found = _sha256(path)
        except (IOError, OSError):
            bad[digest] = "missing"
            continue
        if found != digest:
            bad[digest] = "corrupt"
            try:
                os.remove(path)
            except OSError:
                pass
            continue
        if part:
            try:
                os.chmod(path, 0o400)
                os.rename(path, os.path.join(cache, digest))
            except OSError as exc:
                _setup_failed("storing a verified file in the cache", exc)
            _drop_stale_parts(cache, digest)
        verified.append(digest)
    if bad:
        return _cache_bad(cache, bad, verified, spec.get("resume_idle_s", 10))
    try:
        os.mkdir(run_dir, 0o700)
    except OSError as exc:
        if exc.errno != errno.EEXIST:
            _setup_failed("creating the run directory", exc)
    try:
        os.chmod(run_dir, 0o700)
        os.chdir(run_dir)
        if spec.get("job") is not None:
            with open("job.json", "w") as f:
                json.dump(spec["job"], f, indent=1)
        for name, digest in spec.get("link", []):
            src = os.path.join(cache, digest)
            if not os.path.isfile(src):
                bad[digest] = "missing"
                continue
            dst = os.path.join(run_dir, name)
            parent = os.path.dirname(dst)
            if not os.path.isdir(parent):
                os.makedirs(parent, 0o700)
            _link(src, dst)
    except OSError as exc:
        _setup_failed("preparing the run directory", exc)
    if bad:
        return _cache_bad(cache, bad, verified, spec.get("resume_idle_s", 10))
    runner = os.path.join(run_dir, spec["runner"])
    args = list(spec.get("args") or []) + [run_dir]
    oom0 = _vmstat_oom()
    sys.stdout.flush()
    sys.stderr.flush()
    started = time.time()
    pid = os.fork()
    if pid == 0:
        _run_child(runner, args, run_dir, spec.get("site_dirs") or [])
    try:
        with open("%(pids)s", "w") as f:
            f.write("%%d %%d\n" %% (os.getpid(), pid))
    except OSError:
        pass
    while True:
        try:
            _, status, usage = os.wait4(pid, 0)
            break
        except InterruptedError:
            continue
    if os.WIFSIGNALED(status):
        rc = 128 + os.WTERMSIG(status)
    else:
        rc = os.WEXITSTATUS(status)
    memtotal = _mem_total_kib()
    info = {"rc": rc, "runner_s": round(time.time() - started, 6), "signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
            "peak_kib": usage.ru_maxrss, "oom0": oom0, "oom1": _vmstat_oom(),
            "memlimit": _mem_limit(), "memtotal_kib": memtotal, "verified": verified,
            "python": ".".join([str(v) for v in sys.version_info[:3]]),
            "home": os.path.expanduser("~"), "run_dir": run_dir, "cache": cache}
    try:
        with open("%(status)s", "w") as f:
            json.dump(info, f)
    except OSError:
        pass
    try:
        body, sizes = _blocks(spec.get("fetch") or [])
    except Exception:
        body, sizes = b"", {}
    info["files"] = sizes
    try:
        sys.stdout.flush()
        sys.stdout.buffer.write(b"\n%(blocks_mark)s\n" + body + b"\n%(status_mark)s" +
                                json.dumps(info).encode("utf-8") + b"\n")
        sys.stdout.flush()
    except Exception:
        pass
    _err("\n%(end_mark)s\n")  # everything the runner wrote to stderr came before this line
    if spec.get("await_cleanup"):
        # the host fetches what it needs, then says "rm"; on EOF (the link dropped) the run
        # directory stays for the host to collect after reconnecting
        try:
            order = sys.stdin.buffer.readline()
        except Exception:
            order = b""
        if order.strip() == b"rm":
            os.chdir("/")
            try:
                shutil.rmtree(run_dir)
                _err("\n%(cleaned_mark)sok\n")
            except OSError as exc:
                _err("\n%(cleaned_mark)sfailed " + str(exc) + "\n")
    return rc

if __name__ == "__main__":
    sys.exit(main())
''' % {
    "major": MIN_PYTHON[0], "minor": MIN_PYTHON[1], "too_old": EXIT_PYTHON_TOO_OLD,
    "cache_bad": EXIT_CACHE_BAD, "setup_failed": EXIT_SETUP_FAILED, "pids": PIDS_NAME,
    "status": STATUS_NAME, "inline_max": INLINE_MAX, "python_mark": PYTHON_MARK,
    "cache_mark": CACHE_MARK, "setup_mark": SETUP_MARK, "status_mark": STATUS_MARK,
    "part_suffix": PART_SUFFIX, "block_mark": BLOCK_MARK, "blocks_mark": BLOCKS_MARK, "cleaned_mark": CLEANED_MARK,
    "end_mark": END_MARK,
}

__all__ = [
    "CACHE_DIR_NAME",
    "MIN_PYTHON",
    "PART_SUFFIX",
    "SUPERVISOR",
    "TransferStats",
    "file_digest",
    "is_digest",
]
