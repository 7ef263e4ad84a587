"""Emulated edge devices: a Debian root filesystem of the device's architecture, run under
qemu-user (binfmt_misc), reached over real SSH on 127.0.0.1.

What it reproduces, and what not (``docs/emulator.md``):

* the device's CPU architecture (aarch64 binaries run under ``qemu-aarch64``), its OS release,
  its Python and its distro numpy, a non-root login user (``pi``) with a real home directory,
  OpenSSH + SFTP exactly as the device runs them, and the profile's memory size (cgroup v1
  ``memory`` controller, when this host has it);
* **not** its speed: qemu-user runs code hundreds of times slower than the device, so latency is
  meaningless (the runner reports ``emulated_by: "qemu"`` and the report says so); not its
  core count, governor, temperature or throttling.

Layout under the cache (``~/.cache/edgekit/emulators``, or ``$EDGEKIT_EMULATOR_CACHE``)::

    images/<distro>-<release>-<arch>-<hash>/rootfs      the base root filesystem (built once)
    images/<...>/image.json                              how and when it was built, versions
    instances/<name>/state.json                          pid, port, paths (status/stop use it)
    instances/<name>/{upper,work,merged}                 overlayfs: the device's own changes
    instances/<name>/etc/                                sshd_config + host key (bind-mounted)
    instances/<name>/id_ed25519{,.pub}, known_hosts, ssh_config, sshd.log
    ssh_config                                           every running device's ``Host edgekit-<name>``:
                                                         edgekit's SSH target reads it (``--host
                                                         edgekit-pi4``); ``Include`` it for OpenSSH

A running device is ``unshare --mount --pid --fork --kill-child`` → the guest's own
``/usr/sbin/sshd -D`` as PID 1 of a new PID namespace, chrooted into the overlay. Every mount
lives in that private mount namespace, so nothing leaks onto the host, and stopping the
``unshare`` process kills every process of the device (sessions, runners, qemu) at once.

Starting needs root (chroot, mounts, binfmt_misc, cgroups); ``status`` does not.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

from edgekit.errors import MissingDependencyError, TargetError, UsageError
from edgekit.outputs import write_json_atomic, write_text_atomic
from edgekit.resources import IMAGE_VERSIONS_NAME, NAMESPACE_SCRIPT_NAME, program_text

CACHE_ENV = "EDGEKIT_EMULATOR_CACHE"
MIRROR_ENV = "EDGEKIT_DEBIAN_MIRROR"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
RECIPE_VERSION = 1  # bump when the image recipe changes: a new image key, a fresh build
LOOPBACK = "127.0.0.1"
BINFMT_DIR = Path("/proc/sys/fs/binfmt_misc")
CGROUP_V1_MEMORY = Path("/sys/fs/cgroup/memory")
MARKER = "edgekit-emulator"
DEFAULT_READY_TIMEOUT_S = 180.0
APT_HINT = "apt-get install -y qemu-user-static mmdebstrap arch-test"

# Debian architecture -> (qemu-user name, `uname -m` in the guest)
ARCHES = {
    "arm64": ("aarch64", "aarch64"),
    "armhf": ("arm", "armv7l"),
    "armel": ("arm", "armv7l"),
    "riscv64": ("riscv64", "riscv64"),
}
# Debian releases mmdebstrap can build from Debian's mirror -> their python3 (major.minor)
DEBIAN_PYTHON = {"bullseye": "3.9", "bookworm": "3.11", "trixie": "3.13"}
# Packages of every image: the device's python + distro numpy, SSH + SFTP, user tools
BASE_PACKAGES = (
    "python3",
    "python3-numpy",
    "python3-venv",
    "openssh-server",
    "openssh-sftp-server",
    "passwd",
)
DEVICE_UID = 1000

Progress = Callable[[str], None]


# ------------------------------------------------------------------------------------ errors


class EmulatorError(TargetError):
    """The emulated device could not be built or started (exit code 5)."""


class EmulatorUnsupportedError(UsageError):
    """The profile's OS cannot be emulated here (e.g. Ubuntu 18.04 for jetson-nano)."""


class NeedsRootError(UsageError):
    """Building or starting an emulated device needs root."""


# ------------------------------------------------------------------------------------ paths


def cache_dir() -> Path:
    """``$EDGEKIT_EMULATOR_CACHE`` or ``~/.cache/edgekit/emulators`` (honours ``XDG_CACHE_HOME``)."""
    env = os.environ.get(CACHE_ENV)
    if env:
        return Path(os.path.expanduser(env)).resolve()
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return (base / "edgekit" / "emulators").resolve()


def _instances_dir() -> Path:
    return cache_dir() / "instances"


def _images_dir() -> Path:
    return cache_dir() / "images"


def include_file() -> Path:
    """The ssh config file of all running emulated devices: edgekit's SSH target reads it (see
    ``edgekit.targets.sshconfig``); OpenSSH users ``Include`` it from ~/.ssh/config."""
    return cache_dir() / "ssh_config"


_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def _check_name(name: str) -> str:
    if not _NAME_RE.match(name or ""):
        raise UsageError(
            f"bad emulator name {name!r}",
            "use lower-case letters, digits, '.', '_' or '-' (it names a folder and a cgroup)",
        )
    return name


# ------------------------------------------------------------------------------------ image spec


