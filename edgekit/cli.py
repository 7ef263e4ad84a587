"""The ``edgekit`` command: parse, call the Python API, turn typed errors into one line + exit code.

Exit codes are ``edgekit.errors.ExitCode`` (listed in the README). ``--debug`` shows tracebacks.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

from edgekit import __version__
from edgekit.errors import EdgekitError, ExitCode, UsageError
from edgekit.export import FORMATS, int8_mode_names
from edgekit.targets.ssh_options import DEFAULT_SITE_DIR

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with our exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(ExitCode.USAGE)


def _int_at_least(minimum: int, maximum: int | None = None) -> Callable[[str], int]:
    """An argparse type: an integer in [minimum, maximum], refused at parse time (before any work)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < minimum or (maximum is not None and value > maximum):
            bound = f"between {minimum} and {maximum}" if maximum is not None else f"at least {minimum}"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def _number(minimum: float = 0.0, positive: bool = False, below: float | None = None) -> Callable[[str], float]:
    """An argparse type: a finite number >= minimum (> 0 when ``positive``; < ``below`` if given)."""

    def parse(text: str) -> float:
        import math

        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        too_big = below is not None and value >= below
        if not math.isfinite(value) or value < minimum or (positive and value <= 0) or too_big:
            bound = "a positive number" if positive else f"a number >= {minimum:g}"
            bound += f" below {below:g}" if below is not None else ""
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _err(text: str) -> None:
    sys.stderr.write(text.rstrip("\n") + "\n")


@contextlib.contextmanager
def handle_errors(debug: bool) -> Iterator[list[int]]:
    """Map exceptions to one line on stderr and an exit code (stored in the yielded list)."""
    code = [int(ExitCode.OK)]
    try:
        yield code
    except EdgekitError as exc:
        if debug:
            raise
        _err(f"error: {exc.one_line(cli=True)}")
        code[0] = int(exc.exit_code)
    except BrokenPipeError:
        # stdout was closed early (e.g. `| head`): nothing more to say
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code[0] = int(ExitCode.FAILURE)
    except KeyboardInterrupt:
        if debug:
            raise
        _err("interrupted")
        code[0] = int(ExitCode.INTERRUPTED)
    except Exception as exc:  # noqa: BLE001 - a bug: say so, don't dress it as a user error
        if debug:
            raise
        _err(f"internal error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
             " (this is a bug in edgekit; rerun with --debug for the traceback)")
        code[0] = int(ExitCode.INTERNAL)


def _progress(args: argparse.Namespace) -> Any:
    """Progress bars on a terminal, plain lines in logs, nothing with --quiet or --json."""
    from edgekit.report.progress import make_progress

    return make_progress(quiet=getattr(args, "quiet", False) or getattr(args, "json", False))


def _print_notes(notes: Sequence[str], verbose: bool, indent: str = "") -> None:
    """Notes for every reader; with ``--verbose`` also the detail ones (``edgekit.notes``)."""
    from edgekit.notes import is_detail

    for note in notes:
        if verbose or not is_detail(note):
            print(f"{indent}{'detail' if is_detail(note) else 'note':<8} {note}")


def _write_report(path: str, report: Any) -> None:
    from edgekit.outputs import write_json_atomic

    Path(path).parent.mkdir(parents=True, exist_ok=True)  # checked writable before the run
    write_json_atomic(Path(path), report.model_dump(mode="json"))


def _check_addresses(hosts: Sequence[str]) -> None:
    """A malformed --host is refused before the export, not after it."""
    from edgekit.targets.registry import check_address

    for host in hosts:
        check_address(host)


def _check_deploy_outputs(args: argparse.Namespace) -> None:
    """Every file and folder deploy writes, checked before the run (results are never lost at the end)."""
    from edgekit.errors import UsageError
    from edgekit.outputs import check_output_dir, check_output_file

    if args.save_outputs and not args.inputs:
        raise UsageError("--save-outputs needs --inputs", "pass the .npz whose outputs you want back")
    if args.report:
        check_output_file(args.report, "--report", "report.json")
    if args.save_outputs:
        check_output_file(args.save_outputs, "--save-outputs", "outputs.npz")
    if args.out_dir:
        check_output_dir(args.out_dir, "-o/--out-dir")


# --- deploy -------------------------------------------------------------------------------------

# --- your data: DATA for calibration and evaluation, preprocessing, inputs ---------------------

_DATA_HELP = ("example:fashion-mnist, a folder of images (class subfolders give labels), an .npz (one array per "
              "input name, optional y), an .npy, or pkg.module:fn")


def _add_data_flags(p: argparse.ArgumentParser) -> None:
    """--calibration/--eval DATA, --metric, --input and the preprocessing of image folders."""
    data = p.add_argument_group("your data (docs: README, \"Your own model and data\")")
    data.add_argument("--calibration", metavar="DATA", help=f"int8 calibration samples: {_DATA_HELP}")
    data.add_argument("--eval", metavar="DATA", help="evaluate the artifact on these samples (the same DATA as "
                                                      "--calibration is split, seeded: no sample serves both)")
    data.add_argument("--eval-limit", type=_int_at_least(1), help="evaluate on N samples only")
    data.add_argument("--metric", choices=["classification", "agreement", "embedding", "regression"],
                      help="task metric (default: inferred from the labels and the output shape)")
    data.add_argument("--input", action="append", metavar="NAME:SHAPE[:DTYPE[:LOW..HIGH]]",
                      help="a pkg.module:fn model's input, repeatable, e.g. input_ids:1,128:int64:0..30521")
    data.add_argument("--preprocess", metavar="PRESET|FILE.yaml",
                      help="how images become inputs: imagenet, minus1-1, 0-1, raw, inception, or a YAML spec "
                           "(default: the model's own, else RGB [0,1] NCHW)")
    data.add_argument("--resize", metavar="N|H,W", help="images: resize the short side to N, or to H,W")
    data.add_argument("--center-crop", metavar="N|H,W", help="images: center crop")
    data.add_argument("--grayscale", action="store_true", default=None, help="images: one channel")
    data.add_argument("--channel-order", choices=["rgb", "bgr"], help="images: channel order")
    data.add_argument("--layout", choices=["nchw", "nhwc"], help="images: array layout")
    data.add_argument("--mean", metavar="M[,M,M]", help="images: mean on [0,1] pixels")
    data.add_argument("--std", metavar="S[,S,S]", help="images: std on [0,1] pixels")
    data.add_argument("--scale", metavar="S", help="images: raw pixel × S + OFFSET, e.g. 1/128")
    data.add_argument("--offset", metavar="O", help="images: see --scale, e.g. -127/128")


def _preprocess(args: argparse.Namespace) -> Any:
    """The Preprocess the flags describe (None when none is given); refused before any work."""
    from edgekit.data import Preprocess

    return Preprocess.from_options(
        args.preprocess, resize=args.resize, center_crop=args.center_crop, grayscale=args.grayscale,
        channel_order=args.channel_order, layout=args.layout, mean=args.mean, std=args.std, scale=args.scale,
        offset=args.offset)



