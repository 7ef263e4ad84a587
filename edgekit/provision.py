"""Offline provisioning of a device's inference runtimes, and ``edgekit doctor``.

The device needs no internet and no pip: the host

1. asks the device over SSH (a tiny ``python3 -c``) for its Python, CPU architecture, glibc,
   home directory and installed distributions;
2. downloads on the host the runtime wheels for exactly that platform (``pip download
   --only-binary=:all: --platform manylinux_2_<N>_<arch> ... --python-version <XY>
   --implementation cp --no-deps``), plus every dependency their metadata requires that the
   device does not already provide (the distro's numpy stays), into a cache
   (``~/.cache/edgekit/wheels/<tag>/``, reused offline next time);
3. pushes them over SFTP and unpacks them on the device with Python's ``zipfile`` (no pip
   needed) into a private folder, ``~/.local/lib/edgekit-site`` by default, swapped in
   atomically, with a manifest ``edgekit-site.json``;
4. checks with the runner's ``--probe`` that the runtimes import.

The runner finds that folder through ``PYTHONPATH`` only (no ``.pth``, nothing outside the
folder is touched): :func:`runner_python` gives the ``python`` command for ``SSHTarget`` that
sets it. By default the runtimes are pinned to the versions installed on this host, so the
device runs what the host validated.

A profile whose ``install.manager`` is a package manager (``pkg``: Termux on Android, where no
PyPI wheel runs) gets nothing pushed: ``provision`` checks what imports and returns the
``pkg install`` line for what is missing, and ``doctor`` names the package in its advice.
"""

from __future__ import annotations

import email.parser
import json
import os
import posixpath
import re
import shlex
import subprocess
import sys
import time
import zipfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

from edgekit.errors import (
    EdgekitError,
    MissingDependencyError,
    TargetError,
    UsageError,
)
from edgekit.export import device_runtimes
from edgekit.export.base import sha256_file
from edgekit.resources import FACTS_NAME, SITE_INSTALL_NAME, program_text
from edgekit.targets.ssh_options import DEFAULT_SITE_DIR, SSHOptions

MANIFEST_NAME = "edgekit-site.json"
WHEEL_CACHE_ENV = "EDGEKIT_WHEEL_CACHE"
# runner runtime name -> PyPI project, as each registered format declares its device runtimes
RUNTIME_PROJECTS = {r.name: r.project for r in device_runtimes()}
# runtimes the device's OS image provides, never pip-installed: why, for the error message
SYSTEM_RUNTIMES = {"tensorrt": "TensorRT and its trtexec come with NVIDIA JetPack (the PyPI tensorrt wheels "
                               "are not built for Jetson)"}
# runtime name -> what its wheel needs on the device, where that is not its own requirements
DEVICE_REQUIRES = {r.name: r.device_requires for r in device_runtimes() if r.device_requires is not None}
# installed by default: the first of the profile's runtimes per format that has device wheels
# (a format marks the others, e.g. tensorflow: ~1 GB, installed only when asked for)
DEFAULT_CANDIDATES = tuple(r.name for r in device_runtimes() if r.default)
LOW_DISK_MIB = 500

Progress = Callable[[str], None]


class ProvisionError(TargetError):
    """Provisioning the device failed (exit code 5)."""


# ------------------------------------------------------------------------------------ device facts

# Runs on the device: runtimes/device_facts.py (argv[1]: the site folder).
FACTS_SCRIPT = program_text(FACTS_NAME)

# Runs on the device: runtimes/site_install.py (argv: site_dir manifest.json wheel...).
INSTALL_SCRIPT = program_text(SITE_INSTALL_NAME)


@dataclass
class DeviceFacts:
    """What the facts script found on the device."""

    python: str
    implementation: str
    machine: str
    glibc: str | None
    home: str
    site_dir: str
    site_dir_exists: bool
    manifest: dict[str, Any] | None
    dists: dict[str, str]
    pip: bool
    free_disk_mib: int | None
    mem_total_mib: int | None
    mem_available_mib: int | None
    system: str | None = None
    executable: str | None = None
    platform: str | None = None  # sys.platform: "linux", or "android" (Python >= 3.13 on Android)
    android_api: int | None = None  # sys.getandroidapilevel() on Android builds of Python

    @property
    def is_android(self) -> bool:
        return self.platform == "android" or self.android_api is not None or (self.system or "") == "Android"

    @property
    def platform_label(self) -> str:
        """What the result shows as the device's platform."""
        if self.is_android:
            api = f" API {self.android_api}" if self.android_api else ""
            return f"Android{api} {self.machine}, Python {self.python}"
        return self.platform_key

    @property
    def python_tag(self) -> str:
        major, minor = self.python.split(".")[:2]
        return f"{major}{minor}"

    @property
    def platform_key(self) -> str:
        """Names the wheel cache folder: ``cp311-manylinux_2_36_aarch64``."""
        if not self.glibc:
            return f"cp{self.python_tag}-linux_{self.machine}"
        major, minor = self.glibc.split(".")[:2]
        return f"cp{self.python_tag}-manylinux_{major}_{minor}_{self.machine}"


