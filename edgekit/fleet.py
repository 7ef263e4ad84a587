"""Profile one model on many devices at once: ``edgekit deploy --host a --host b`` / ``--hosts fleet.yaml``.

The model is exported ONCE on the host (``edgekit.deploy.prepare_deploy``); every device then
gets its own SSH target (one connection each) and runs the same three jobs
(``edgekit.deploy.measure_on_target``) in a thread pool of ``concurrency`` workers. A device
that fails gets a row with the one-line error; the others carry on. The report has one row per
device and the spread of the median latency across the devices that answered.

``fleet.yaml``::

    concurrency: 4            # optional (default: up to 8 devices at a time)
    defaults:                 # optional: SSH options for every device
      python: /opt/venv/bin/python3
    hosts:
      - pi@10.0.0.11          # an address or an ~/.ssh/config alias
      - host: pi-kitchen      # or a mapping: host plus per-device options
        name: kitchen         # the row's label (default: the host)
        workdir: /data/edgekit
        identity: ~/.ssh/id_kitchen

Per-device keys: ``host`` (required), ``name``, ``user``, ``port``, ``python``, ``workdir``,
``identity`` (a key file), ``known_hosts``, ``connect_timeout``, ``command_timeout``.
"""

from __future__ import annotations

import dataclasses
import os
import statistics
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from pydantic import BaseModel, ConfigDict, Field

from edgekit import __version__
from edgekit.errors import EdgekitError, UsageError
from edgekit.report.progress import Progress, as_progress
from edgekit.report.schema import DeployReport

MAX_CONCURRENCY = 8
_HOST_KEYS = {"host", "name", "user", "port", "python", "workdir", "identity", "known_hosts",
              "connect_timeout", "command_timeout"}
_SSH_OPTION_NAMES = {"identity": "key_filename"}  # fleet.yaml key -> SSHOptions field


@dataclass
class FleetHost:
    """One device of a fleet: where it is and its own SSH options (over the fleet's)."""

    host: str
    name: str = ""
    ssh: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.host


def _host_entry(entry: Any, where: str, defaults: dict[str, Any]) -> FleetHost:
    if isinstance(entry, str):
        return FleetHost(host=entry, ssh=dict(defaults))
    if not isinstance(entry, dict) or not isinstance(entry.get("host"), str):
        raise UsageError(f"{where}: each host is an address or a mapping with 'host'", "see `edgekit deploy --help`")
    unknown = set(entry) - _HOST_KEYS
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))} for host {entry['host']!r}",
                         f"use {', '.join(sorted(_HOST_KEYS))}")
    ssh = dict(defaults)
    for key, value in entry.items():
        if key not in ("host", "name"):
            ssh[_SSH_OPTION_NAMES.get(key, key)] = value
    return FleetHost(host=entry["host"], name=str(entry.get("name") or ""), ssh=ssh)


def load_fleet(path: str | os.PathLike[str]) -> tuple[list[FleetHost], int | None]:
    """``(hosts, concurrency or None)`` from a fleet YAML file (see the module docstring)."""
    import yaml

    where = str(path)
    try:
        data = yaml.safe_load(Path(path).read_text())
    except OSError as exc:
        raise UsageError(f"cannot read the fleet file {where}: {exc.strerror or exc}",
                         "check the path of --hosts") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" (line {mark.line + 1})" if mark is not None else ""
        raise UsageError(f"the fleet file {where} is not valid YAML{at}: {getattr(exc, 'problem', None) or exc}",
                         "fix the YAML syntax; `hosts:` takes a list of addresses") from None
    if isinstance(data, list):
        data = {"hosts": data}
    if not isinstance(data, dict) or not isinstance(data.get("hosts"), list) or not data["hosts"]:
        raise UsageError(f"{where}: no hosts", "write `hosts:` followed by a list of addresses")
    unknown = set(data) - {"hosts", "defaults", "concurrency"}
    if unknown:
        raise UsageError(f"{where}: unknown key(s) {', '.join(sorted(unknown))}", "use hosts, defaults, concurrency")
    defaults_raw = data.get("defaults") or {}
    if not isinstance(defaults_raw, dict) or set(defaults_raw) - (_HOST_KEYS - {"host", "name"}):
        raise UsageError(f"{where}: 'defaults' takes {', '.join(sorted(_HOST_KEYS - {'host', 'name'}))}")
    defaults = {_SSH_OPTION_NAMES.get(k, k): v for k, v in defaults_raw.items()}
    concurrency = data.get("concurrency")
    if concurrency is not None and (not isinstance(concurrency, int) or concurrency < 1):
        raise UsageError(f"{where}: concurrency must be a positive integer, not {concurrency!r}")
    hosts = [_host_entry(entry, where, defaults) for entry in data["hosts"]]
    return hosts, concurrency