def _add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="export a model, run it on a device (or emulated), report")
    p.add_argument("model", help="example:NAME, pkg.module:fn, or a .onnx/.tflite file")
    p.add_argument("--device", required=True, help="device profile name (see `edgekit devices`)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--emulate", action="store_true", help="run on this host under the profile's limits")
    where.add_argument("--host", action="append",
                       help="[user@]addr[:port] or an ~/.ssh/config alias; repeat it to profile a fleet")
    where.add_argument("--hosts", metavar="FLEET_YAML", help="profile every device listed in this file at once")
    p.add_argument("--concurrency", type=_int_at_least(1), help="fleet: devices measured at the same time (default up to 8)")
    p.add_argument("--format", choices=list(FORMATS), help="override the profile's preferred format")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="override the profile's precision")
    p.add_argument("--weights", help="state_dict file for a pkg.module:fn model")
    p.add_argument("--input-shape", help="input shape for a pkg.module:fn model, e.g. 1,3,224,224")
    p.add_argument("--runs", type=_int_at_least(1), help="timed inferences (default 200)")
    p.add_argument("--warmup", type=_int_at_least(0), help="warm-up inferences (default 20)")
    p.add_argument("--min-seconds", type=_number(0.0), default=0.0, help="keep timing at least this long")
    p.add_argument("--threads", type=_int_at_least(1), help="runtime threads (default: the profile's)")
    p.add_argument("--inputs", help=".npz of your own inputs, one array per input name")
    p.add_argument("--save-outputs", help="write the device's outputs for --inputs to this .npz")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.add_argument("-o", "--out-dir", help="keep the exported artifacts and manifests here")
    p.add_argument("--report", help="write the report as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show detail notes (converter internals, generic caveats)")
    p.add_argument("--strict", action="store_true", help="fail when parity is over tolerance")
    p.add_argument("--profile-ops", action="store_true",
                   help="also time each operator (ONNX Runtime's profiler, after the timed runs)")
    p.add_argument("--recipe", help="compression recipe (YAML) to run before export")
    p.add_argument("--data", help="data for --recipe: example:fashion-mnist, a folder of images, an .npz/.npy, "
                                  "or pkg.module:fn (as for edgekit compress)")
    _add_data_flags(p)
    _add_ssh_flags(p)
    p.set_defaults(handler=_cmd_deploy)


def _cmd_deploy(args: argparse.Namespace) -> int:
    from edgekit.deploy import DeployOptions, deploy
    from edgekit.report.text import print_report

    _check_deploy_outputs(args)
    _check_addresses(args.host or [])
    preprocess = _preprocess(args)
    fleet = args.hosts or (args.host and len(args.host) > 1)
    options = DeployOptions(
        emulate=args.emulate, host=args.host[0] if args.host and not fleet else None, format=args.format, precision=args.precision,
        weights=args.weights, input_shape=args.input_shape, runs=args.runs, warmup=args.warmup,
        min_seconds=args.min_seconds, threads=args.threads, inputs=args.inputs,
        save_outputs=args.save_outputs, out_dir=args.out_dir, profile_files=args.profile,
        eval_limit=args.eval_limit, strict=args.strict, profile_ops=args.profile_ops, recipe=args.recipe, recipe_data=args.data,
        calibration=args.calibration, eval_data=args.eval, metric=args.metric, preprocess=preprocess,
        input_specs=args.input, ssh=_ssh_options(args),
    )
    if fleet:
        return _deploy_fleet(args, options)
    report = deploy(args.model, args.device, options, progress=_progress(args))
    if args.report:
        _write_report(args.report, report)
    if args.json:
        print(report.to_json())
    else:
        print_report(report, verbose=args.verbose)
    _record(report, announce=not (args.quiet or args.json))
    return int(ExitCode.OK)


def _deploy_fleet(args: argparse.Namespace, options: Any) -> int:
    from edgekit.fleet import deploy_fleet, load_fleet, render_fleet_text

    hosts, concurrency = load_fleet(args.hosts) if args.hosts else (args.host, None)
    _check_addresses([h if isinstance(h, str) else h.host for h in hosts])
    fleet = deploy_fleet(args.model, args.device, hosts, options, progress=_progress(args),
                         concurrency=args.concurrency or concurrency)
    if args.report:
        _write_report(args.report, fleet)
    print(fleet.to_json() if args.json else render_fleet_text(fleet))
    for row in fleet.rows:
        if row.report is not None:
            _record(row.report, announce=False)
    return int(ExitCode.OK if fleet.ok else ExitCode.TARGET)


def _record(report: Any, announce: bool) -> None:
    """Append the run to the local history; a store problem never hides or fails the result."""
    from edgekit.errors import DataError
    from edgekit.report.store import record_run

    try:
        record = record_run(report)
    except DataError as exc:
        _err(f"warning: run not recorded: {exc.one_line(cli=True)}")
        return
    if announce:
        _err(f"· recorded as run {record.id} ({record.run_id}); see `edgekit runs`")


# --- devices ------------------------------------------------------------------------------------