def _parse_marked_json(text: str, mark: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        if line.startswith(mark + " "):
            try:
                return json.loads(line[len(mark) + 1:])
            except ValueError:
                return None
    return None


def device_facts(target: Any, python: str = "python3", site_dir: str = DEFAULT_SITE_DIR) -> DeviceFacts:
    """Run the facts script on ``target`` (a ``DeviceShell``: an open-able ``SSHTarget``)."""
    argv = [*shlex.split(python), "-c", FACTS_SCRIPT, site_dir]
    status, out, err = target.exec(argv, timeout=300)
    facts = _parse_marked_json(out, "@@edgekit-facts")
    if facts is None:
        if status in (126, 127):
            raise MissingDependencyError(
                f"{shlex.split(python)[0]} is not installed on the device {target.address}",
                "install Python 3 on the device (e.g. `sudo apt install python3 python3-numpy`), "
                "or pass --python with the interpreter's path",
            )
        raise TargetError(f"could not read the device's facts on {target.address} (status {status}): "
                          f"{(err or out).strip()[-500:]}")
    names = set(DeviceFacts.__dataclass_fields__)
    return DeviceFacts(**{k: v for k, v in facts.items() if k in names})


def runner_python(python: str, site_dir: str) -> str:
    """The ``python`` command for ``SSHTarget`` that puts the provisioned folder first.

    ``site_dir`` must be absolute (``DeviceFacts.site_dir``): ``SSHTarget`` quotes every word,
    so a ``~`` would not be expanded.
    """
    argv = shlex.split(python)
    if argv and argv[0] == "env" and any(a.startswith("PYTHONPATH=") for a in argv):
        return python
    return shlex.join(["env", f"PYTHONPATH={site_dir}", *argv])


# ------------------------------------------------------------------------------------ wheels


def wheel_cache_dir() -> Path:
    env = os.environ.get(WHEEL_CACHE_ENV)
    if env:
        return Path(os.path.expanduser(env))
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "edgekit" / "wheels"


def manylinux_platforms(machine: str, glibc: str | None) -> list[str]:
    """``--platform`` values for pip, newest first: pip does not expand ``manylinux_2_X`` itself."""
    if not glibc:
        raise ProvisionError(
            "the device's C library is not glibc (musl? Android?): there are no manylinux wheels for it",
            "install the runtime with the device's own package manager",
        )
    major, minor = (int(p) for p in glibc.split(".")[:2])
    if major != 2:
        raise ProvisionError(f"unexpected glibc version {glibc} on the device")
    lowest = 17 if machine in ("aarch64", "ppc64le", "s390x", "armv7l") else 5
    platforms = [f"manylinux_2_{m}_{machine}" for m in range(minor, lowest - 1, -1)]
    legacy = {17: "manylinux2014", 12: "manylinux2010", 5: "manylinux1"}
    platforms += [f"{name}_{machine}" for m, name in legacy.items() if m <= minor and m >= lowest
                  and not (name != "manylinux2014" and machine not in ("x86_64", "i686"))]
    return platforms


def _packaging() -> Any:
    try:
        import packaging.requirements
        import packaging.tags
        import packaging.utils
        import packaging.version
    except ImportError:  # pragma: no cover - onnxruntime depends on it
        raise MissingDependencyError("edgekit provision needs the `packaging` module on the host",
                                     "pip install packaging") from None
    return packaging


def _marker_env(facts: DeviceFacts) -> dict[str, str]:
    return {
        "python_version": ".".join(facts.python.split(".")[:2]),
        "python_full_version": facts.python,
        "implementation_name": facts.implementation,
        "implementation_version": facts.python,
        "platform_python_implementation": "CPython" if facts.implementation == "cpython" else facts.implementation,
        "os_name": "posix",
        "sys_platform": "linux",
        "platform_system": "Linux",
        "platform_machine": facts.machine,
        "platform_release": "",
        "platform_version": "",
        "extra": "",
    }


def wheel_requirements(wheel: Path) -> list[str]:
    """The ``Requires-Dist`` lines of a wheel."""
    with zipfile.ZipFile(wheel) as zf:
        meta = next((n for n in zf.namelist()
                     if n.count("/") == 1 and n.endswith(".dist-info/METADATA")), None)
        if meta is None:
            return []
        message = email.parser.Parser().parsestr(zf.read(meta).decode("utf-8", "replace"))
    return list(message.get_all("Requires-Dist") or [])


@dataclass
class WheelChoice:
    name: str
    version: str
    wheel: str  # file name
    path: str
    sha256: str
    from_cache: bool
    required_by: str


class WheelResolver:
    """Resolves the device's wheels with pip (``pip download`` for the device's platform).

    The device's own distributions (the distro's numpy above all) are passed to pip as
    constraints, so pip picks dependency versions that work with them (e.g. an ``ml_dtypes``
    that accepts numpy 1.24) and they are not installed again. When that cannot be resolved,
    it retries with numpy alone pinned, then with nothing pinned (the private folder then
    holds its own numpy, which shadows the device's for the runner only).

    The cache (``<cache>/<platform>/``) is tried first without any index (offline); pip goes
    online only for what it lacks.
    """

    def __init__(self, facts: DeviceFacts, cache: Path | None = None, *, offline: bool = False,
                 progress: Progress | None = None) -> None:
        self.facts = facts
        self.cache = (cache or wheel_cache_dir()) / facts.platform_key
        self.offline = offline
        self.say = progress or (lambda _msg: None)
        self.packaging = _packaging()
        self.platforms = manylinux_platforms(facts.machine, facts.glibc)
        self.notes: list[str] = []

    def device_constraints(self) -> dict[str, str]:
        """The device's distributions whose versions pip can read (PEP 440)."""
        version_cls = self.packaging.version.Version
        pins = {}
        for name, version in sorted(self.facts.dists.items()):
            try:
                version_cls(version)
            except Exception:  # noqa: BLE001 - a Debian-only version string: not a constraint
                continue
            pins[name] = version
        return pins

    def _pip_download(self, reqs: list[str], pins: dict[str, str], *, no_index: bool,
                      dest: Path, no_deps: bool = False) -> tuple[bool, str]:
        if not reqs:
            return True, ""
        argv = [sys.executable, "-m", "pip", "download", "--disable-pip-version-check", "--progress-bar", "off",
                "--only-binary=:all:", "--python-version", self.facts.python_tag, "--implementation", "cp",
                "-d", str(dest), "--find-links", str(self.cache)] + (["--no-deps"] if no_deps else [])
        for platform in self.platforms:
            argv += ["--platform", platform]
        if no_index:
            argv.append("--no-index")
        if pins:
            constraints = dest / "constraints.txt"
            constraints.write_text("".join(f"{n}=={v}\n" for n, v in pins.items()))
            argv += ["-c", str(constraints)]
        proc = subprocess.run(argv + reqs, capture_output=True, text=True, timeout=1800)
        if proc.returncode == 0:
            return True, ""
        text = proc.stderr or proc.stdout
        lines = [ln.strip() for ln in text.splitlines() if ln.startswith("ERROR") or "conflict" in ln.lower()]
        return False, "; ".join(lines[:6]) or text.strip()[-600:]

    def resolve(self, requirements: Iterable[str], alone: Iterable[str] = ()) -> tuple[list[WheelChoice], dict[str, str]]:
        """(wheels to install, the device's distributions reused as they are); ``alone``: wheels
        downloaded without their dependencies (see ``split_requirements``)."""
        import tempfile

        reqs = list(requirements)
        alone = list(alone)
        self.cache.mkdir(parents=True, exist_ok=True)
        pins = self.device_constraints()
        attempts = [("the device's packages", pins)]
        if "numpy" in pins and len(pins) > 1:
            attempts.append(("the device's numpy", {"numpy": pins["numpy"]}))
        if pins:
            attempts.append(("nothing", {}))
        errors = []
        for label, constraint in attempts:
            for no_index in ([True] if self.offline else [True, False]):
                with tempfile.TemporaryDirectory(prefix="edgekit-wheels-") as tmp:
                    dest = Path(tmp) / "wheels"
                    dest.mkdir()
                    if not no_index:
                        self.say(f"downloading wheels for {self.facts.platform_key}: {', '.join(reqs + alone)}")
                    ok, error = self._pip_download(reqs, constraint, no_index=no_index, dest=dest)
                    if ok:
                        ok, error = self._pip_download(alone, {}, no_index=no_index, dest=dest, no_deps=True)
                    if not ok:
                        if not no_index:
                            errors.append(f"with {label} pinned: {error}")
                        continue
                    if label != attempts[0][0]:
                        self.notes.append(f"the runtimes' dependencies do not fit {attempts[0][0]} "
                                          f"({errors[-1] if errors else 'no resolution'}); resolved with {label} pinned")
                    return self._collect(dest)
        if self.offline:
            raise ProvisionError(
                f"the wheel cache {self.cache} lacks wheels for {', '.join(reqs + alone)} and --offline forbids downloading",
                "run once with network access, or put the wheels into that folder",
            )
        raise ProvisionError(
            f"pip could not download wheels for the device ({self.facts.platform_key}): " + " | ".join(errors),
            "check the host's network/PyPI access, or pick another --runtime version",
        )

    def _collect(self, dest: Path) -> tuple[list[WheelChoice], dict[str, str]]:
        import shutil

        utils = self.packaging.utils
        wheels = sorted(dest.glob("*.whl"))
        found = {}
        for path in wheels:
            name, version, _build, _tags = utils.parse_wheel_filename(path.name)
            found[str(name)] = (str(version), path)
        parents: dict[str, str] = {}
        Requirement = self.packaging.requirements.Requirement
        env = _marker_env(self.facts)
        for name, (_v, path) in found.items():
            for line in wheel_requirements(path):
                req = Requirement(line)
                if req.marker is None or req.marker.evaluate(env):
                    parents.setdefault(str(utils.canonicalize_name(req.name)), name)
        choices: list[WheelChoice] = []
        provided: dict[str, str] = {}
        for name, (version, path) in found.items():
            cached = self.cache / path.name
            from_cache = cached.is_file()
            if not from_cache:  # provided ones too: the next offline resolution needs them
                shutil.copy2(path, cached)
            if self.facts.dists.get(name) == version:
                provided[name] = version
                continue
            choices.append(WheelChoice(name=name, version=version, wheel=path.name, path=str(cached),
                                       sha256=sha256_file(cached), from_cache=from_cache,
                                       required_by=parents.get(name, "requested")))
        return choices, provided


def _host_version(project: str) -> str | None:
    try:
        from importlib.metadata import PackageNotFoundError, version
    except ImportError:  # pragma: no cover
        return None
    try:
        return version(project).split("+", 1)[0]
    except PackageNotFoundError:
        return None


def default_runtimes(profile: Any) -> list[str]:
    """The first of the profile's runtimes per format that edgekit can install (no tensorflow)."""
    picked = []
    for _fmt, names in profile.runtimes.items():
        for name in names:
            if name in DEFAULT_CANDIDATES:
                if name not in picked:
                    picked.append(name)
                break
    return picked


def runtime_requirements(runtimes: Iterable[str], *, pin_to_host: bool = True) -> list[str]:
    """``RUNTIME[==VERSION]`` items → pip requirement strings (pinned to the host's version)."""
    reqs = []
    for item in runtimes:
        name, sep, version = item.partition("==")
        if _runtime_name(name) in SYSTEM_RUNTIMES:
            raise UsageError(f"edgekit does not install {name.strip()}: {SYSTEM_RUNTIMES[_runtime_name(name)]}",
                             "install JetPack on the board (sudo apt install nvidia-jetpack); the runner "
                             "finds /usr/src/tensorrt/bin/trtexec")
        project = RUNTIME_PROJECTS.get(_runtime_name(name))
        if project is None:
            raise UsageError(f"unknown runtime {name.strip()!r}", f"choose from {', '.join(RUNTIME_PROJECTS)}")
        reqs.append(f"{project}=={version.strip()}" if sep else _pinned(project, pin_to_host))
    return reqs


def _runtime_name(item: str) -> str:
    name = item.partition("==")[0].strip()
    return name if name in RUNTIME_PROJECTS else name.replace("-", "_")


def _pinned(project: str, pin_to_host: bool) -> str:
    host = _host_version(project) if pin_to_host else None
    return f"{project}=={host}" if host else project


def split_requirements(runtimes: list[str], reqs: list[str], *, pin_to_host: bool = True) -> tuple[list[str], list[str]]:
    """(requirements resolved with their dependencies, requirements installed without them): a
    runtime with ``device_requires`` (executorch) goes on alone, its device needs (torch) with deps."""
    with_deps: list[str] = []
    alone: list[str] = []
    for item, req in zip(runtimes, reqs):
        needs = DEVICE_REQUIRES.get(_runtime_name(item))
        if needs is None:
            with_deps.append(req)
            continue
        alone.append(req)
        for need in needs:
            project, _, pin = need.partition("==")
            if not any(r.split("==")[0] == project for r in with_deps):
                with_deps.append(_pinned(project, pin_to_host) if pin == "host" else need)
    return with_deps, alone


# ------------------------------------------------------------------------------------ provision


@dataclass
class ProvisionResult:
    device: str
    address: str
    site_dir: str
    python_command: str  # pass as SSHOptions(python=...) / DeployOptions.ssh
    platform: str
    packages: list[WheelChoice]
    provided_by_device: dict[str, str]
    installed: bool  # False: the device already had exactly these wheels
    runtimes: dict[str, Any]  # the runner's probe after installing
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manager: str = "wheels"  # the profile's install.manager: "pkg" installs nothing, see command
    command: str | None = None  # run on the device to install what is missing (package managers)
    missing: list[str] = field(default_factory=list)  # what does not import yet (numpy, runtimes)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_text(self) -> str:
        """What ``edgekit provision`` prints for a device whose package manager installs the runtimes."""
        lines = [f"{self.device} at {self.address} ({self.platform}): edgekit pushes nothing here, "
                 f"the runtimes come from the device's {self.manager} packages"]
        lines += [f"  {name} {version}  (the device's own)" for name, version in self.provided_by_device.items()]
        lines += [f"  note: {note}" for note in self.notes]
        if self.command:
            lines.append(f"missing: {', '.join(self.missing)}; run on the device:")
            lines.append(f"  {self.command}")
        else:
            lines.append("nothing is missing: ready to deploy")
        return "\n".join(lines)


def _open_target(profile: Any, host: str, ssh: SSHOptions) -> Any:
    """The target at ``host``, as the device shell provision and doctor work through."""
    from edgekit.targets import DeviceShell, create_target

    target = create_target(profile, host=host, ssh=ssh)
    if not isinstance(target, DeviceShell):
        raise UsageError(f"{host}: this target offers no shell on a device to provision or check",
                         "pass --host with a device's address")
    return target


def _exec_checked(target: Any, argv: list[str], doing: str, timeout: float = 1800) -> str:
    status, out, err = target.exec(argv, timeout=timeout)
    if status != 0:
        text = (err or out).strip()
        if re.search(r"No space left on device|Disk quota exceeded", text):
            from edgekit.errors import RemoteDiskFullError

            raise RemoteDiskFullError(f"the device {target.address} ran out of disk space while {doing}",
                                      "free space on the device, or pass --site-dir on a larger filesystem")
        raise ProvisionError(f"{doing} on {target.address} failed (status {status}): {text[-800:]}")
    return out


def probe_runtimes(target: Any, python: str) -> dict[str, Any]:
    """The runner's ``--probe`` run with ``python`` (which sets PYTHONPATH) on a ``DeviceShell``."""
    return target.probe(python)


def provision(
    device: Any,
    host: str,
    *,
    ssh: SSHOptions | dict[str, Any] | None = None,
    runtimes: Iterable[str] | None = None,
    site_dir: str = DEFAULT_SITE_DIR,
    cache: Path | None = None,
    offline: bool = False,
    force: bool = False,
    pin_to_host: bool = True,
    profile_files: Iterable[str] = (),
    progress: Progress | None = None,
) -> ProvisionResult:
    """Install the device's runtimes from wheels downloaded on this host (see the module doc)."""
    from edgekit.devices import get as get_profile

    say = progress or (lambda _msg: None)
    started = time.monotonic()
    profile = get_profile(device, profile_files) if isinstance(device, str) else device
    ssh = SSHOptions.coerce(ssh)  # built once: the target and the facts script use the same options
    python = ssh.python or profile.ssh.python
    notes: list[str] = []
    with _open_target(profile, host, ssh) as target:
        say(f"checking {target.address}")
        facts = device_facts(target, python, site_dir)
        notes += _facts_notes(profile, facts)
        if profile.install.manager != "wheels":
            return _from_packages(profile, target, facts, python, notes, say, started)
        _refuse_android(target, facts)
        wanted = _wanted_runtimes(profile, runtimes)
        resolver = WheelResolver(facts, cache, offline=offline, progress=say)
        choices, provided = _resolve_runtimes(resolver, wanted, pin_to_host, offline, notes)
        command = runner_python(python, facts.site_dir)
        installed = _install_unless_present(target, python, facts, choices, provided, force, say)
        found = _check_runtimes_import(target, command, wanted, say)
        return ProvisionResult(
            device=profile.name, address=target.address, site_dir=facts.site_dir, python_command=command,
            platform=facts.platform_key, packages=choices, provided_by_device=provided, installed=installed,
            runtimes=found, notes=notes, seconds=round(time.monotonic() - started, 1),
        )


def _refuse_android(target: Any, facts: DeviceFacts) -> None:
    """A wheels profile on an Android device: no PyPI wheel runs on bionic."""
    if facts.is_android:
        raise ProvisionError(
            f"{target.address} runs Android: no PyPI wheel of the runtimes runs there (bionic libc, not glibc)",
            f"use a profile whose runtimes come from Termux, e.g. --device android-arm64; "
            f"on the device: {_termux_command()}",
        )


def _wanted_runtimes(profile: Any, runtimes: Iterable[str] | None) -> list[str]:
    """The runtimes asked for (``--runtime``), else the profile's; a UsageError when none."""
    wanted = list(runtimes) if runtimes else default_runtimes(profile)
    if not wanted:
        raise UsageError(f"{profile.name}'s profile names no runtime edgekit can install",
                         f"pass --runtime, one of {', '.join(RUNTIME_PROJECTS)}")
    return wanted


def _resolve_runtimes(resolver: WheelResolver, wanted: list[str], pin_to_host: bool, offline: bool,
                      notes: list[str]) -> tuple[list[WheelChoice], dict[str, str]]:
    """The device's wheels of ``wanted`` (the host's versions when pinned and found, else the newest)."""
    reqs = runtime_requirements(wanted, pin_to_host=pin_to_host)
    try:
        choices, provided = resolver.resolve(*split_requirements(wanted, reqs, pin_to_host=pin_to_host))
    except ProvisionError as exc:
        pinned = [r for r, w in zip(reqs, wanted) if "==" in r and "==" not in w]
        if not pinned or offline:
            raise
        notes.append(f"no device wheel of the host's versions ({', '.join(pinned)}): {exc.message}; "
                     "took the newest instead")
        loose = runtime_requirements(wanted, pin_to_host=False)
        choices, provided = resolver.resolve(*split_requirements(wanted, loose, pin_to_host=False))
    notes += resolver.notes + _device_requires_notes(wanted, choices)
    for name, version in provided.items():
        notes.append(f"{name} {version} is provided by the device (not installed)")
    return choices, provided


def _device_requires_notes(wanted: list[str], choices: list[WheelChoice]) -> list[str]:
    """What a runtime with ``device_requires`` brings along, with the wheels' sizes (torch is big)."""
    notes = []
    by_name = {c.name: c for c in choices}
    for item in wanted:
        needs = DEVICE_REQUIRES.get(_runtime_name(item))
        if not needs:
            continue
        projects = [n.partition("==")[0] for n in needs]
        sizes = [f"{p} {by_name[p].version} ({Path(by_name[p].path).stat().st_size / (1 << 20):.0f} MiB wheel)"
                 for p in projects if p in by_name]
        notes.append(f"{_runtime_name(item)} is installed without its own requirements (export tools); its runtime "
                     f"needs {', '.join(projects)} on the device" + (f": {', '.join(sizes)}" if sizes else ""))
    return notes


def _install_unless_present(target: Any, python: str, facts: DeviceFacts, choices: list[WheelChoice],
                            provided: dict[str, str], force: bool, say: Progress) -> bool:
    """Push and install ``choices`` unless the device already holds them; returns whether it installed."""
    manifest = {
        "edgekit": _edgekit_version(),
        "platform": facts.platform_key,
        "python": facts.python,
        "packages": [{"name": c.name, "version": c.version, "wheel": c.wheel, "sha256": c.sha256}
                     for c in choices],
        "provided_by_device": provided,
    }
    if not force and _same_wheels(facts.manifest, choices) and facts.site_dir_exists:
        say(f"{facts.site_dir} already holds these wheels (use --force to reinstall)")
        return False
    _push_and_install(target, python, facts, choices, manifest, say)
    return True


def _check_runtimes_import(target: Any, command: str, wanted: list[str], say: Progress) -> dict[str, Any]:
    """The runner's probe after installing; a ProvisionError when a wanted runtime does not import."""
    say("checking that the runtimes import on the device")
    probe = probe_runtimes(target, command)
    found = probe.get("runtimes") or {}
    broken = [name for name in wanted if not (found.get(name.split("==")[0]) or {}).get("available")]
    if broken:
        details = "; ".join(f"{n}: {(found.get(n.split('==')[0]) or {}).get('error')}" for n in broken)
        raise ProvisionError(f"installed, but these runtimes do not import on {target.address}: {details}",
                             "run `edgekit doctor` for details; the device may need another runtime version")
    return found


def _termux_command() -> str:
    """The built-in android profile's install line (what a Termux device needs)."""
    from edgekit.devices import get as get_profile

    try:
        return get_profile("android-arm64").install.command() or "pkg install python-numpy"
    except EdgekitError:
        return "pkg install python-numpy python-onnxruntime python-tflite-runtime"


def missing_on_device(profile: Any, probe: dict[str, Any]) -> list[str]:
    """What the runner cannot import yet: ``numpy``, and per format the profile's first runtime
    when none of that format's runtimes imports."""
    found = probe.get("runtimes") or {}
    missing = [] if (probe.get("device") or {}).get("numpy") else ["numpy"]
    for names in profile.runtimes.values():
        if names and not any((found.get(n) or {}).get("available") for n in names):
            missing.append(names[0])
    return missing


def _from_packages(profile: Any, target: Any, facts: DeviceFacts, python: str, notes: list[str],
                   say: Progress, started: float) -> ProvisionResult:
    """A device whose runtimes come from its package manager: check, push nothing, say what to run."""
    manager = profile.install.manager
    say(f"{profile.name} installs its runtimes with {manager}: checking what imports")
    probe = probe_runtimes(target, python)
    found = probe.get("runtimes") or {}
    missing = missing_on_device(profile, probe)
    if not facts.is_android:
        notes.append(f"the profile {profile.name} expects Android (Termux), the device reports "
                     f"{facts.system or facts.platform}: check --device")
    return ProvisionResult(
        device=profile.name, address=target.address, site_dir=facts.site_dir, python_command=python,
        platform=facts.platform_label, packages=[],
        provided_by_device={n: str(e.get("version")) for n, e in found.items() if e.get("available")},
        installed=False, runtimes=found, notes=notes, seconds=round(time.monotonic() - started, 1),
        manager=manager, command=profile.install.command(missing), missing=missing,
    )


def _edgekit_version() -> str:
    from edgekit import __version__

    return __version__


def _same_wheels(manifest: dict[str, Any] | None, choices: list[WheelChoice]) -> bool:
    if not manifest:
        return False
    have = sorted(p.get("sha256", "") for p in manifest.get("packages") or [])
    return have == sorted(c.sha256 for c in choices)


def _push_and_install(target: Any, python: str, facts: DeviceFacts, choices: list[WheelChoice],
                      manifest: dict[str, Any], say: Progress) -> None:
    staging = facts.site_dir + ".incoming"
    total = sum(Path(c.path).stat().st_size for c in choices)
    if facts.free_disk_mib is not None and facts.free_disk_mib * (1 << 20) < total * 5:
        from edgekit.errors import RemoteDiskFullError

        raise RemoteDiskFullError(
            f"the device {target.address} has {facts.free_disk_mib} MiB free; the runtimes need about "
            f"{total * 5 // (1 << 20)} MiB while installing",
            "free space on the device, or pass --site-dir on a larger filesystem",
        )
    _exec_checked(target, ["mkdir", "-p", "--", staging], "creating the staging folder")
    try:
        say(f"pushing {len(choices)} wheels ({total / (1 << 20):.0f} MiB) to {staging}")
        remote_wheels = []
        for choice in choices:
            remote = posixpath.join(staging, choice.wheel)
            target.put_file(Path(choice.path), remote)
            remote_wheels.append(remote)
        target.write_file(posixpath.join(staging, "install.py"), INSTALL_SCRIPT.encode())
        target.write_file(posixpath.join(staging, "manifest.json"), json.dumps(manifest, indent=1).encode())
        say(f"unpacking into {facts.site_dir}")
        out = _exec_checked(
            target,
            [*shlex.split(python), posixpath.join(staging, "install.py"), facts.site_dir,
             posixpath.join(staging, "manifest.json"), *remote_wheels],
            "unpacking the wheels",
        )
        if "@@edgekit-installed" not in out:
            raise ProvisionError(f"the installer on {target.address} did not finish: {out.strip()[-500:]}")
    finally:
        try:
            target.exec(["rm", "-rf", "--", staging], timeout=300)
        except EdgekitError:
            pass


def _facts_notes(profile: Any, facts: DeviceFacts) -> list[str]:
    notes = []
    want = ".".join(profile.python.split(".")[:2])
    have = ".".join(facts.python.split(".")[:2])
    if want != have:
        notes.append(f"the device runs Python {facts.python}, the profile {profile.name} says {profile.python}: "
                     f"wheels are chosen for the device's {facts.python}")
    if profile.arch and facts.machine != profile.arch:
        notes.append(f"the device is {facts.machine}, the profile {profile.name} says {profile.arch}")
    return notes


# ------------------------------------------------------------------------------------ doctor


@dataclass
class Check:
    name: str
    status: str  # "ok" | "warn" | "fail" | "info"
    detail: str
    fix: str | None = None


@dataclass
class DoctorReport:
    device: str
    address: str
    checks: list[Check]
    facts: dict[str, Any]
    probe: dict[str, Any]
    python_command: str

    @property
    def ok(self) -> bool:
        return not any(c.status == "fail" for c in self.checks)

    def check(self, name: str) -> Check | None:
        return next((c for c in self.checks if c.name == name), None)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}

    def to_text(self) -> str:
        marks = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "info": "info"}
        lines = [f"edgekit doctor: {self.device} at {self.address}"]
        for c in self.checks:
            lines.append(f"  [{marks.get(c.status, c.status)}] {c.name}: {c.detail}")
            if c.fix and c.status in ("fail", "warn"):
                lines.append(f"         → {c.fix}")
        lines.append("ready to deploy" if self.ok else "not ready: fix the FAIL lines above")
        return "\n".join(lines)