@dataclass(frozen=True)
class ImageSpec:
    """What to build: one root filesystem per (distro, release, arch, user, packages)."""

    distro: str
    release: str
    arch: str  # Debian architecture name
    user: str
    packages: tuple[str, ...] = BASE_PACKAGES
    mirror: str = DEFAULT_MIRROR

    @property
    def qemu_arch(self) -> str:
        return ARCHES[self.arch][0]

    @property
    def machine(self) -> str:
        return ARCHES[self.arch][1]

    @property
    def key(self) -> str:
        recipe = json.dumps(
            [RECIPE_VERSION, self.distro, self.release, self.arch, self.user, sorted(self.packages)]
        )
        return f"{self.distro}-{self.release}-{self.arch}-{hashlib.sha256(recipe.encode()).hexdigest()[:10]}"

    @property
    def directory(self) -> Path:
        return _images_dir() / self.key

    @property
    def rootfs(self) -> Path:
        return self.directory / "rootfs"

    @property
    def meta_path(self) -> Path:
        return self.directory / "image.json"


def _profile(device: Any, profile_files: Any = ()) -> Any:
    if isinstance(device, str):
        from edgekit.devices import get

        return get(device, profile_files)
    return device


def image_spec(device: Any, profile_files: Any = ()) -> ImageSpec:
    """The image for a device profile (a name or a ``DeviceProfile``); raises when unsupported."""
    profile = _profile(device, profile_files)
    emu = profile.emulator
    if emu is None:
        raise EmulatorUnsupportedError(
            f"the profile {profile.name!r} has no `emulator:` section, so edgekit does not know which OS to build",
            "add e.g. `emulator: {distro: debian, release: bookworm, arch: arm64}` to the profile",
        )
    if emu.distro != "debian":
        raise EmulatorUnsupportedError(
            f"{profile.name} runs {profile.os} ({emu.distro} {emu.release}, Python {profile.python}); "
            f"edgekit builds emulated devices with mmdebstrap from Debian's mirror only, and {emu.distro}'s "
            f"{emu.arch} packages are not on it",
            "test this device over SSH on the real board (edgekit deploy --host ...); "
            "or emulate a Debian-based profile such as pi4",
        )
    if emu.arch not in ARCHES:
        raise EmulatorUnsupportedError(
            f"{profile.name}: architecture {emu.arch!r} cannot be emulated",
            f"edgekit knows {', '.join(sorted(ARCHES))}",
        )
    if emu.release not in DEBIAN_PYTHON:
        raise EmulatorUnsupportedError(
            f"{profile.name}: Debian release {emu.release!r} is not one edgekit can build",
            f"use one of {', '.join(DEBIAN_PYTHON)}",
        )
    return ImageSpec(
        distro=emu.distro,
        release=emu.release,
        arch=emu.arch,
        user=profile.ssh.user,
        mirror=os.environ.get(MIRROR_ENV) or DEFAULT_MIRROR,
    )


def _python_mismatch(profile: Any, release: str) -> str | None:
    want = ".".join(profile.python.split(".")[:2])
    have = DEBIAN_PYTHON.get(release)
    if have and want != have:
        return f"the profile says Python {profile.python}, Debian {release} has Python {have}"
    return None


# ------------------------------------------------------------------------------------ host checks


def _which(name: str) -> str | None:
    path = os.environ.get("PATH", "") + ":/usr/local/sbin:/usr/sbin:/sbin"
    return shutil.which(name, path=path)


def require_root(doing: str = "starting an emulated device") -> None:
    if os.geteuid() != 0:
        raise NeedsRootError(
            f"{doing} needs root (chroot, mounts, binfmt_misc and cgroups); you are uid {os.geteuid()}",
            "run it as root, e.g. `sudo edgekit emulator start pi4`; without root use "
            "`edgekit deploy --emulate` (this host under the profile's limits) or a real device",
        )


def _require_tools(*names: str) -> dict[str, str]:
    found: dict[str, str] = {}
    missing = []
    for name in names:
        path = _which(name)
        if path is None:
            missing.append(name)
        else:
            found[name] = path
    if missing:
        raise MissingDependencyError(
            f"the emulated device needs {', '.join(missing)}, which {'is' if len(missing) == 1 else 'are'} not installed",
            APT_HINT + " (and util-linux for unshare/mount)",
        )
    return found


def _binfmt_conf(qemu_arch: str) -> Path | None:
    for folder in ("/etc/binfmt.d", "/usr/lib/binfmt.d", "/lib/binfmt.d"):
        path = Path(folder) / f"qemu-{qemu_arch}.conf"
        if path.is_file():
            return path
    return None


def binfmt_status(qemu_arch: str = "aarch64") -> dict[str, Any]:
    """Whether ``qemu-<arch>`` is registered with binfmt_misc, and how (no root needed)."""
    entry = BINFMT_DIR / f"qemu-{qemu_arch}"
    info: dict[str, Any] = {"mounted": (BINFMT_DIR / "register").exists(), "registered": False,
                            "enabled": False, "interpreter": None, "flags": ""}
    try:
        text = entry.read_text()
    except OSError:
        return info
    info["registered"] = True
    info["enabled"] = text.splitlines()[0].strip() == "enabled" if text else False
    for line in text.splitlines():
        if line.startswith("interpreter "):
            info["interpreter"] = line.split(" ", 1)[1].strip()
        elif line.startswith("flags:"):
            info["flags"] = line.split(":", 1)[1].strip()
    return info


