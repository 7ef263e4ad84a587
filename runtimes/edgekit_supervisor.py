"""edgekit supervisor: prepare one run in the device's cache, run the runner, report, clean up.

Run by the host as ``python -c <this file> <protocol JSON>`` with the run's spec as one JSON
line on stdin (edgekit/targets/cache.py builds both: ``supervisor_argv()``, the module
docstring there describes the five steps). argv[1], the *protocol*, holds the constants this
file shares with the host: the Python floor, exit codes, marker lines, file names, the inline
budget. Nothing is generated into this file; no path or argument is put into a shell word.

Rules for this file (it is sent to devices as it is):
* One file, standard library only. It never imports edgekit (nor numpy: it runs before the
  runner and must work where nothing is installed).
* It must *compile* with any Python (2.6 too), so that an old interpreter reaches the version
  check below and says so: no f-strings, no keyword-only arguments, no nonlocal, no print().
  Past the check it may use Python 3.6 (no walrus, no dataclasses, no ``from __future__``
  imports, no subprocess capture_output/text). Checked by ``vermin`` in
  tests/runtimes/test_device_programs.py and tests/targets/test_ssh_cache.py.
"""
import sys, os
def _err(text):
    try:
        sys.stderr.write(text)
        sys.stderr.flush()
    except Exception:
        pass
try:
    import json
    PROTOCOL = json.loads(sys.argv[1])
except Exception:
    _err("edgekit supervisor: argv[1] must be the protocol (JSON)\n")
    sys.exit(2)
if tuple(sys.version_info[:2]) < tuple(PROTOCOL["min_python"]):
    _err("\n" + PROTOCOL["python_mark"] + ".".join([str(v) for v in sys.version_info[:3]]) + " " + str(sys.executable) + "\n")
    sys.exit(PROTOCOL["too_old"])
import errno, hashlib, shutil, signal, time, traceback

def _proc_number(path, key):
    """The number after key on the first line of a /proc file that starts with it; None when unreadable."""
    try:
        with open(path) as f:
            for line in f:
                if line.startswith(key):
                    return int(line.split()[1])
    except Exception:
        pass
    return None

def _vmstat_oom():
    return _proc_number("/proc/vmstat", "oom_kill ")

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
    return _proc_number("/proc/meminfo", "MemTotal:")

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
    prefix = digest + PROTOCOL["part_suffix"]
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
    _err("\n" + PROTOCOL["setup_mark"] + json.dumps({"doing": doing, "errno": getattr(exc, "errno", None),
                                         "message": str(exc)}) + "\n")
    sys.exit(PROTOCOL["setup_failed"])

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
        digest, sep, _ = name.partition(PROTOCOL["part_suffix"])
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
    _err("\n" + PROTOCOL["cache_mark"] + json.dumps(report) + "\n")
    return PROTOCOL["cache_bad"]

def _blocks(fetch):
    """result.json and the small fetched files, framed: (bytes, {name: size or None})."""
    out = []
    sizes = {}
    budget = PROTOCOL["inline_max"]
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
        header = "\n" + PROTOCOL["block_mark"] + str(len(body)) + " " + json.dumps(name) + "\n"
        out.append(header.encode("utf-8") + body)
    return b"".join(out), sizes

def main():
    # one pass through the steps of a run, in order (see edgekit/targets/cache.py): longer than
    # 80 lines because each step is a few lines and splitting them would scatter the exits
    spec = json.loads(sys.stdin.buffer.readline().decode("utf-8"))
    if spec.get("mode") == "check":
        _err("\n" + PROTOCOL["python_mark"] + ".".join([str(v) for v in sys.version_info[:3]]) + " ok\n")
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
        with open(PROTOCOL["pids"], "w") as f:
            f.write("%d %d\n" % (os.getpid(), pid))
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
        with open(PROTOCOL["status"], "w") as f:
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
        sys.stdout.buffer.write(b"\n" + PROTOCOL["blocks_mark"].encode("ascii") + b"\n" + body + b"\n" + PROTOCOL["status_mark"].encode("ascii") +
                                json.dumps(info).encode("utf-8") + b"\n")
        sys.stdout.flush()
    except Exception:
        pass
    _err("\n" + PROTOCOL["end_mark"] + "\n")  # everything the runner wrote to stderr came before this line
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
                _err("\n" + PROTOCOL["cleaned_mark"] + "ok\n")
            except OSError as exc:
                _err("\n" + PROTOCOL["cleaned_mark"] + "failed " + str(exc) + "\n")
    return rc

if __name__ == "__main__":
    sys.exit(main())