def doctor(
    device: Any,
    host: str,
    *,
    ssh: SSHOptions | dict[str, Any] | None = None,
    site_dir: str = DEFAULT_SITE_DIR,
    profile_files: Iterable[str] = (),
    progress: Progress | None = None,
) -> DoctorReport:
    """What the device has and lacks for ``edgekit deploy``, and what to do about it."""
    from edgekit.devices import get as get_profile

    say = progress or (lambda _msg: None)
    profile = get_profile(device, profile_files) if isinstance(device, str) else device
    ssh = SSHOptions.coerce(ssh)  # built once: the target and the facts script use the same options
    python = ssh.python or profile.ssh.python
    provision_cmd = f"edgekit provision --device {profile.name} --host {host}"
    with _open_target(profile, host, ssh) as target:
        address = target.address
        say(f"checking {address}")
        facts = device_facts(target, python, site_dir)
        # a package-managed device (Termux) has no edgekit site folder to put first
        command = python if profile.install.manager != "wheels" else runner_python(python, facts.site_dir)
        say("probing the runtimes with the runner")
        probe = probe_runtimes(target, command)
    checks = _doctor_checks(profile, facts, probe, provision_cmd)
    return DoctorReport(device=profile.name, address=address, checks=checks, facts=asdict(facts), probe=probe,
                        python_command=command)