def ensure_binfmt(qemu_arch: str = "aarch64") -> dict[str, Any]:
    """Mount binfmt_misc and register qemu-user for ``qemu_arch`` (flag F, so chroots work).

    A host-wide setting: it is left registered afterwards (like systemd-binfmt does at boot).
    """
    require_root("registering qemu-user with binfmt_misc")
    if not (BINFMT_DIR / "register").exists():
        try:
            subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT_DIR)],
                           check=True, capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            detail = getattr(exc, "stderr", "") or str(exc)
            raise EmulatorError(f"cannot mount binfmt_misc at {BINFMT_DIR}: {detail.strip()}",
                                "a container needs --privileged for qemu-user emulation") from None
    info = binfmt_status(qemu_arch)
    if not info["registered"]:
        conf = _binfmt_conf(qemu_arch)
        if conf is None:
            raise MissingDependencyError(f"qemu-user for {qemu_arch} is not installed (no binfmt.d/qemu-{qemu_arch}.conf)",
                                         APT_HINT)
        line = next((ln.strip() for ln in conf.read_text().splitlines()
                     if ln.strip() and not ln.lstrip().startswith(("#", ";"))), "")
        try:
            (BINFMT_DIR / "register").write_text(line)
        except OSError as exc:
            if exc.errno != errno.EEXIST:
                raise EmulatorError(f"cannot register qemu-{qemu_arch} with binfmt_misc: {exc}") from None
        info = binfmt_status(qemu_arch)
    elif not info["enabled"]:
        (BINFMT_DIR / f"qemu-{qemu_arch}").write_text("1")
        info = binfmt_status(qemu_arch)
    if "F" not in info["flags"]:
        raise EmulatorError(
            f"qemu-{qemu_arch} is registered with binfmt_misc without the F (fix binary) flag, so it cannot run "
            "inside a chroot",
            f"re-register it: echo -1 > {BINFMT_DIR}/qemu-{qemu_arch}, then rerun (edgekit registers it with F)",
        )
    interpreter = info["interpreter"]
    if interpreter and not Path(interpreter).exists():
        raise MissingDependencyError(f"the registered qemu interpreter {interpreter} is missing", APT_HINT)
    return info


# ------------------------------------------------------------------------------------ image build


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """An exclusive lock (between processes) on ``path``; waits for another builder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def image_info(spec: ImageSpec) -> dict[str, Any] | None:
    """The built image's ``image.json`` (None when it is not built)."""
    meta = _read_json(spec.meta_path)
    if meta is None or not (spec.rootfs / "usr" / "bin").is_dir():
        return None
    return meta


def _run_logged(argv: list[str], log: Path, say: Progress, what: str, timeout: float) -> None:
    """Run ``argv``, appending its output to ``log``; progress lines for mmdebstrap's ``I:``."""
    with open(log, "a") as handle:
        handle.write(f"$ {' '.join(argv)}\n")
        handle.flush()
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                stdin=subprocess.DEVNULL, errors="replace")
        assert proc.stdout is not None
        deadline = time.monotonic() + timeout
        tail: list[str] = []
        timed_out = False
        try:
            for line in proc.stdout:
                handle.write(line)
                tail = (tail + [line.rstrip()])[-25:]
                if line.startswith("I: ") and "automatically" not in line:
                    say(f"{what}: {line[3:].strip()}")
                if time.monotonic() > deadline:
                    timed_out = True
                    proc.kill()
                    break
            code = proc.wait(timeout=max(1.0, deadline - time.monotonic()) if not timed_out else 30)
        except BaseException:
            proc.kill()
            proc.wait()
            raise
    if code != 0 or timed_out:
        why = f"timed out after {timeout:g} s" if timed_out else f"exited with status {code}"
        raise EmulatorError(
            f"{what} failed ({argv[0]} {why}); last output:\n" + "\n".join(tail[-12:]),
            f"full log: {log}. Check that apt can reach {DEFAULT_MIRROR} (or set {MIRROR_ENV})",
        )


def _chroot(rootfs: Path, *argv: str, timeout: float = 300) -> str:
    proc = subprocess.run(["chroot", str(rootfs), *argv], capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL, errors="replace")
    if proc.returncode != 0:
        raise EmulatorError(f"`{' '.join(argv)}` in the emulated root filesystem failed "
                            f"(status {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-500:]}")
    return proc.stdout


# What the built root filesystem has (runtimes/image_versions.py), run there by chroot.
_VERSIONS_SCRIPT = program_text(IMAGE_VERSIONS_NAME)


def build_image(spec: ImageSpec, *, rebuild: bool = False, progress: Progress | None = None,
                timeout: float = 3600) -> dict[str, Any]:
    """Build the root filesystem once (cached); returns its ``image.json``. Needs root."""
    say = progress or (lambda _msg: None)
    require_root("building an emulated device's root filesystem")
    with _locked(_images_dir() / f"{spec.key}.lock"):
        meta = image_info(spec)
        if meta is not None and not rebuild:
            return meta
        users = [s for s in list_states() if s.image_key == spec.key and is_running(s)]
        if users and rebuild:
            raise UsageError(f"the image {spec.key} is in use by running emulator(s) "
                             f"{', '.join(s.name for s in users)}", "stop them first (edgekit emulator stop NAME)")
        tools = _require_tools("mmdebstrap", "chroot", "unshare", "mount")
        ensure_binfmt(spec.qemu_arch)
        spec.directory.mkdir(parents=True, exist_ok=True)
        for leftover in spec.directory.glob("rootfs.partial-*"):
            shutil.rmtree(leftover, ignore_errors=True)
        partial = spec.directory / f"rootfs.partial-{os.getpid()}"
        log = spec.directory / "build.log"
        log.write_text("")
        started = time.monotonic()
        say(f"building a Debian {spec.release} {spec.arch} root filesystem (once; a few minutes) in {spec.directory}")
        argv = [
            tools["mmdebstrap"], f"--arch={spec.arch}", "--variant=apt", "--mode=root",
            "--dpkgopt=force-unsafe-io",
            "--dpkgopt=path-exclude=/usr/share/man/*",
            "--dpkgopt=path-exclude=/usr/share/locale/*",
            "--dpkgopt=path-exclude=/usr/share/doc/*",
            "--dpkgopt=path-include=/usr/share/doc/*/copyright",
            f"--include={','.join(spec.packages)}",
            spec.release, str(partial), spec.mirror,
        ]
        try:
            _run_logged(argv, log, say, "mmdebstrap", timeout)
            say(f"creating the user {spec.user!r}")
            _customize(partial, spec)
            versions = json.loads(_chroot(partial, "/usr/bin/python3", "-c", _VERSIONS_SCRIPT).strip().splitlines()[-1])
        except BaseException:
            shutil.rmtree(partial, ignore_errors=True)
            raise
        if spec.rootfs.exists():
            old = spec.directory / f"rootfs.old-{os.getpid()}"
            spec.rootfs.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        partial.rename(spec.rootfs)
        meta = {
            "key": spec.key,
            "distro": spec.distro,
            "release": spec.release,
            "arch": spec.arch,
            "user": spec.user,
            "packages": list(spec.packages),
            "mirror": spec.mirror,
            "recipe_version": RECIPE_VERSION,
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_seconds": round(time.monotonic() - started, 1),
            "size_mib": _du_mib(spec.rootfs),
            **versions,
        }
        write_json_atomic(spec.meta_path, meta, sort_keys=True)
        say(f"root filesystem ready in {meta['build_seconds']:.0f} s ({meta['size_mib']} MiB): "
            f"Python {versions['python']}, numpy {versions['numpy']}")
        return meta