def check_unique(fleet: Sequence[FleetHost]) -> None:
    """One row per device: the same address (user, port) or label twice would measure one device twice."""
    seen: dict[Any, str] = {}
    for host in fleet:
        for key, what in (((host.host, host.ssh.get("user"), host.ssh.get("port")), "host"), (host.label, "name")):
            if key in seen:
                raise UsageError(f"the fleet lists {what} {host.label!r} twice",
                                 "list each device once; devices behind one address differ by port")
            seen[key] = what


def as_fleet_hosts(hosts: Sequence[str | FleetHost | dict[str, Any]]) -> list[FleetHost]:
    out = []
    for entry in hosts:
        out.append(entry if isinstance(entry, FleetHost) else _host_entry(entry, "hosts", {}))
    return out


class FleetRow(BaseModel):
    """One device's outcome: the headline numbers, or the one-line error."""

    model_config = ConfigDict(extra="allow")

    name: str
    host: str
    address: str = ""
    ok: bool
    error: str | None = None
    error_type: str | None = None
    p50_ms: float | None = None
    p90_ms: float | None = None
    peak_rss_mib: float | None = None
    accuracy: float | None = None
    parity_max_abs_diff: float | None = None
    bytes_pushed: int | None = None
    wall_s: float = 0.0
    warnings: list[str] = []
    report: DeployReport | None = None


class FleetSpread(BaseModel):
    """The median latency (p50) across the devices that answered."""

    n: int = 0
    p50_min_ms: float | None = None
    p50_median_ms: float | None = None
    p50_max_ms: float | None = None
    spread_pct: float | None = None  # (max - min) / median


class FleetReport(BaseModel):
    """What ``deploy_fleet`` measured: one row per device, plus the spread."""

    model_config = ConfigDict(extra="allow")

    kind: str = "fleet"
    edgekit_version: str = __version__
    created_at: str = Field(default_factory=lambda: time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    model: str
    device: str
    artifact: dict[str, Any] = {}
    concurrency: int
    rows: list[FleetRow]
    spread: FleetSpread
    wall_s: float
    prepare_s: float
    host_cpu_s: float

    @property
    def ok(self) -> bool:
        return all(row.ok for row in self.rows)

    @property
    def failed(self) -> list[FleetRow]:
        return [row for row in self.rows if not row.ok]

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(indent=indent)


def _spread(rows: list[FleetRow]) -> FleetSpread:
    values = sorted(row.p50_ms for row in rows if row.ok and row.p50_ms is not None)
    if not values:
        return FleetSpread()
    median = statistics.median(values)
    return FleetSpread(n=len(values), p50_min_ms=values[0], p50_median_ms=median, p50_max_ms=values[-1],
                       spread_pct=(values[-1] - values[0]) / median * 100 if median else None)


def _row(host: FleetHost, report: DeployReport, wall_s: float) -> FleetRow:
    transfer = getattr(report.target, "transfer", None) or {}
    return FleetRow(
        name=host.label, host=host.host, address=report.target.address, ok=True,
        p50_ms=report.latency.p50_ms, p90_ms=report.latency.p90_ms, peak_rss_mib=report.memory.peak_rss_mib,
        accuracy=report.accuracy.accuracy if report.accuracy else None,
        parity_max_abs_diff=report.parity.max_abs_diff if report.parity else None,
        bytes_pushed=transfer.get("bytes_pushed"), wall_s=wall_s, warnings=list(report.warnings), report=report,
    )


def _prefixed(say: Progress, label: str) -> Progress:
    """``say`` with every note prefixed by the device's label (tasks pass through)."""

    class _Prefixed(Progress):
        def note(self, message: str) -> None:
            say.note(f"[{label}] {message}")

        def task(self, description: str, total: float | None = None, unit: str = ""):  # type: ignore[override]
            return say.task(f"[{label}] {description}", total=total, unit=unit)

    return _Prefixed()


def deploy_fleet(model: str, device: str, hosts: Sequence[str | FleetHost | dict[str, Any]],
                 options: Any = None, progress: Progress | Callable[[str], None] | None = None,
                 concurrency: int | None = None) -> FleetReport:
    """Export MODEL for DEVICE once, then measure it on every host concurrently.

    ``options`` is a ``DeployOptions`` (its ``host``/``emulate`` are ignored; its ``ssh`` applies
    to every host, under each host's own options). Never raises for one device's failure: that
    device's row carries the error. Raises for what concerns them all (a bad model, profile or
    export).
    """
    from edgekit.deploy import DeployOptions, measure_on_target, prepare_deploy
    from edgekit.targets import create_target

    options = dataclasses.replace(options) if options is not None else DeployOptions()
    fleet = as_fleet_hosts(hosts)
    if not fleet:
        raise UsageError("a fleet needs at least one host", "pass --host more than once, or --hosts fleet.yaml")
    check_unique(fleet)
    if options.save_outputs:
        raise UsageError("--save-outputs writes one file: use it with one --host", "deploy to that device alone")
    options.emulate, options.host = False, None
    workers = max(1, min(concurrency or MAX_CONCURRENCY, len(fleet)))
    say = as_progress(progress)
    cpu0, wall0 = time.process_time(), time.monotonic()
    with tempfile.TemporaryDirectory(prefix="edgekit-fleet-") as tmp:
        work = Path(tmp)
        prepared = prepare_deploy(model, device, options, say, work)
        prepare_s = time.monotonic() - wall0
        say(f"measuring on {len(fleet)} devices, {workers} at a time")
        lock = threading.Lock()

        def measure(index: int, host: FleetHost) -> FleetRow:
            started = time.monotonic()
            label_say = _prefixed(say, host.label)
            try:
                ssh = options.ssh.merged(host.ssh)  # the host's own options over the fleet's
                target = create_target(prepared.profile, host=host.host, progress=label_say, ssh=ssh)
                report = measure_on_target(prepared, target, options, label_say, local=work / f"device-{index}")
            except EdgekitError as exc:
                with lock:
                    say(f"[{host.label}] failed: {exc.one_line()}")
                return FleetRow(name=host.label, host=host.host, ok=False, error=exc.one_line(),
                                error_type=type(exc).__name__, wall_s=time.monotonic() - started)
            except Exception as exc:  # noqa: BLE001 - one device's bug must not stop the others
                first = str(exc).splitlines()[0] if str(exc) else ""
                return FleetRow(name=host.label, host=host.host, ok=False, error_type=type(exc).__name__,
                                error=f"internal error: {type(exc).__name__}: {first} (a bug in edgekit; "
                                      "rerun this device alone with --debug)",
                                wall_s=time.monotonic() - started)
            return _row(host, report, time.monotonic() - started)

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="edgekit-fleet") as pool:
            rows = list(pool.map(measure, range(len(fleet)), fleet))
    artifact = prepared.artifact
    return FleetReport(
        model=model, device=prepared.profile.name, concurrency=workers, rows=rows, spread=_spread(rows),
        artifact={"file": artifact.path.name, "format": artifact.format, "precision": artifact.precision,
                  "size_bytes": artifact.size_bytes, "sha256": artifact.sha256},
        wall_s=time.monotonic() - wall0, prepare_s=prepare_s, host_cpu_s=time.process_time() - cpu0,
    )