@dataclass(frozen=True)
class _DoctorInputs:
    """What every doctor check reads: the profile, the device's facts, the runner's probe."""

    profile: Any
    facts: DeviceFacts
    probe: dict[str, Any]
    provision_cmd: str  # the `edgekit provision` line a fix suggests

    @property
    def packaged(self) -> bool:
        """Do the runtimes come from the device's package manager (not PyPI wheels)?"""
        return self.profile.install.manager != "wheels"

    @property
    def state(self) -> dict[str, Any]:
        """The device's clock, temperature and throttling before the probe ran."""
        return self.probe.get("state_before") or {}


def _python_check(d: _DoctorInputs) -> Iterator[Check]:
    """The device's Python against the profile's (major.minor must match)."""
    profile, facts = d.profile, d.facts
    want = ".".join(profile.python.split(".")[:2])
    have = ".".join(facts.python.split(".")[:2])
    if want == have:
        same = "" if facts.python == profile.python else f" (profile says {profile.python})"
        yield Check("python", "ok", f"Python {facts.python}{same}")
    else:
        yield Check("python", "warn", f"Python {facts.python}, the profile says {profile.python}",
                    "update the profile's `python:` (or the device) so that tests match the device")


def _arch_check(d: _DoctorInputs) -> Iterator[Check]:
    """The device's machine against the profile's architecture."""
    if d.facts.machine == d.profile.arch:
        yield Check("arch", "ok", d.facts.machine)
    else:
        yield Check("arch", "fail", f"{d.facts.machine}, the profile says {d.profile.arch}",
                    "check --device: this looks like another kind of board")