def _customize(rootfs: Path, spec: ImageSpec) -> None:
    """The device user (uid 1000, key login only), /etc/edgekit, no host keys baked in."""
    _chroot(rootfs, "/usr/sbin/useradd", "--create-home", "--uid", str(DEVICE_UID), "--user-group",
            "--shell", "/bin/bash", spec.user)
    # '*': no password, but not locked ('!'), so sshd (UsePAM no) lets the key in
    _chroot(rootfs, "/usr/sbin/usermod", "-p", "*", spec.user)
    (rootfs / "etc" / "edgekit").mkdir(mode=0o755, exist_ok=True)
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()  # each instance gets its own host key (instances/<name>/etc)
    (rootfs / "etc" / "hostname").write_text(f"edgekit-{spec.release}-{spec.arch}\n")


def _du_mib(path: Path) -> int:
    try:
        out = subprocess.run(["du", "-sm", "--one-file-system", str(path)], capture_output=True, text=True,
                             timeout=120).stdout
        return int(out.split()[0])
    except (OSError, ValueError, IndexError, subprocess.SubprocessError):
        return 0


# ------------------------------------------------------------------------------------ state


@dataclass
class EmulatorState:
    """A started emulated device, as recorded in ``instances/<name>/state.json``."""

    name: str
    device: str
    image_key: str
    base_rootfs: str
    instance_dir: str
    mode: str  # "overlay" (the device's changes in upper/) | "copy" (a full copy in rootfs/)
    pid: int
    port: int
    user: str
    key_file: str
    known_hosts: str
    ssh_config: str
    alias: str
    log: str
    started_at: float
    machine: str
    python: str | None = None
    numpy: str | None = None
    memory_limit_mib: int | None = None
    cgroup: str | None = None
    qemu_cpu: str | None = None  # QEMU_CPU of every process in the device
    notes: list[str] = field(default_factory=list)
    host: str = LOOPBACK

    @property
    def address(self) -> str:
        """``user@127.0.0.1:port``: what ``--host`` takes."""
        return f"{self.user}@{self.host}:{self.port}"

    def ssh_options(self) -> dict[str, Any]:
        """``DeployOptions.ssh`` / ``SSHTarget`` keyword arguments for this device."""
        return {"key_filename": self.key_file, "known_hosts": self.known_hosts}

    def cli_args(self) -> str:
        """The SSH flags of ``edgekit deploy|doctor|provision`` for this device: its alias.

        edgekit resolves it from the ssh_config it wrote (``include_file()``): user, port, key
        file, and the known_hosts file holding the host key edgekit made for the device.
        """
        return f"--host {self.alias}"

    def cli_args_explicit(self) -> str:
        """The same without the alias, for a shell whose edgekit cache is another one."""
        return f"--host {self.address} --known-hosts {self.known_hosts} -i {self.key_file}"

    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["address"] = self.address
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "EmulatorState":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _instance_dir(name: str) -> Path:
    return _instances_dir() / _check_name(name)


def _state_path(name: str) -> Path:
    return _instance_dir(name) / "state.json"


def load_state(name: str) -> EmulatorState | None:
    """The recorded state of ``name`` (running or not), or None when never started."""
    data = _read_json(_state_path(name))
    if data is None:
        return None
    try:
        return EmulatorState.from_dict(data)
    except TypeError:
        return None


def list_states() -> list[EmulatorState]:
    states = []
    root = _instances_dir()
    if root.is_dir():
        for path in sorted(root.glob("*/state.json")):
            state = load_state(path.parent.name)
            if state is not None:
                states.append(state)
    return states


def _pid_is_ours(pid: int, name: str) -> bool:
    """The process ``pid`` is the ``unshare`` of emulator ``name`` (not a recycled pid)."""
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return f"{MARKER}:{name}".encode() in cmdline.split(b"\0")


def _pid_alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def is_running(state: EmulatorState) -> bool:
    """The recorded process still runs (does not check that sshd answers: see ``ssh_ready``)."""
    return _pid_alive(state.pid) and _pid_is_ours(state.pid, state.name)


def ssh_ready(host: str, port: int, timeout: float = 2.0) -> bool:
    """An SSH server greets on ``host:port``."""
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            return sock.recv(64).startswith(b"SSH-")
    except OSError:
        return False


def status(name: str) -> dict[str, Any]:
    """What ``edgekit emulator status NAME`` shows: the state plus ``running``/``ssh_ready``."""
    state = load_state(name)
    if state is None:
        return {"name": name, "running": False, "known": False}
    running = is_running(state)
    data = state.to_dict() | {"known": True, "running": running,
                              "ssh_ready": running and ssh_ready(state.host, state.port)}
    if running:
        data["uptime_s"] = round(time.time() - state.started_at, 1)
    return data