def _ms(value: float | None) -> str:
    return "" if value is None else f"{value:.3g}"


def render_fleet_text(report: FleetReport) -> str:
    """The fleet table as plain text: one row per device, then the spread and the failures."""
    headers = ["device", "address", "p50 ms", "p90 ms", "peak MiB", "accuracy", "pushed", "time s", "status"]
    lines = []
    for row in report.rows:
        pushed = "" if row.bytes_pushed is None else _bytes(row.bytes_pushed)
        status = "ok" if row.ok else "FAILED"
        if row.ok and row.warnings:
            status = f"ok ({len(row.warnings)} warning{'s' if len(row.warnings) > 1 else ''})"
        lines.append([row.name, row.address or row.host, _ms(row.p50_ms), _ms(row.p90_ms),
                      "" if row.peak_rss_mib is None else f"{row.peak_rss_mib:.0f}",
                      "" if row.accuracy is None else f"{row.accuracy * 100:.2f} %", pushed,
                      f"{row.wall_s:.1f}", status])
    widths = [max(len(h), *(len(line[i]) for line in lines)) for i, h in enumerate(headers)]
    out = [f"{report.model} on {len(report.rows)} × {report.device} "
           f"({report.artifact.get('format', '?')}/{report.artifact.get('precision', '?')}, "
           f"{_bytes(report.artifact.get('size_bytes') or 0)})", ""]
    out.append("  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip())
    for line in lines:
        out.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    s = report.spread
    out.append("")
    if s.n:
        out.append(f"p50 across {s.n} device{'s' if s.n > 1 else ''}: min {_ms(s.p50_min_ms)} ms, "
                   f"median {_ms(s.p50_median_ms)} ms, max {_ms(s.p50_max_ms)} ms"
                   + (f" (spread {s.spread_pct:.0f} %)" if s.spread_pct is not None and s.n > 1 else ""))
    out.append(f"{len(report.rows) - len(report.failed)} of {len(report.rows)} devices ok; "
               f"wall {report.wall_s:.1f} s (export {report.prepare_s:.1f} s), host CPU {report.host_cpu_s:.1f} s, "
               f"{report.concurrency} at a time")
    for row in report.failed:
        out.append(f"{row.name}: {row.error}")
    return "\n".join(out)


def _bytes(n: int) -> str:
    if n < 1024:
        return f"{n} B"
    if n < 1 << 20:
        return f"{n / 1024:.0f} KiB"
    return f"{n / (1 << 20):.1f} MiB"



__all__ = ["FleetHost", "FleetReport", "FleetRow", "FleetSpread", "as_fleet_hosts", "deploy_fleet", "load_fleet",
           "render_fleet_text"]