def _libc_check(d: _DoctorInputs) -> Iterator[Check]:
    """Which C library, and so where the runtimes can come from."""
    profile, facts = d.profile, d.facts
    if d.packaged:
        libc = "bionic (Android)" if facts.is_android else (f"glibc {facts.glibc}" if facts.glibc else "not glibc")
        yield Check("libc", "ok" if facts.is_android else "info",
                    f"{libc}: the runtimes come from {profile.install.manager} packages, not PyPI wheels")
    elif facts.is_android:
        yield Check("libc", "fail", "bionic (Android): no PyPI wheel of the runtimes runs here",
                    f"use --device android-arm64 (Termux packages); on the device: {_termux_command()}")
    elif facts.glibc:
        yield Check("glibc", "ok", f"glibc {facts.glibc} → wheels {facts.platform_key}")
    else:
        yield Check("glibc", "warn", "not glibc: manylinux wheels will not run here",
                    "install the runtime with the device's package manager")


def _numpy_check(d: _DoctorInputs) -> Iterator[Check]:
    """numpy, which the runner itself needs."""
    facts = d.facts
    numpy = (d.probe.get("device") or {}).get("numpy")
    if numpy:
        where = "the device's" if facts.dists.get("numpy") == numpy or d.packaged else f"from {facts.site_dir}"
        yield Check("numpy", "ok", f"numpy {numpy} ({where})")
    elif d.packaged:
        yield Check("numpy", "fail", "numpy does not import (the runner needs it)",
                    f"on the device: {d.profile.install.command(['numpy'])}")
    else:
        yield Check("numpy", "fail", "numpy does not import (the runner needs it)",
                    f"sudo apt install python3-numpy on the device, or `{d.provision_cmd}` "
                    "(it then installs numpy into its private folder)")