def status_all() -> list[dict[str, Any]]:
    return [status(s.name) for s in list_states()]


# ------------------------------------------------------------------------------------ keys & files


def _ed25519_keypair(private_path: Path, comment: str) -> str:
    """An OpenSSH ed25519 key pair at ``private_path`` (0600) and ``.pub``; the public line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode('ascii')} {comment}"
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(private)
    os.chmod(private_path, 0o600)
    Path(f"{private_path}.pub").write_text(line + "\n")
    return line


def _ensure_keypair(private_path: Path, comment: str) -> str:
    pub = Path(f"{private_path}.pub")
    if private_path.is_file() and pub.is_file():
        return pub.read_text().strip()
    return _ed25519_keypair(private_path, comment)


def _sshd_config(port: int, user: str, device: str, qemu_cpu: str | None = None,
                 openssh: tuple[int, int] = (9, 2)) -> str:
    env = ""
    if qemu_cpu:  # every session's processes run under qemu-user emulating the device's CPU
        env = (f"SetEnv QEMU_CPU={qemu_cpu}\n" if openssh >= (8, 7)
               else "PermitUserEnvironment QEMU_CPU\n")  # older sshd: ~/.ssh/environment
    return f"""# written by edgekit for the emulated {device}; regenerated at every start
Port {port}
ListenAddress {LOOPBACK}
HostKey /etc/edgekit/ssh_host_ed25519_key
PidFile none
UsePAM no
PermitRootLogin no
AllowUsers {user}
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AuthorizedKeysFile .ssh/authorized_keys
UseDNS no
PrintMotd no
MaxStartups 64:30:128
MaxSessions 32
AcceptEnv LANG LC_*
Subsystem sftp /usr/lib/openssh/sftp-server
""" + env


def _host_config_entry(state: EmulatorState) -> str:
    return (
        f"# emulated {state.device} (edgekit emulator {state.name})\n"
        f"Host {state.alias}\n"
        f"    HostName {state.host}\n"
        f"    Port {state.port}\n"
        f"    User {state.user}\n"
        f"    IdentityFile {state.key_file}\n"
        f"    IdentitiesOnly yes\n"
        f"    UserKnownHostsFile {state.known_hosts}\n"
        f"    StrictHostKeyChecking yes\n"
    )


def _write_include_file() -> None:
    """Rewrite the cache's ``ssh_config`` with one entry per running emulated device."""
    entries = [_host_config_entry(s) for s in list_states() if is_running(s)]
    header = ("# Written by edgekit: one Host entry per running emulated device.\n"
              f"# Use it with `Include {include_file()}` in ~/.ssh/config (edgekit never edits that file).\n")
    text = header + ("\n".join(entries) if entries else "# (no emulated device is running)\n")
    write_text_atomic(include_file(), text)


def _free_port(preferred: int | None = None) -> int:
    if preferred:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((LOOPBACK, preferred))
                return preferred
            except OSError:
                pass
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return sock.getsockname()[1]


def _passwd_entry(rootfs: Path, user: str) -> tuple[int, int, str]:
    for line in (rootfs / "etc" / "passwd").read_text().splitlines():
        parts = line.split(":")
        if len(parts) >= 7 and parts[0] == user:
            return int(parts[2]), int(parts[3]), parts[5]
    raise EmulatorError(f"the user {user!r} is missing from the emulated root filesystem",
                        "rebuild it: edgekit emulator start DEVICE --rebuild")


def _qemu_binary(qemu_arch: str) -> str | None:
    return _which(f"qemu-{qemu_arch}-static") or _which(f"qemu-{qemu_arch}")