def _add_devices(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("devices", help="list device profiles, or show one")
    p.add_argument("action", nargs="?", choices=["list", "show"], default="list")
    p.add_argument("name", nargs="?", help="profile name for `show`")
    p.add_argument("--json", action="store_true")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.set_defaults(handler=_cmd_devices)


def _cmd_devices(args: argparse.Namespace) -> int:
    from edgekit import devices

    if args.action == "show":
        if not args.name:
            from edgekit.errors import UsageError

            raise UsageError("`edgekit devices show` needs a profile name", "e.g. edgekit devices show pi4")
        profile = devices.get(args.name, args.profile)
        data = devices.profile_summary(profile)
        print(json.dumps(data, indent=2) if args.json else _profile_text(data))
        return int(ExitCode.OK)
    profiles = devices.list_profiles(args.profile)
    if args.json:
        print(json.dumps([devices.profile_summary(p) for p in profiles], indent=2))
        return int(ExitCode.OK)
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("name", "arch", "cpu", "memory", "os", "python", "prefers"):
        table.add_column(column, no_wrap=True)
    for p in profiles:
        prefers = ", ".join(f"{x.format}/{x.precision}" for x in p.preferred[:2])
        table.add_row(p.name, p.arch, f"{p.cpu.cores}× {p.cpu.max_clock_mhz} MHz", f"{p.memory_mib} MiB",
                      p.os.split(" (")[0], p.python, prefers)
    Console(width=max(Console().width, 120)).print(table)
    return int(ExitCode.OK)


def _profile_text(data: dict[str, Any], indent: str = "") -> str:
    lines = []
    for key, value in data.items():
        if isinstance(value, dict):
            lines.append(f"{indent}{key}:")
            lines.append(_profile_text(value, indent + "  "))
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            lines.append(f"{indent}{key}: " + ", ".join("/".join(str(v) for v in item.values()) for item in value))
        else:
            lines.append(f"{indent}{key}: {value}")
    return "\n".join(lines)


# --- report, runs, compare ----------------------------------------------------------------------

def _add_report(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="show a report: text, a self-contained HTML page, or Markdown")
    p.add_argument("run", help="a report JSON file, or a run from `edgekit runs` (id or run id)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--html", metavar="OUT", help="write a self-contained HTML page (plots inline, no network)")
    out.add_argument("--md", nargs="?", const="-", metavar="OUT", help="Markdown for a pull request (stdout or OUT)")
    out.add_argument("--json", action="store_true", help="the report as JSON, upgraded to the current schema")
    p.add_argument("-v", "--verbose", action="store_true", help="text: also show detail notes")
    p.set_defaults(handler=_cmd_report)


def _cmd_report(args: argparse.Namespace) -> int:
    from edgekit.report.schema import DeployReport
    from edgekit.report.store import resolve_run

    from edgekit.outputs import check_output_file

    for flag, path, example in (("--html", args.html, "report.html"),
                                ("--md", args.md if args.md != "-" else None, "report.md")):
        if path:
            check_output_file(path, flag, example)
    report = resolve_run(args.run)
    if args.html:
        from edgekit.report.html import write_html

        write_html(report, args.html)
        if not args.quiet:
            _err(f"· wrote {args.html}")
    elif args.md:
        from edgekit.report.markdown import render_markdown

        if args.md == "-":
            sys.stdout.write(render_markdown(report))
        else:
            from edgekit.outputs import write_text_atomic

            write_text_atomic(Path(args.md), render_markdown(report))
            if not args.quiet:
                _err(f"· wrote {args.md}")
    elif args.json:
        print(report.to_json())
    elif isinstance(report, DeployReport):
        from edgekit.report.text import print_report

        print_report(report, verbose=args.verbose)
    else:  # text.py renders deploy reports; Markdown reads well as plain text for the others
        from edgekit.report.markdown import render_markdown

        sys.stdout.write(render_markdown(report))
    return int(ExitCode.OK)


def _add_runs(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("runs", help="list the recorded runs ($EDGEKIT_HOME or ./.edgekit)")
    p.add_argument("--model", help="only runs of this MODEL")
    p.add_argument("--device", help="only runs on this device profile")
    p.add_argument("--kind", choices=["deploy", "export", "compress"], help="only reports of this kind")
    p.add_argument("-n", "--limit", type=_int_at_least(0), default=20, help="the newest N runs (default 20; 0: all)")
    p.add_argument("--add", nargs="+", metavar="REPORT", help="record report JSON files (e.g. a CI baseline)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(handler=_cmd_runs)


def _cmd_runs(args: argparse.Namespace) -> int:
    from edgekit.report.load import load_report
    from edgekit.report.store import RunStore

    store = RunStore()
    if args.add:
        for path in args.add:
            record = store.append(load_report(path))
            if not args.quiet:
                _err(f"· recorded {path} as run {record.id} ({record.run_id})")
        return int(ExitCode.OK)
    records = store.list(args.model, args.device, args.kind, limit=args.limit or None)
    if args.json:
        print(json.dumps([r.to_dict() for r in records], indent=2))
        return int(ExitCode.OK)
    if not records:
        _err(f"no runs recorded in {store.path}")
        return int(ExitCode.OK)
    from rich.console import Console
    from rich.table import Table

    table = Table(box=None)
    for column in ("id", "run id", "time (UTC)", "kind", "model", "device", "artifact", "p50 ms", "accuracy"):
        table.add_column(column, no_wrap=True, justify="right" if column in ("id", "p50 ms", "accuracy") else "left")
    for r in records:
        table.add_row(str(r.id), r.run_id, r.created_at.replace("T", " ")[:19], r.kind, r.model, r.device or "",
                      f"{r.artifact} ({r.format}/{r.precision})" if r.artifact else "",
                      f"{r.p50_ms:.3g}" if r.p50_ms is not None else "",
                      f"{r.accuracy * 100:.2f} %" if r.accuracy is not None else "")
    Console(width=max(Console().width, 140)).print(table)
    return int(ExitCode.OK)


def _add_compare(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compare", help="compare two runs; exit 1 on a significant regression (a CI gate)")
    p.add_argument("runs", nargs="*", metavar="RUN", help="A (baseline) and B: report files, run ids or store ids")
    p.add_argument("--last", type=_int_at_least(2), metavar="N", help="compare the oldest and newest of the last N deploy runs")
    p.add_argument("--model", help="with --last: only runs of this MODEL")
    p.add_argument("--device", help="with --last: only runs on this device profile")
    p.add_argument("--threshold", type=_number(0.0), default=5.0, metavar="PCT",
                   help="regression: median latency or size up by more than PCT %% (default 5)")
    p.add_argument("--alpha", type=_number(positive=True, below=1.0), default=0.05,
                   help="significance level of the latency test (default 0.05)")
    p.add_argument("--accuracy-drop", type=_number(0.0), default=0.5, metavar="PP",
                   help="regression: accuracy down by more than PP percentage points (default 0.5)")
    out = p.add_mutually_exclusive_group()
    out.add_argument("--json", action="store_true")
    out.add_argument("--md", action="store_true", help="Markdown for a pull request comment")
    p.set_defaults(handler=_cmd_compare)


def _cmd_compare(args: argparse.Namespace) -> int:
    from edgekit.errors import RegressionError, UsageError
    from edgekit.report.compare import compare_reports, render_comparison_markdown, render_comparison_text
    from edgekit.report.store import RunStore, resolve_deploy_run

    store = RunStore()
    if args.last is not None and args.runs:
        raise UsageError("pass two runs or --last N, not both", "e.g. edgekit compare --last 2")
    if args.last is None and (args.model or args.device):
        raise UsageError("--model and --device select runs for --last", "e.g. edgekit compare --last 2 --device pi4")
    if args.last is not None:
        a, b = store.last_two(args.last, args.model, args.device)
    elif len(args.runs) == 2:
        a, b = (resolve_deploy_run(ref, store) for ref in args.runs)
    else:
        raise UsageError(f"compare needs two runs, got {len(args.runs)}",
                         "pass A and B (report files, run ids or store ids), or --last 2")
    result = compare_reports(a, b, threshold=args.threshold / 100, alpha=args.alpha,
                             accuracy_drop=args.accuracy_drop / 100)
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
    elif args.md:
        sys.stdout.write(render_comparison_markdown(result))
    else:
        print(render_comparison_text(result))
    if result.has_regression:
        raise RegressionError(f"B is worse than A: {'; '.join(result.regressions)}",
                              "see the comparison above; --threshold and --accuracy-drop set the tolerance")
    return int(ExitCode.OK)


# --- emulator, provision, doctor ----------------------------------------------------------------

def _add_ssh_flags(p: argparse.ArgumentParser) -> None:
    ssh = p.add_argument_group("ssh")
    ssh.add_argument("--identity", "-i", help="private key file")
    ssh.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    ssh.add_argument("--accept-new-host-key", action="store_true",
                     help="trust and record the host key of a host seen for the first time")
    ssh.add_argument("--python", help="the device's python (default: the profile's)")
    ssh.add_argument("--connect-timeout", type=_number(positive=True), metavar="S",
                     help="give up connecting after S seconds (default 10)")
    ssh.add_argument("--command-timeout", type=_number(positive=True), metavar="S",
                     help="stop a run on the device after S seconds (default 600)")
    ssh.add_argument("--password", action="store_true",
                     help="ask for an SSH password (tried after the keys; never stored or logged)")


def _ssh_options(args: argparse.Namespace) -> Any:
    """The SSH flags as one ``SSHOptions`` (built here once; deploy, fleets and provision take it)."""
    from edgekit.targets.ssh_options import SSHOptions

    options = {"key_filename": args.identity, "known_hosts": args.known_hosts,
               "accept_new_host_key": args.accept_new_host_key or None, "python": args.python}
    for name in ("connect_timeout", "command_timeout"):
        value = getattr(args, name, None)
        if value is not None and not value > 0:
            from edgekit.errors import UsageError

            raise UsageError(f"--{name.replace('_', '-')} must be a positive number of seconds")
        options[name] = value
    if getattr(args, "password", False):
        import getpass

        options["password"] = getpass.getpass("SSH password: ")
    if sys.stdin.isatty():
        options["passphrase"] = _passphrase_prompt()
    return SSHOptions.from_mapping(options)


def _passphrase_prompt() -> Callable[[Path], str]:
    """Asks for an encrypted key file's passphrase once per file (also across a fleet's threads)."""
    import getpass
    import threading

    lock = threading.Lock()
    answers: dict[Path, str] = {}

    def ask(path: Path) -> str:
        with lock:
            if path not in answers:
                answers[path] = getpass.getpass(f"passphrase for {path}: ")
            return answers[path]

    return ask


# --- device -------------------------------------------------------------------------------------

def _add_device(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("device", help="look after a device: `device clean` empties edgekit's cache on it")
    p.add_argument("action", choices=["clean"], help="clean: remove the cached runner, models and inputs")
    p.add_argument("--host", required=True, help="[user@]addr[:port] or an ~/.ssh/config alias")
    p.add_argument("--device", help="device profile (for its SSH user, port, python and work directory)")
    p.add_argument("--workdir", help="edgekit's folder on the device (default: the profile's, ~/.cache/edgekit)")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.add_argument("--json", action="store_true")
    _add_ssh_flags(p)
    p.set_defaults(handler=_cmd_device)


def _cmd_device(args: argparse.Namespace) -> int:
    from edgekit.targets.ssh import clean_device

    ssh = _ssh_options(args).merged({"workdir": args.workdir or None})
    removed = clean_device(args.host, device=args.device, profile_files=args.profile, ssh=ssh)
    if args.json:
        print(json.dumps(removed, indent=2))
    else:
        stale = f" and {removed['run_dirs']} stale run directories" if removed["run_dirs"] else ""
        print(f"{removed['address']}: removed {removed['entries']} files ({removed['bytes'] / (1 << 20):.1f} MiB) "
              f"from {removed['cache_dir']}{stale}")
    return int(ExitCode.OK)


def _add_emulator(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("emulator", help="an emulated aarch64 device (qemu-user + sshd on 127.0.0.1); needs root")
    esub = p.add_subparsers(dest="emulator_command", required=True, parser_class=_Parser)
    s = esub.add_parser("start", help="build (once, cached) and start an emulated device")
    s.add_argument("device", help="device profile name, e.g. pi4")
    s.add_argument("--name", help="instance name (default: the device's name)")
    s.add_argument("--port", type=_int_at_least(1, 65535), help="port on 127.0.0.1 (default: the last one if free, else any)")
    s.add_argument("--fresh", action="store_true", help="discard the device's changes (installed runtimes, files)")
    s.add_argument("--rebuild", action="store_true", help="rebuild the cached root filesystem")
    s.add_argument("--no-memory-limit", action="store_true", help="do not apply the profile's memory size")
    s.add_argument("--ready-timeout", type=_number(positive=True), default=180.0, help="seconds to wait for sshd (default 180)")
    s.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    s.add_argument("--json", action="store_true", help="print the state as JSON")
    s.set_defaults(handler=_cmd_emulator_start)
    t = esub.add_parser("stop", help="stop an emulated device (every process in it)")
    t.add_argument("name", nargs="?", help="instance name (see `edgekit emulator status`)")
    t.add_argument("--all", action="store_true", help="stop every emulated device (also other users' test runs)")
    t.add_argument("--remove", action="store_true", help="also delete its changes, keys and state")
    t.set_defaults(handler=_cmd_emulator_stop)
    st = esub.add_parser("status", help="show emulated devices (works from any process, no root)")
    st.add_argument("name", nargs="?", help="instance name (default: all)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(handler=_cmd_emulator_status)


def _cmd_emulator_start(args: argparse.Namespace) -> int:
    from edgekit import emulator

    state = emulator.start(args.device, name=args.name, port=args.port, fresh=args.fresh, rebuild=args.rebuild,
                           memory_limit=not args.no_memory_limit, profile_files=args.profile,
                           progress=_progress(args), ready_timeout=args.ready_timeout)
    if args.json:
        print(json.dumps(emulator.status(state.name), indent=2))
        return int(ExitCode.OK)
    flags = state.cli_args()
    memory = f"{state.memory_limit_mib} MiB (cgroup)" if state.memory_limit_mib else "not limited"
    print(f"emulated {state.device} '{state.name}' is running: {state.machine} under qemu-user, "
          f"Python {state.python}, numpy {state.numpy}, user {state.user}")
    print(f"  --host       {state.address}")
    print(f"  key          {state.key_file}")
    print(f"  known_hosts  {state.known_hosts}")
    print(f"  ssh alias    {state.alias}  (edgekit reads it from {emulator.include_file()}; "
          "for OpenSSH: `Include` that file in ~/.ssh/config)")
    print(f"  memory       {memory}")
    for note in state.notes:
        print(f"  note         {note}")
    print("next:")
    print(f"  edgekit doctor --device {state.device} {flags}")
    print(f"  edgekit provision --device {state.device} {flags}")
    print(f"  edgekit deploy example:fashion-cnn --device {state.device} {flags}")
    print(f"  edgekit emulator stop {state.name}")
    return int(ExitCode.OK)


def _cmd_emulator_stop(args: argparse.Namespace) -> int:
    from edgekit import emulator

    if args.name:
        stopped = [args.name] if emulator.stop(args.name, remove=args.remove) else []
    elif args.all:
        stopped = emulator.stop_all(remove=args.remove)
    else:
        from edgekit.errors import UsageError

        running = [s.name for s in emulator.list_states() if emulator.is_running(s)]
        raise UsageError("name the emulated device to stop, or pass --all",
                         f"running: {', '.join(running)}" if running else "none is running")
    print(f"stopped {', '.join(stopped)}" if stopped else "nothing was running")
    return int(ExitCode.OK)


def _cmd_emulator_status(args: argparse.Namespace) -> int:
    from edgekit import emulator

    rows = [emulator.status(args.name)] if args.name else emulator.status_all()
    if args.json:
        print(json.dumps(rows[0] if args.name else rows, indent=2))
        return int(ExitCode.OK)
    if not rows or not any(r.get("known") for r in rows):
        print(f"no emulated device {args.name!r}" if args.name else "no emulated device was started")
        return int(ExitCode.OK)
    for r in rows:
        if not r.get("known"):
            continue
        if r["running"]:
            ready = "ssh ready" if r.get("ssh_ready") else "ssh NOT answering"
            print(f"{r['name']}: running ({r['device']}, {ready}) --host {r['alias']}  "
                  f"(or --host {r['address']} --known-hosts {r['known_hosts']} -i {r['key_file']}; "
                  f"up {r.get('uptime_s', 0):.0f} s)")
        else:
            print(f"{r['name']}: stopped ({r['device']}; `edgekit emulator start {r['device']} --name {r['name']}`)")
    return int(ExitCode.OK)


def _add_provision(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("provision", help="install the device's runtimes from wheels downloaded here (offline device)")
    p.add_argument("--device", required=True, help="device profile name")
    p.add_argument("--host", required=True, help="[user@]addr[:port] or an ~/.ssh/config alias")
    p.add_argument("--runtime", action="append", default=[],
                   help="runtime[==version] to install (repeatable; default: the profile's first per format, "
                        "at this host's version)")
    p.add_argument("--site-dir", default=DEFAULT_SITE_DIR, help="folder on the device for the runtimes")
    p.add_argument("--offline", action="store_true", help="use only wheels already in the host's cache")
    p.add_argument("--force", action="store_true", help="reinstall even when the device has the same wheels")
    p.add_argument("--no-pin", action="store_true", help="newest runtime versions instead of this host's")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.add_argument("--json", action="store_true")
    _add_ssh_flags(p)
    p.set_defaults(handler=_cmd_provision)


def _cmd_provision(args: argparse.Namespace) -> int:
    from edgekit.provision import provision, runtime_requirements

    runtime_requirements(args.runtime, pin_to_host=False)  # an unknown --runtime is refused before connecting
    result = provision(args.device, args.host, ssh=_ssh_options(args), runtimes=args.runtime or None,
                       site_dir=args.site_dir, offline=args.offline, force=args.force, pin_to_host=not args.no_pin,
                       profile_files=args.profile, progress=_progress(args))
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return int(ExitCode.OK)
    if result.manager != "wheels":
        print(result.to_text())
        return int(ExitCode.OK)
    done = "installed" if result.installed else "already installed"
    print(f"{result.device} at {result.address}: {done} in {result.site_dir} ({result.platform}, {result.seconds:.0f} s)")
    for pkg in result.packages:
        print(f"  {pkg.name} {pkg.version}{'' if pkg.required_by == 'requested' else f'  (for {pkg.required_by})'}")
    for name, version in result.provided_by_device.items():
        print(f"  {name} {version}  (the device's own)")
    for note in result.notes:
        print(f"  note: {note}")
    usable = [f"{n} {e.get('version')}" for n, e in result.runtimes.items() if e.get("available")]
    print(f"runtimes that import: {', '.join(usable)}")
    print(f"installed in {result.site_dir}: edgekit deploy puts that folder first on the runner's path")
    return int(ExitCode.OK)


def _add_doctor(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check a device: python, arch, runtimes, disk, memory, clock, temperature")
    p.add_argument("--device", required=True, help="device profile name")
    p.add_argument("--host", required=True, help="[user@]addr[:port] or an ~/.ssh/config alias")
    p.add_argument("--site-dir", default=DEFAULT_SITE_DIR, help="where `edgekit provision` installs")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.add_argument("--json", action="store_true")
    _add_ssh_flags(p)
    p.set_defaults(handler=_cmd_doctor)


def _cmd_doctor(args: argparse.Namespace) -> int:
    from edgekit.provision import doctor

    report = doctor(args.device, args.host, ssh=_ssh_options(args), site_dir=args.site_dir,
                    profile_files=args.profile, progress=_progress(args))
    print(json.dumps(report.to_dict(), indent=2) if args.json else report.to_text())
    return int(ExitCode.OK if report.ok else ExitCode.FAILURE)


# --- compress -----------------------------------------------------------------------------------

def _add_compress(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("compress", help="run a compression recipe; write the model, a rebuild manifest and a report")
    p.add_argument("model", help="example:NAME or a factory pkg.module:fn")
    p.add_argument("--recipe", required=True, help="recipe YAML: a list of steps (see docs/compress.md)")
    p.add_argument("--data", required=True,
                   help="training data: example:fashion-mnist, a folder of images (one subfolder per class), an .npz "
                        "(arrays + y), an .npy, or pkg.module:fn returning arrays, batches or (train_loader, val_loader); "
                        "labelled data is split seeded, 10%% (at most 5,000) for validation")
    p.add_argument("--preprocess", metavar="PRESET|FILE.yaml",
                   help="how a folder's images become inputs (default: the model's own, else RGB [0,1] NCHW): "
                        "a preset (imagenet, minus1-1, 0-1, raw, inception) or a YAML spec (docs/compress.md)")
    p.add_argument("-o", "--out-dir", required=True, help="folder for model.pt, manifest.json, report.json")
    p.add_argument("--weights", help="state_dict file for a pkg.module:fn model")
    p.add_argument("--input-shape", help="input shape for a pkg.module:fn model, e.g. 1,3,224,224")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show detail notes (converter internals, generic caveats)")
    p.set_defaults(handler=_cmd_compress)


def _cmd_compress(args: argparse.Namespace) -> int:
    from edgekit.compress import compress
    from edgekit.data import Preprocess
    from edgekit.outputs import check_output_dir, missing_folders, remove_folders
    from edgekit.report.progress import make_progress

    preprocess = Preprocess.from_options(args.preprocess)  # a bad spec is refused before anything is made
    check_output_dir(args.out_dir, "-o/--out-dir")
    created = missing_folders(args.out_dir)
    try:
        result = compress(args.model, args.recipe, args.data, args.out_dir, weights=args.weights,
                          input_shape=args.input_shape, progress=make_progress(quiet=args.quiet or args.json),
                          preprocess=preprocess)
    except BaseException:  # compress stages beside -o: leave no folder it made for a failed run
        remove_folders(created)
        raise
    if args.json:
        print(result.report.to_json())
        return int(ExitCode.OK)
    for step in result.steps:
        print(step.summary())
        _print_notes(step.notes, args.verbose, indent="  ")
    print(f"wrote {', '.join(result.files)} to {result.out_dir}")
    return int(ExitCode.OK)


# --- export -------------------------------------------------------------------------------------

def _add_export(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX or TFLite, check it against torch, write a manifest")
    p.add_argument("model", help="example:NAME or pkg.module:fn")
    p.add_argument("--format", required=True, choices=list(FORMATS))
    p.add_argument("--precision", default="fp32", choices=["fp32", "fp16", "int8"])
    p.add_argument("--weights", help="state_dict file for a pkg.module:fn model")
    p.add_argument("--input-shape", help="input shape for a pkg.module:fn model, e.g. 1,3,224,224")
    p.add_argument("--calibration-method", choices=["minmax", "percentile", "entropy", "histogram"],
                   help="how int8 ranges are chosen (ONNX: minmax/percentile/entropy; TFLite: minmax/histogram)")
    p.add_argument("--int8-mode", choices=_RegistryChoices(int8_mode_names), metavar="MODE",
                   help="ONNX: static (QDQ, default) or dynamic; TFLite: full (integer I/O, default) or dynamic")
    p.add_argument("--weight-rounding", choices=["gptq", "nearest"],
                   help="static/full int8: gptq (default: rounding that preserves each layer's outputs on the "
                        "calibration data) or nearest (the converter's round-to-nearest)")
    p.add_argument("--weight-type", choices=["int8", "uint8"],
                   help="ONNX static int8: uint8 stores the same weights +128, exact on x86 CPUs without VNNI "
                        "(docs/export.md, \"int8 on x86\")")
    p.add_argument("--float-io", action="store_true", help="TFLite full-integer int8 with float32 input/output")
    p.add_argument("--channels-last", action="store_true", help="TFLite: NHWC inputs")
    p.add_argument("--dynamic-batch", action="store_true", help="a dynamic batch dimension (ONNX only)")
    p.add_argument("-o", "--out-dir", default=".", help="where to write the artifact and its manifest")
    p.add_argument("--name", help="artifact file name without suffix (default MODEL.PRECISION)")
    p.add_argument("--strict", action="store_true", help="fail (exit 1) when parity is over tolerance")
    p.add_argument("--json", action="store_true", help="print the manifest as JSON")
    p.add_argument("-v", "--verbose", action="store_true",
                   help="also show detail notes (converter internals, generic caveats)")
    _add_data_flags(p)
    p.set_defaults(handler=_cmd_export)


def _export_options(args: argparse.Namespace) -> dict[str, Any]:
    options: dict[str, Any] = {}
    if args.calibration_method:
        options["calibration_method"] = args.calibration_method
    if args.int8_mode:
        options["int8_mode"] = args.int8_mode
    if args.weight_rounding:
        options["weight_rounding"] = args.weight_rounding
    if args.weight_type:
        options["weight_type"] = args.weight_type
    if args.float_io:
        options["io_dtype"] = "float32"
    if args.channels_last:
        options["channels_last"] = True
    if args.dynamic_batch:
        options["dynamic_batch"] = True
    return options


class _RegistryChoices:
    """argparse choices read from the format registry when first needed (the flag given): building
    the parser stays free of the format modules' imports (numpy). Give the argument a metavar:
    argparse lists the choices of one without it while building the parser."""

    def __init__(self, names: Callable[[], list[str]]) -> None:
        self._names = names

    def __contains__(self, value: object) -> bool:
        return value in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


def _int8_modes(fmt: str) -> tuple[str, ...]:
    from edgekit.export import get_format

    return get_format(fmt).int8_modes


def _check_export_flags(args: argparse.Namespace) -> None:
    """Flags that do not apply to the chosen format, refused before the model is loaded."""
    from edgekit.errors import UsageError
    from edgekit.outputs import check_output_dir

    modes = _int8_modes(args.format)
    if args.int8_mode and args.int8_mode not in modes:
        raise UsageError(f"--int8-mode {args.int8_mode} does not apply to {args.format}",
                         f"{args.format} takes --int8-mode {' or '.join(modes)}")
    for flag, given in (("--float-io", args.float_io), ("--channels-last", args.channels_last)):
        if given and args.format != "tflite":
            raise UsageError(f"{flag} applies to --format tflite only", "drop it for onnx")
    if args.weight_type and (args.format != "onnx" or args.precision != "int8"):
        raise UsageError("--weight-type applies to --format onnx --precision int8 only", "drop it")
    if args.float_io and not (args.precision == "int8" and args.int8_mode in (None, "full")):
        raise UsageError("--float-io applies to full-integer int8 only",
                         "drop it, or export --precision int8 (--int8-mode full)")
    check_output_dir(args.out_dir, "-o/--out-dir")


def _needs_calibration(args: argparse.Namespace) -> bool:
    from edgekit.export import get_format

    mode = {"int8_mode": args.int8_mode} if args.int8_mode else {}
    return args.precision == "int8" and get_format(args.format).needs_calibration("int8", mode)


def _cmd_export(args: argparse.Namespace) -> int:
    from edgekit.data.plan import plan_data
    from edgekit.deploy import torch_input_specs
    from edgekit.export.api import export
    from edgekit.export.parity import evaluate_metric
    from edgekit.inputspec import parse_inputs
    from edgekit.models import resolve_model

    _check_export_flags(args)
    preprocess = _preprocess(args)
    specs = parse_inputs(args.input) if args.input else None
    if specs and args.input_shape:
        raise UsageError("--input and --input-shape both describe the inputs", "give one of them")
    resolved = resolve_model(args.model, weights=args.weights, input_shape=args.input_shape, inputs=specs)
    if resolved.is_file:
        raise UsageError(f"{args.model} is already a model file", "export takes example:NAME or pkg.module:fn")
    say = _progress(args)
    inputs = torch_input_specs(resolved)
    plan = plan_data(calibration=args.calibration, evaluation=args.eval, own_data=resolved.dataset,
                     input_names=[s.name for s in inputs], input_shapes={s.name: s.shape for s in inputs},
                     preprocess=preprocess or resolved.preprocess, eval_limit=args.eval_limit,
                     need_calibration=_needs_calibration(args))
    if args.eval is None:
        plan.evaluation = None  # export evaluates only on request (deploy does on the example's data)
    if _needs_calibration(args) and plan.calibration is None:
        raise UsageError("static int8 needs calibration data, and edgekit never calibrates on random inputs",
                         "pass --calibration DATA (100-500 representative samples), or --int8-mode dynamic")
    say(f"exporting {resolved.name} to {args.format}/{args.precision}")
    calibration = plan.calibration if _needs_calibration(args) else None
    parity = plan.parity_set()
    if calibration is not None and not args.int8_mode:
        artifact = _export_int8_by_measurement(args, resolved, plan)
    else:
        artifact = export(
            resolved.module, resolved.example_inputs, format=args.format, precision=args.precision,
            calibration=calibration.inputs if calibration is not None else None,
            calibration_source=calibration.description() if calibration is not None else None, out_dir=args.out_dir,
            name=args.name or f"{resolved.name}.{args.precision}", options=_export_options(args), strict=args.strict,
            parity_inputs=dict(parity.inputs) if parity is not None else None,
        )
    result = None
    if plan.evaluation is not None:
        say(f"evaluating on {plan.evaluation.description()}")
        result = evaluate_metric(artifact, resolved.module, _by_names(artifact, plan.evaluation.inputs),
                                 plan.evaluation.labels, args.metric)
        artifact.parity = {**(artifact.parity or {}), "metric": {**result.to_dict(), "data": plan.evaluation.description()}}
        if result.metric == "classification" and result.reference is not None:  # the API's eval_data record, too
            top1, ref = result.values["top1"], result.reference.values["top1"]
            artifact.parity["accuracy"] = {"n": result.samples, "accuracy": top1, "reference_accuracy": ref,
                                           "drop_pt": 100.0 * (ref - top1)}
    if plan.preprocess is not None:
        artifact.preprocess = plan.preprocess.to_manifest()
    artifact.write_manifest()
    if args.json:
        print(json.dumps(artifact.to_dict(), indent=2, default=str))
        return int(ExitCode.OK)
    _print_export(artifact, plan, result, args.verbose)
    return int(ExitCode.OK)


def _export_int8_by_measurement(args: argparse.Namespace, resolved: Any, plan: Any) -> Any:
    """--precision int8 without --int8-mode: each mode tried, the most accurate within 0.30× fp32 kept."""
    from edgekit.export.api import check_calibration
    from edgekit.export.int8_modes import choose_int8_mode

    # what a forced mode would refuse (shapes, dtypes) is refused before any candidate is tried
    check_calibration(plan.calibration.inputs, resolved.module, resolved.example_inputs)
    picked = choose_int8_mode(resolved.module, resolved.example_inputs, args.format, plan.calibration, args.out_dir,
                              args.name or f"{resolved.name}.int8", metric=args.metric,
                              options=_export_options(args) or None)
    artifact = picked.artifact
    artifact.calibration = {**(artifact.calibration or {}), "int8_modes": picked.to_dict(),
                            "data": f"{plan.calibration.description()}: {picked.calibration_samples} calibrated, "
                                    f"{picked.held_out_samples} held out to choose the int8 mode"}
    for row in [] if args.json else picked.rows:
        figure = row.metric_text or row.error or row.status
        print(f"int8 mode  {'✓' if row.chosen else ' '} {row.mode:<13} {row.size_ratio or 0:.2f}× fp32  {figure}"
              + (f"  {row.p50_ms:.3g} ms" if row.p50_ms is not None else ""))
    return artifact


def _by_names(artifact: Any, arrays: dict[str, Any]) -> dict[str, Any]:
    names = [spec.name for spec in artifact.inputs]
    return dict(zip(names, arrays.values())) if set(arrays) != set(names) else arrays


def _print_export(artifact: Any, plan: Any, result: Any, verbose: bool) -> None:
    parity = artifact.parity or {}
    print(f"{artifact.path}  {artifact.size_bytes:,} bytes  sha256 {artifact.sha256[:12]}…")
    if "max_abs_diff" in parity:
        agreement = parity.get("top1_agreement")
        line = f"parity  max|Δ| {parity['max_abs_diff']:.3g} vs torch"
        line += f" · top-1 agreement {agreement * 100:.1f} %" if agreement is not None else ""
        line += "" if parity.get("passed", True) else "  [over tolerance]"
        parity_set = plan.parity_set()
        line += f" on {len(parity_set):,} samples of {parity_set.name}" if parity_set is not None else " on random inputs"
        print(line)
    if result is not None:
        print(f"{result.metric}  {result.text()} on {plan.evaluation.description()} (this host's runtime)")
    calibration = (artifact.calibration or {}).get("data")
    if calibration and (artifact.calibration or {}).get("n_samples"):
        print(f"calibration {calibration}")
    for note in plan.notes:
        print(f"note  {note}")
    _print_notes(artifact.notes, verbose)
    print(f"manifest {artifact.manifest_path}")


# --- main ---------------------------------------------------------------------------------------

# --- optimize -----------------------------------------------------------------------------------

def _add_optimize(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("optimize", help="search compressions for the most accurate model within a device budget, "
                                        "each candidate measured on the target (docs/optimize.md)")
    p.add_argument("model", help="example:NAME or a factory pkg.module:fn")
    p.add_argument("--device", required=True, help="device profile name (see `edgekit devices`)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--emulate", action="store_true", help="measure on this host under the profile's limits")
    where.add_argument("--host", help="[user@]addr[:port] or an ~/.ssh/config alias")
    where.add_argument("--hosts", metavar="FLEET.yaml",
                       help="a fleet file (as for edgekit deploy): every board measures one trial at a time, "
                            "the boards at once")
    p.add_argument("--ray", metavar="auto|HOST:PORT",
                   help="run the trials as Ray tasks (edgekit[distributed]): auto joins this machine's Ray cluster or "
                        "starts one; HOST:PORT joins a cluster whose nodes declare each device as the resource "
                        "edgekit-device:LABEL (docs/optimize.md)")
    p.add_argument("--data", help="training data for the fine-tunes and int8 calibration (as for edgekit compress)")
    p.add_argument("--eval", required=True, metavar="DATA", help="held-out data that scores the candidates")
    p.add_argument("--eval-limit", type=_int_at_least(1), default=1000,
                   help="samples of --eval that score each trial (default 1000; the recommendation is re-scored on all)")
    p.add_argument("--final-eval-limit", type=_int_at_least(1), help="cap the final re-score too (default: all of --eval)")
    p.add_argument("--max-latency", type=_number(positive=True), metavar="MS", help="budget: p50 latency on the target")
    p.add_argument("--max-size", type=_number(positive=True), metavar="KB", help="budget: artifact size (1 KB = 1,000 bytes)")
    p.add_argument("--max-drop", type=_number(0.0), metavar="PT", help="budget: metric drop vs the fp32 model, in points")
    p.add_argument("--max-memory", type=_number(positive=True), metavar="MIB", help="budget: peak memory of the run on the target")
    p.add_argument("--min-speedup", type=_number(positive=True), metavar="X",
                   help="budget: p50 at least X times faster than the baseline measured on the target (e.g. 2)")
    p.add_argument("--trials", type=_int_at_least(1), default=20, help="trials in the study, the baseline included (default 20)")
    p.add_argument("--time-budget", type=_number(positive=True), metavar="MIN",
                   help="start no search trial after this many minutes (the --final-epochs fine-tunes and the "
                        "full-set re-score come after it)")
    p.add_argument("--strategy", choices=["netadapt", "tpe", "random"], default="netadapt",
                   help="netadapt (measured, deterministic; default), tpe (Optuna: edgekit[optimize]), random (control)")
    p.add_argument("--seed", type=int, default=0, help="seed of the strategy and the fine-tunes (default 0)")
    p.add_argument("--measure-all", action="store_true",
                   help="measure every candidate, also those the latency estimator predicts far past --max-latency "
                        "/ --min-speedup (random and tpe skip them by default)")
    p.add_argument("--prune-ratios", metavar="R,R,...", help="channel prune ratios to search (default 0.25,0.375,0.5,0.625,0.75)")
    p.add_argument("--exports", metavar="FMT/PREC,...", help="formats/precisions to search, e.g. tflite/int8,onnx/fp32 "
                                                             "(default: the profile's preferences this install can export, "
                                                             "each format's fp32 too)")
    p.add_argument("--importances", metavar="CRIT,...",
                   help="channel criteria to search: magnitude, taylor, activation (default magnitude only)")
    p.add_argument("--per-group", action="store_true",
                   help="random/tpe: draw every layer group's prune ratio on its own (default: one global ratio; "
                        "netadapt always steps per group)")
    p.add_argument("--distill", action="store_true",
                   help="search the KD fine-tune too: each candidate fine-tuned on labels alone or also from the "
                        "uncompressed model's soft labels (distill: {teacher: original})")
    p.add_argument("--finetune-epochs", type=_int_at_least(0), default=1, help="fine-tune epochs per candidate (default 1)")
    p.add_argument("--finetune-batches", type=_int_at_least(1), help="cap the batches of each fine-tune epoch")
    p.add_argument("--final-epochs", type=_int_at_least(0), default=0, metavar="N",
                   help="after the search, fine-tune the most accurate front points that meet every budget but "
                        "--max-drop for N epochs (one-cycle; by KD with --distill) and measure them as trials "
                        "(default 0: none)")
    p.add_argument("--final-top", type=_int_at_least(1), default=2, metavar="K",
                   help="how many front points get the --final-epochs fine-tune (default 2)")
    p.add_argument("--threads", type=_int_at_least(1), help="runtime threads (default: the profile's)")
    p.add_argument("--runs", type=_int_at_least(1), default=100, help="timed inferences per trial, at least (default 100)")
    p.add_argument("--min-seconds", type=_number(0.0), default=1.0,
                   help="time each trial at least this long (default 1: steadier p50s for fast models)")
    p.add_argument("--weights", help="state_dict file for a pkg.module:fn model")
    p.add_argument("--input-shape", help="input shape for a pkg.module:fn model, e.g. 1,3,224,224")
    p.add_argument("--metric", choices=["classification", "agreement", "embedding"], help="task metric (default: inferred)")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.add_argument("--out", required=True, metavar="DIR",
                   help="study folder: history, Pareto front, recommended artifact and recipe (rerun to resume)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    _add_ssh_flags(p)
    p.set_defaults(handler=_cmd_optimize)


def _cmd_optimize(args: argparse.Namespace) -> int:
    from edgekit.optimize import format_front, optimize

    if args.host:
        _check_addresses([args.host])
    grid: dict[str, Any] = {}
    try:
        if args.prune_ratios:
            grid["prune_ratios"] = [float(r) for r in args.prune_ratios.split(",")]
        if args.exports:
            grid["exports"] = [tuple(e.strip().split("/")) for e in args.exports.split(",")]
        if args.importances:
            grid["importances"] = [i.strip() for i in args.importances.split(",")]
        if args.distill:
            grid["distill"] = True
        if args.per_group:
            grid["per_group"] = True
    except ValueError:
        raise UsageError(f"--prune-ratios takes numbers, e.g. 0.25,0.5, not {args.prune_ratios!r}") from None
    if any(len(e) != 2 for e in grid.get("exports", [])):
        raise UsageError(f"--exports takes FORMAT/PRECISION pairs, e.g. tflite/int8,onnx/fp32, not {args.exports!r}")
    say = (lambda m: None) if (args.quiet or args.json) else (lambda m: _err(m))
    result = optimize(
        args.model, args.device, data=args.data, eval_data=args.eval, out=args.out, emulate=args.emulate,
        host=args.host, hosts=args.hosts, ray=args.ray, max_latency_ms=args.max_latency, max_size_kb=args.max_size,
        max_drop_pt=args.max_drop,
        max_memory_mib=args.max_memory, min_speedup=args.min_speedup, trials=args.trials,
        time_budget_min=args.time_budget, strategy=args.strategy,
        seed=args.seed, skip_predicted=not args.measure_all,
        eval_limit=args.eval_limit, final_eval_limit=args.final_eval_limit, finetune_epochs=args.finetune_epochs,
        final_epochs=args.final_epochs, final_top=args.final_top, finetune_batches=args.finetune_batches,
        threads=args.threads, runs=args.runs, min_seconds=args.min_seconds,
        weights=args.weights,
        input_shape=args.input_shape, metric=args.metric, profile_files=args.profile,
        ssh=_ssh_options(args) if args.host or args.hosts else None, progress=say, **grid,
    )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return int(ExitCode.OK)
    r = result.recommended
    skipped = result.estimator.get("skipped", 0)
    print(f"edgekit optimize  {args.model} → {args.device} ({result.strategy}, {len(result.trials) - skipped} trials: "
          f"{result.measured} measured, {result.reused} from the history; {result.seconds / 60:.1f} min"
          + (f"; {skipped} skipped on the estimator's prediction)" if skipped else ")"))
    print(f"budget       {result.budget.describe()}")
    print(format_front(result))
    print(f"recommended  trial {r.number}: {r.candidate.describe()} · {result.speedup:.2f}× faster (p50) · "
          f"{result.recommended_final.metric * 100:.2f} % on {result.recommended_final.eval_samples:,} samples "
          f"(fp32 {result.baseline_final.metric * 100:.2f} %, drop {result.drop_pt:+.2f} pt)")
    if result.long_finetuned:
        print(f"long-tuned   trials {', '.join(map(str, result.long_finetuned))}: {args.final_epochs}-epoch fine-tunes "
              f"of front points, after the search")
    est = result.estimator
    if est.get("predicted_then_measured"):
        print(f"estimator    {est['predicted_then_measured']} trials predicted before measuring: "
              f"{est['within_tolerance'] * 100:.0f} % within ±{est['tolerance'] * 100:.0f} %, "
              f"median error {est['median_abs_error'] * 100:.0f} %")
    print(f"wrote        {result.artifact.name}, {result.recipe.name}, history.jsonl, pareto.json, front.html, result.json "
          f"to {result.out}")
    for note in result.notes:
        print(f"note         {note}")
    return int(ExitCode.OK)


COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_deploy, _add_devices]
COMMANDS += [_add_report, _add_runs, _add_compare]
COMMANDS += [_add_emulator, _add_provision, _add_doctor]
COMMANDS += [_add_device]
COMMANDS += [_add_compress]
COMMANDS += [_add_export]
COMMANDS += [_add_optimize]


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="edgekit", description="Compress, export and deploy PyTorch models to edge devices.")
    parser.add_argument("--version", action="version", version=f"edgekit {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks")
    parser.add_argument("--quiet", "-q", action="store_true", help="no progress output")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``edgekit`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    with handle_errors(args.debug) as code:
        code[0] = args.handler(args)
    return code[0]


def console_main() -> None:
    sys.exit(main())


if __name__ == "__main__":
    console_main()