def _runtime_checks(d: _DoctorInputs) -> Iterator[Check]:
    """One check per format of the profile: does one of its runtimes import?"""
    found = d.probe.get("runtimes") or {}
    for fmt, names in d.profile.runtimes.items():
        usable = [(n, found[n]) for n in names if (found.get(n) or {}).get("available")]
        if usable:
            name, entry = usable[0]
            extra = f"; also {', '.join(n for n, _ in usable[1:])}" if len(usable) > 1 else ""
            yield Check(f"runtime {fmt}", "ok", f"{name} {entry.get('version')}{extra}")
        else:
            errors = "; ".join(f"{n}: {(found.get(n) or {}).get('error') or 'not found'}" for n in names)
            fix = (f"on the device: {d.profile.install.command(names[:1])}" if d.packaged
                   else f"run `{d.provision_cmd}` (add your -i/--known-hosts flags)")
            yield Check(f"runtime {fmt}", "fail", f"missing: none of {', '.join(names)} imports ({errors})", fix)


def _provisioned_check(d: _DoctorInputs) -> Iterator[Check]:
    """What ``edgekit provision`` installed on the device, if anything."""
    facts, manifest = d.facts, d.facts.manifest
    if d.packaged and not manifest:
        yield Check("provisioned", "info", f"nothing: {d.profile.name}'s runtimes come from "
                                           f"{d.profile.install.manager} packages")
    elif manifest:
        pkgs = ", ".join(f"{p['name']} {p['version']}" for p in manifest.get("packages") or [])
        yield Check("provisioned", "info", f"{facts.site_dir}: {pkgs} (installed {manifest.get('installed_at')})")
    else:
        yield Check("provisioned", "info", f"nothing installed by edgekit in {facts.site_dir}")