def _qemu_accepts(qemu_arch: str, cpu: str, rootfs: Path) -> bool | None:
    """Does qemu-user accept ``-cpu CPU`` (runs the guest's /usr/bin/true)? None: cannot tell."""
    binary = _qemu_binary(qemu_arch)
    if binary is None:
        return None
    try:
        done = subprocess.run([binary, "-cpu", cpu, "-L", str(rootfs), str(rootfs / "usr" / "bin" / "true")],
                              capture_output=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.returncode == 0


def choose_qemu_cpu(profile: Any, qemu_arch: str, rootfs: Path) -> tuple[str | None, str]:
    """The CPU qemu-user should emulate for the profile (``QEMU_CPU``), and a note saying why.

    qemu's default is its ``max`` CPU, with every feature it knows (SVE, SME, i8mm...): runtimes
    then pick kernels the board never runs, e.g. XNNPACK's SME int8 kernels, which give wrong
    results under qemu 7.2 (a fashion-CNN tflite int8 model: 9.5% accuracy instead of 93.7%).
    The profile's core (``Cortex-A72`` in ``cpu.model``) makes them take the board's path.
    """
    match = re.search(r"Cortex-(A\d+[A-Z]*)", profile.cpu.model, re.IGNORECASE)
    core = f"cortex-{match.group(1).lower()}" if match else None
    if core:
        accepted = _qemu_accepts(qemu_arch, core, rootfs)
        if accepted or accepted is None:
            return core, f"cpu: qemu emulates a {match.group(0)} like the device (QEMU_CPU={core}), so runtimes pick its kernels"
    for fallback in ("max,sve=off,sme=off", "max"):
        if _qemu_accepts(qemu_arch, fallback, rootfs):
            what = f"the device's core ({match.group(0)})" if match else f"a core named in cpu.model ({profile.cpu.model!r})"
            return fallback, (f"cpu: qemu cannot emulate {what}: it emulates its own CPU (QEMU_CPU={fallback}), "
                              "so runtimes may pick kernels the device never runs")
    return None, "cpu: qemu emulates its default 'max' CPU, which has features the device lacks"


def _openssh_version(rootfs: Path) -> tuple[int, int]:
    try:
        status = (rootfs / "var" / "lib" / "dpkg" / "status").read_text(errors="replace")
    except OSError:
        return (0, 0)
    match = re.search(r"^Package: openssh-server\n(?:[^\n]+\n)*?Version: (?:\d+:)?(\d+)\.(\d+)", status, re.M)
    return (int(match.group(1)), int(match.group(2))) if match else (0, 0)


# ------------------------------------------------------------------------------------ cgroups


def _memory_cgroup(name: str, memory_mib: int) -> tuple[Path | None, str | None]:
    """A cgroup v1 memory group limited to ``memory_mib``; (None, why) when unavailable."""
    if not (CGROUP_V1_MEMORY / "memory.limit_in_bytes").exists():
        return None, (f"the profile's {memory_mib} MiB memory limit is not applied: this host has no cgroup v1 "
                      "memory controller")
    group = CGROUP_V1_MEMORY / "edgekit" / name
    try:
        group.mkdir(parents=True, exist_ok=True)
        limit = str(memory_mib * 1024 * 1024)
        (group / "memory.limit_in_bytes").write_text(limit)
        memsw = group / "memory.memsw.limit_in_bytes"
        if memsw.exists():
            with contextlib.suppress(OSError):
                memsw.write_text(limit)
    except OSError as exc:
        return None, f"the profile's {memory_mib} MiB memory limit is not applied: cgroup {group}: {exc.strerror}"
    return group, None


def _remove_cgroup(path: str | None) -> None:
    if not path:
        return
    group = Path(path)
    if not group.is_dir() or CGROUP_V1_MEMORY not in group.parents:
        return
    deadline = time.monotonic() + 5
    while True:
        try:
            pids = [int(p) for p in (group / "cgroup.procs").read_text().split()]
        except (OSError, ValueError):
            pids = []
        for pid in pids:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        try:
            group.rmdir()
            return
        except OSError:
            if time.monotonic() > deadline:
                return
            time.sleep(0.1)


# ------------------------------------------------------------------------------------ start / stop


# Runs as root in the new mount + PID namespaces (PID 1 there), then becomes the guest's sshd:
# runtimes/emulator_namespace.sh, run as ``sh -c`` with its arguments as words.
_NAMESPACE_SCRIPT = program_text(NAMESPACE_SCRIPT_NAME)

_CGROUP_ENTER = 'if [ -n "$1" ]; then echo $$ > "$1/cgroup.procs" || exit 97; fi; shift; exec "$@"'

_children: dict[str, subprocess.Popen[bytes]] = {}  # started by this process: reaped on stop


def _overlay_works(instance: Path, base: Path) -> bool:
    """Can this host mount an overlay of ``base`` with upper/work under ``instance``?"""
    probe = instance / ".overlay-probe"
    shutil.rmtree(probe, ignore_errors=True)
    for sub in ("upper", "work", "merged"):
        (probe / sub).mkdir(parents=True)
    try:
        proc = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "mount", "-t", "overlay", "edgekit-probe", "-o",
             f"lowerdir={base},upperdir={probe}/upper,workdir={probe}/work", str(probe / "merged")],
            capture_output=True, timeout=30,
        )
        return proc.returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False
    finally:
        shutil.rmtree(probe, ignore_errors=True)


def _prepare_instance(instance: Path, base: Path, fresh: bool, mode_hint: str | None) -> str:
    """Set up upper/work/merged (overlay) or a full copy; returns the mode."""
    if fresh:
        for sub in ("upper", "work", "merged", "rootfs"):
            shutil.rmtree(instance / sub, ignore_errors=True)
    mode = mode_hint if mode_hint in ("overlay", "copy") and not fresh else None
    if mode is None:
        if (instance / "rootfs").is_dir() and not (instance / "upper").is_dir():
            mode = "copy"
        else:
            mode = "overlay" if _overlay_works(instance, base) else "copy"
    if mode == "overlay":
        for sub in ("upper", "work", "merged"):
            (instance / sub).mkdir(exist_ok=True)
        shutil.rmtree(instance / "work", ignore_errors=True)  # overlayfs wants an empty workdir
        (instance / "work").mkdir()
    elif not (instance / "rootfs").is_dir():
        partial = instance / "rootfs.partial"
        shutil.rmtree(partial, ignore_errors=True)
        subprocess.run(["cp", "-a", "--reflink=auto", str(base), str(partial)], check=True)
        partial.rename(instance / "rootfs")
    return mode


def start(
    device: Any,
    *,
    name: str | None = None,
    port: int | None = None,
    fresh: bool = False,
    rebuild: bool = False,
    memory_limit: bool = True,
    profile_files: Any = (),
    progress: Progress | None = None,
    ready_timeout: float = DEFAULT_READY_TIMEOUT_S,
) -> EmulatorState:
    """Start (building the image first if needed) the emulated ``device``; returns its state.

    Idempotent: a running emulator of that name is returned as is (``fresh`` restarts it with
    the device's changes discarded: no runtime installed, an empty home directory).
    """
    say = progress or (lambda _msg: None)
    profile = _profile(device, profile_files)
    name = _check_name(name or profile.name)
    spec = image_spec(profile)
    require_root()
    _require_tools("chroot", "unshare", "mount", "install")
    current = load_state(name)
    if current is not None and is_running(current):
        if _can_reuse(current, profile, spec, port, restart=fresh or rebuild):
            say(f"{name} is already running at {current.address}")
            return current
        stop(name)
    elif current is not None:
        _cleanup_dead(current)

    ensure_binfmt(spec.qemu_arch)
    meta = build_image(spec, rebuild=rebuild, progress=say)
    reset = fresh or rebuild or (current is not None and current.image_key != spec.key)
    launch = _prepare_launch(name, profile, spec, meta, reset, current, memory_limit)
    return _launch(launch, port, current, ready_timeout, say)


