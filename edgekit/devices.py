"""Device profiles: YAML files describing a board, validated with pydantic.

Search order (a later one overrides an earlier one of the same name): the built-ins shipped
with edgekit, ``~/.config/edgekit/devices/``, a ``device_profiles/`` folder in the current
directory, then any file passed with ``--profile``.
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path
from typing import Any, Iterable, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from edgekit.errors import ProfileError
from edgekit.export import FORMATS
from edgekit.resources import builtin_profiles_dir

KNOWN_FORMATS = tuple(FORMATS)  # the format registry's names
KNOWN_PRECISIONS = ("fp32", "fp16", "int8")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CPU(_Strict):
    model: str
    cores: int = Field(gt=0)
    max_clock_mhz: int = Field(gt=0)


class SSHDefaults(_Strict):
    user: str
    port: int = Field(default=22, gt=0, lt=65536)
    workdir: str = "~/.cache/edgekit"
    python: str = "python3"


class Preference(_Strict):
    format: str
    precision: str
    # Export options that suit this device, e.g. {weight_type: uint8} for ONNX int8 on x86.
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("format", "precision")
    @classmethod
    def _known(cls, value: str, info: ValidationInfo) -> str:
        known = KNOWN_FORMATS if info.field_name == "format" else KNOWN_PRECISIONS
        if value not in known:
            raise ValueError(f"unknown {info.field_name} {value!r}; known: {', '.join(known)}")
        return value


class EmulatorSpec(_Strict):
    distro: str  # "debian" | "ubuntu"
    release: str  # "bookworm"
    arch: str  # Debian architecture name: "arm64"


# the device's own package managers: the command that installs packages on it
PACKAGE_MANAGERS = {"pkg": "pkg install"}


class InstallSpec(_Strict):
    """How the device gets numpy and its inference runtimes.

    ``wheels`` (the default): ``edgekit provision`` downloads the manylinux wheels on the host and
    pushes them (glibc devices, no internet needed on the device). ``pkg``: Termux on Android,
    where no PyPI wheel runs (bionic libc, not glibc) and Termux builds the runtimes itself;
    ``packages`` maps what the runner imports (``numpy``, a runtime name) or needs (``sshd``) to
    the package that provides it, and ``provision``/``doctor`` print the ``pkg install`` line.
    """

    manager: Literal["wheels", "pkg"] = "wheels"
    packages: dict[str, str] = {}

    @model_validator(mode="after")
    def _packages_fit_the_manager(self) -> "InstallSpec":
        if self.manager == "wheels" and self.packages:
            raise ValueError("packages are for a package manager (manager: pkg); wheels come from PyPI")
        if self.manager != "wheels" and not self.packages:
            raise ValueError(f"manager {self.manager} needs packages (e.g. numpy: python-numpy)")
        return self

    def command(self, needs: Iterable[str] | None = None) -> str | None:
        """The command to run on the device for ``needs`` (keys of ``packages``; None: all of them)."""
        if self.manager == "wheels":
            return None
        wanted = list(self.packages) if needs is None else [n for n in needs if n in self.packages]
        names = list(dict.fromkeys(self.packages[n] for n in wanted))
        return f"{PACKAGE_MANAGERS[self.manager]} {' '.join(names)}" if names else None


class DeviceProfile(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    description: str
    arch: str
    cpu: CPU
    memory_mib: int = Field(gt=0)
    accelerator: str | None = None
    os: str
    python: str
    runtimes: dict[str, list[str]]
    onnx_providers: list[str] = ["CPUExecutionProvider"]
    preferred: list[Preference] = Field(min_length=1)
    threads: int = Field(gt=0)
    ssh: SSHDefaults
    emulator: EmulatorSpec | None = None
    install: InstallSpec = InstallSpec()
    source: str | None = Field(default=None, exclude=True)

    @field_validator("runtimes")
    @classmethod
    def _runtimes_per_known_format(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = sorted(set(value) - set(KNOWN_FORMATS))
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}; known: {', '.join(KNOWN_FORMATS)}")
        return value

    @model_validator(mode="after")
    def _runtimes_have_packages(self) -> "DeviceProfile":
        if self.install.manager != "wheels":
            missing = [n for names in self.runtimes.values() for n in names if n not in self.install.packages]
            missing += [] if "numpy" in self.install.packages else ["numpy"]
            if missing:
                raise ValueError(f"install.packages names no package for {', '.join(missing)}")
        return self

    def python_version(self) -> tuple[int, ...]:
        return tuple(int(part) for part in self.python.split(".") if part.isdigit())


def user_profile_dirs() -> list[Path]:
    """Folders searched after the built-ins, in increasing priority."""
    config_home = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    dirs = [config_home / "edgekit" / "devices", Path.cwd() / "device_profiles"]
    builtin = builtin_profiles_dir().resolve()
    return [d for d in dirs if d.is_dir() and d.resolve() != builtin]


def load_profile_file(path: str | Path) -> DeviceProfile:
    """Load and validate one profile; errors name the file, the field and the problem."""
    path = Path(path)
    if not path.is_file():
        raise ProfileError(f"profile file not found: {path}", "pass an existing YAML file to --profile")
    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark else ""
        raise ProfileError(f"{path}:{where} is not valid YAML: {getattr(exc, 'problem', exc)}",
                           "fix the YAML syntax") from None
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: a profile must be a YAML mapping", "see device_profiles/pi4.yaml")
    try:
        return DeviceProfile(**data, source=str(path))
    except ValidationError as exc:
        raise ProfileError(f"{path}: {_first_problem(exc)}", "see device_profiles/pi4.yaml for a valid profile") from None


def _first_problem(exc: ValidationError) -> str:
    errors = exc.errors()
    first = errors[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"field '{field}': {first['msg']}{more}"


def _profiles_in(directory: Path) -> Iterable[DeviceProfile]:
    for path in sorted(directory.glob("*.yaml")):
        yield load_profile_file(path)


def all_profiles(extra_files: Iterable[str | Path] = ()) -> dict[str, DeviceProfile]:
    """Every known profile by name, user ones overriding built-ins."""
    profiles: dict[str, DeviceProfile] = {}
    for directory in [builtin_profiles_dir(), *user_profile_dirs()]:
        for profile in _profiles_in(directory):
            profiles[profile.name] = profile
    for path in extra_files:
        profile = load_profile_file(path)
        profiles[profile.name] = profile
    return profiles


def get(name: str, extra_files: Iterable[str | Path] = ()) -> DeviceProfile:
    """The profile called ``name``; an unknown name suggests the closest ones."""
    profiles = all_profiles(extra_files)
    if name in profiles:
        return profiles[name]
    close = difflib.get_close_matches(name, profiles, n=3, cutoff=0.4)
    hint = f"did you mean {' or '.join(close)}?" if close else ""
    hint = (hint + " " if hint else "") + "`edgekit devices` lists them"
    raise ProfileError(f"unknown device {name!r}", hint)


def list_profiles(extra_files: Iterable[str | Path] = ()) -> list[DeviceProfile]:
    return sorted(all_profiles(extra_files).values(), key=lambda p: p.name)


def profile_summary(profile: DeviceProfile) -> dict[str, Any]:
    return profile.model_dump(mode="json") | {"source": profile.source}


__all__ = ["DeviceProfile", "all_profiles", "get", "list_profiles", "load_profile_file", "profile_summary"]