def _disk_check(d: _DoctorInputs) -> Iterator[Check]:
    """Free space in the home folder (runtimes, models and data go there)."""
    facts = d.facts
    if facts.free_disk_mib is None:
        yield Check("disk", "info", "free space unknown")
    elif facts.free_disk_mib < LOW_DISK_MIB:
        yield Check("disk", "warn", f"{facts.free_disk_mib} MiB free in {facts.home}",
                    "free space: runtimes need ~200 MiB, each run its model and data")
    else:
        yield Check("disk", "ok", f"{facts.free_disk_mib} MiB free in {facts.home}")


def _memory_check(d: _DoctorInputs) -> Iterator[Check]:
    """The device's memory, noted when it is far from the profile's (nothing when unknown)."""
    facts, profile = d.facts, d.profile
    if facts.mem_total_mib:
        status = "ok"
        detail = f"{facts.mem_total_mib} MiB total, {facts.mem_available_mib} MiB available"
        if abs(facts.mem_total_mib - profile.memory_mib) > 0.3 * profile.memory_mib:
            status = "info"
            detail += f" (the profile says {profile.memory_mib} MiB)"
        yield Check("memory", status, detail)


def _governor_check(d: _DoctorInputs) -> Iterator[Check]:
    """The CPU frequency governor: anything but performance makes latency vary."""
    governor = d.state.get("governor")
    if governor is None:
        yield Check("governor", "info", "unknown (no cpufreq in /sys)")
    elif governor == "performance":
        yield Check("governor", "ok", governor)
    else:
        yield Check("governor", "warn", f"{governor}: latency will vary with the clock",
                    "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor")