def _can_reuse(current: EmulatorState, profile: Any, spec: ImageSpec, port: int | None, restart: bool) -> bool:
    """Is the running emulator ``current`` the one asked for (same device, image and port)?"""
    return not restart and current.device == profile.name and current.image_key == spec.key \
        and (port is None or port == current.port)


@dataclass
class _Launch:
    """Everything one start of an emulator prepares before its processes are spawned."""

    name: str
    profile: Any
    spec: ImageSpec
    meta: dict[str, Any]
    instance: Path
    mode: str  # "overlay" | "copy", as in EmulatorState
    root: Path  # the device's root filesystem as its processes see it
    passwd: tuple[int, int, str]  # the device user's uid, gid and home
    host_pub: str  # the device's SSH host key (public part)
    qemu_cpu: str | None
    openssh: tuple[int, int]
    cgroup: Path | None
    notes: list[str]

    @property
    def etc(self) -> Path:
        return self.instance / "etc"


def _prepare_launch(name: str, profile: Any, spec: ImageSpec, meta: dict[str, Any], reset: bool,
                    current: EmulatorState | None, memory_limit: bool) -> _Launch:
    """The instance folder, its keys, the qemu CPU and the memory cgroup of a start."""
    base = spec.rootfs
    passwd = _passwd_entry(base, spec.user)
    instance = _instance_dir(name)
    instance.mkdir(parents=True, exist_ok=True)
    os.chmod(instance, 0o755)
    mode = _prepare_instance(instance, base, reset, current.mode if current else None)
    root = instance / ("merged" if mode == "overlay" else "rootfs")
    host_pub = _instance_keys(instance, name)
    qemu_cpu, cpu_note = choose_qemu_cpu(profile, spec.qemu_arch, base)
    openssh = _openssh_version(base)
    _write_ssh_environment(instance / "etc" / "ssh_environment", qemu_cpu, openssh)
    notes = _fidelity_notes(profile, spec, cpu_note)
    cgroup = _launch_cgroup(name, profile, memory_limit, notes)
    return _Launch(name=name, profile=profile, spec=spec, meta=meta, instance=instance, mode=mode, root=root,
                   passwd=passwd, host_pub=host_pub, qemu_cpu=qemu_cpu, openssh=openssh, cgroup=cgroup,
                   notes=notes)


def _instance_keys(instance: Path, name: str) -> str:
    """The instance's host key and client key (made once), the client's authorized; returns the host's."""
    etc = instance / "etc"
    etc.mkdir(exist_ok=True)
    os.chmod(etc, 0o755)
    host_pub = _ensure_keypair(etc / "ssh_host_ed25519_key", f"edgekit-{name}")
    client_pub = _ensure_keypair(instance / "id_ed25519", f"edgekit-emulator-{name}")
    (etc / "authorized_keys").write_text(client_pub + "\n")
    return host_pub


def _write_ssh_environment(ssh_env: Path, qemu_cpu: str | None, openssh: tuple[int, int]) -> None:
    """QEMU_CPU for SSH sessions through sshd's environment file where sshd_config cannot set it."""
    if qemu_cpu and openssh < (8, 7):
        ssh_env.write_text(f"QEMU_CPU={qemu_cpu}\n")
    elif ssh_env.exists():
        ssh_env.unlink()


def _fidelity_notes(profile: Any, spec: ImageSpec, cpu_note: str) -> list[str]:
    """What the emulated device reproduces of the real one, and what it does not."""
    notes: list[str] = [cpu_note]
    mismatch = _python_mismatch(profile, spec.release)
    if mismatch:
        notes.append(mismatch)
    cores = os.cpu_count() or 1
    if cores != profile.cpu.cores:
        notes.append(f"cores: the device has {profile.cpu.cores}, the emulated one uses this host's {cores}")
    notes.append("speed: qemu-user runs code hundreds of times slower than the device; latency is not representative")
    return notes


def _launch_cgroup(name: str, profile: Any, memory_limit: bool, notes: list[str]) -> Path | None:
    """The memory cgroup holding the profile's limit (None when off or impossible: ``notes`` says why)."""
    if not memory_limit:
        notes.append(f"the profile's {profile.memory_mib} MiB memory limit was turned off (--no-memory-limit)")
        return None
    cgroup, why = _memory_cgroup(name, profile.memory_mib)
    if why:
        notes.append(why)
    return cgroup


def _launch(launch: _Launch, port: int | None, current: EmulatorState | None, ready_timeout: float,
            say: Progress) -> EmulatorState:
    """Spawn the emulator and wait until its sshd answers; one more try on a new port if it was taken."""
    name, profile, spec = launch.name, launch.profile, launch.spec
    last_error = None
    for attempt in range(2):  # a second try on a new port if the first one was taken meanwhile
        chosen = port or _free_port(current.port if current else None)
        if attempt:
            chosen = _free_port()
        (launch.etc / "sshd_config").write_text(
            _sshd_config(chosen, spec.user, profile.name, launch.qemu_cpu, launch.openssh))
        say(f"starting the emulated {profile.name} ({spec.release} {spec.arch} under qemu-{spec.qemu_arch}) "
            f"on {LOOPBACK}:{chosen}")
        log = launch.instance / "sshd.log"
        proc = _spawn(launch, chosen, log)
        _children[name] = proc
        state = _new_state(launch, proc.pid, chosen, log)
        write_json_atomic(_state_path(name), state.to_dict(), sort_keys=True)
        try:
            _wait_ready(state, proc, ready_timeout)
        except EmulatorError as exc:
            last_error = exc
            stop(name)
            if port is None and "Address already in use" in str(exc) and attempt == 0:
                continue
            raise
        _write_client_files(state, launch.host_pub)
        say(f"the emulated {profile.name} is up: {state.address}")
        return state
    assert last_error is not None
    raise last_error


def _spawn(launch: _Launch, port: int, log: Path) -> subprocess.Popen[bytes]:
    """The emulator's process tree (cgroup, namespaces, sshd under qemu), its output appended to ``log``."""
    uid, gid, home = launch.passwd
    with open(log, "ab") as handle:
        handle.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} start on port {port}\n".encode())
        handle.flush()
        argv = ["/bin/sh", "-c", _CGROUP_ENTER, "edgekit-cgroup", str(launch.cgroup or ""),
                "unshare", "--mount", "--pid", "--fork", "--propagation", "private", "--kill-child",
                "--", "/bin/sh", "-c", _NAMESPACE_SCRIPT, f"{MARKER}:{launch.name}",
                str(launch.root), str(launch.spec.rootfs), str(launch.instance), launch.mode, launch.spec.user,
                str(uid), str(gid), home, launch.qemu_cpu or ""]
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=handle, stderr=subprocess.STDOUT,
                                start_new_session=True, close_fds=True)


def _new_state(launch: _Launch, pid: int, port: int, log: Path) -> EmulatorState:
    """The state of the emulator just spawned as ``pid``, listening on ``port``."""
    spec, instance, cgroup = launch.spec, launch.instance, launch.cgroup
    return EmulatorState(
        name=launch.name, device=launch.profile.name, image_key=spec.key, base_rootfs=str(spec.rootfs),
        instance_dir=str(instance), mode=launch.mode, pid=pid, port=port, user=spec.user,
        key_file=str(instance / "id_ed25519"), known_hosts=str(instance / "known_hosts"),
        ssh_config=str(instance / "ssh_config"), alias=f"edgekit-{launch.name}", log=str(log),
        started_at=time.time(), machine=spec.machine, python=launch.meta.get("python"),
        numpy=launch.meta.get("numpy"), memory_limit_mib=launch.profile.memory_mib if cgroup else None,
        cgroup=str(cgroup) if cgroup else None, qemu_cpu=launch.qemu_cpu, notes=launch.notes,
    )


def _write_client_files(state: EmulatorState, host_pub: str) -> None:
    """The known_hosts line and ssh_config entry a client uses to reach the started emulator."""
    host_key_type, host_key_b64 = host_pub.split()[:2]
    Path(state.known_hosts).write_text(f"[{LOOPBACK}]:{state.port} {host_key_type} {host_key_b64}\n")
    Path(state.ssh_config).write_text(_host_config_entry(state))
    _write_include_file()


def _log_tail(path: str, lines: int = 15) -> str:
    try:
        text = Path(path).read_text(errors="replace")
    except OSError:
        return ""
    text = text.rsplit("--- ", 1)[-1]
    return "\n".join(text.strip().splitlines()[-lines:])


def _wait_ready(state: EmulatorState, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise EmulatorError(
                f"the emulated {state.device} stopped while starting (status {proc.returncode}); its log:\n"
                f"{_log_tail(state.log)}",
                f"full log: {state.log}",
            )
        if ssh_ready(state.host, state.port, timeout=min(5.0, max(0.5, deadline - time.monotonic()))):
            return
        time.sleep(0.2)
    raise EmulatorError(
        f"the emulated {state.device}'s sshd did not answer on {state.host}:{state.port} within {timeout:g} s; "
        f"its log:\n{_log_tail(state.log)}",
        f"full log: {state.log}; a busy host may need a longer --ready-timeout",
    )


def _cleanup_dead(state: EmulatorState) -> None:
    _remove_cgroup(state.cgroup)


def stop(name: str, *, timeout: float = 10.0, remove: bool = False) -> bool:
    """Stop emulator ``name`` (every process of the device dies with it); True if it ran.

    ``remove`` also deletes the instance (the device's changes, keys, state); the cached image
    stays.
    """
    state = load_state(name)
    was_running = False
    if state is not None:
        if is_running(state):
            require_root("stopping an emulated device")
            was_running = True
            _terminate(state, timeout)
        proc = _children.pop(name, None)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=1)
        _remove_cgroup(state.cgroup)
        with contextlib.suppress(OSError):
            _write_include_file()
    if remove:
        instance = _instance_dir(name)
        if instance.is_dir():
            shutil.rmtree(instance, ignore_errors=True)
    elif state is not None and state.pid:
        write_json_atomic(_state_path(name), dataclasses.replace(state, pid=0).to_dict(), sort_keys=True)  # keeps port, mode
    return was_running


def _children_of(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


def _terminate(state: EmulatorState, timeout: float) -> None:
    """Kill the namespace's init (the guest sshd): the kernel then kills every process in it.

    ``unshare --fork`` ignores SIGTERM while it waits, so SIGKILL it as well; ``--kill-child``
    makes sure its child dies with it. Nothing in the device needs a graceful shutdown (like
    pulling a board's plug: the overlay keeps what was written).
    """
    for child in _children_of(state.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.kill(state.pid, signal.SIGKILL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        proc = _children.get(state.name)
        if proc is not None and proc.poll() is not None:
            return
        if not _pid_alive(state.pid):
            return
        time.sleep(0.02)
    raise EmulatorError(f"the emulated {state.device} (pid {state.pid}) did not stop within {timeout:g} s")


def stop_all(*, remove: bool = False) -> list[str]:
    return [s.name for s in list_states() if stop(s.name, remove=remove)]


__all__ = [
    "CACHE_ENV",
    "EmulatorError",
    "EmulatorState",
    "EmulatorUnsupportedError",
    "ImageSpec",
    "NeedsRootError",
    "binfmt_status",
    "build_image",
    "cache_dir",
    "ensure_binfmt",
    "image_info",
    "image_spec",
    "include_file",
    "is_running",
    "list_states",
    "load_state",
    "ssh_ready",
    "start",
    "status",
    "status_all",
    "stop",
    "stop_all",
]