def _temperature_check(d: _DoctorInputs) -> Iterator[Check]:
    """The SoC's temperature: a hot one throttles."""
    temp = d.state.get("temperature_c")
    if temp is None:
        yield Check("temperature", "info", "unknown (no thermal zone)")
    elif temp >= 70:
        yield Check("temperature", "warn", f"{temp} °C: the SoC may throttle",
                    "cool the board (heatsink/fan) and let it idle before measuring")
    else:
        yield Check("temperature", "ok", f"{temp} °C")


def _throttling_check(d: _DoctorInputs) -> Iterator[Check]:
    """Throttling (under-voltage, heat) now or since boot, where vcgencmd reports it."""
    throttled = d.state.get("throttled")
    if throttled is None:
        yield Check("throttling", "info", "unknown (no vcgencmd)")
        return
    now = [k for k, v in (throttled.get("now") or {}).items() if v]
    since = [k for k, v in (throttled.get("since_boot") or {}).items() if v]
    if now:
        yield Check("throttling", "warn", f"now: {', '.join(now)}",
                    "use the official power supply and cooling; measure after it clears")
    elif since:
        yield Check("throttling", "info", f"since boot: {', '.join(since)} ({throttled.get('raw')})")
    else:
        yield Check("throttling", "ok", "none")


def _emulation_check(d: _DoctorInputs) -> Iterator[Check]:
    """A device under qemu runs, but its latency says nothing of the real one."""
    emulated_by = (d.probe.get("device") or {}).get("emulated_by")
    if emulated_by:
        yield Check("emulation", "info", f"runs under {emulated_by}: latency is not representative")


# the doctor's checks, in the order its report lists them
_DOCTOR_CHECKS: tuple[Callable[[_DoctorInputs], Iterator[Check]], ...] = (
    _python_check, _arch_check, _libc_check, _numpy_check, _runtime_checks, _provisioned_check, _disk_check,
    _memory_check, _governor_check, _temperature_check, _throttling_check, _emulation_check,
)


def _doctor_checks(profile: Any, facts: DeviceFacts, probe: dict[str, Any], provision_cmd: str) -> list[Check]:
    inputs = _DoctorInputs(profile, facts, probe, provision_cmd)
    return [check for run in _DOCTOR_CHECKS for check in run(inputs)]


__all__ = [
    "DEFAULT_SITE_DIR",
    "Check",
    "DeviceFacts",
    "DoctorReport",
    "ProvisionError",
    "ProvisionResult",
    "WheelResolver",
    "default_runtimes",
    "device_facts",
    "doctor",
    "manylinux_platforms",
    "provision",
    "runner_python",
    "runtime_requirements",
]
