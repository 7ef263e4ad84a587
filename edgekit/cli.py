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
from edgekit.errors import EdgekitError, ExitCode

Handler = Callable[[argparse.Namespace], int]


class _Parser(argparse.ArgumentParser):
    """argparse that reports usage errors as one line with our exit code."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(ExitCode.USAGE)


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
        _err(f"error: {exc.one_line()}")
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


def _progress(args: argparse.Namespace) -> Callable[[str], None]:
    if getattr(args, "quiet", False) or getattr(args, "json", False):
        return lambda _msg: None
    return lambda msg: _err(f"· {msg}")


def _write_report(path: str, report: Any) -> None:
    from edgekit.export.base import write_json_atomic

    write_json_atomic(Path(path), report.model_dump(mode="json"))


# --- deploy -------------------------------------------------------------------------------------

def _add_deploy(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="export a model, run it on a device (or emulated), report")
    p.add_argument("model", help="example:NAME, pkg.module:fn, or a .onnx/.tflite file")
    p.add_argument("--device", required=True, help="device profile name (see `edgekit devices`)")
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--emulate", action="store_true", help="run on this host under the profile's limits")
    where.add_argument("--host", help="[user@]addr[:port] or an ~/.ssh/config alias")
    p.add_argument("--format", choices=["onnx", "tflite"], help="override the profile's preferred format")
    p.add_argument("--precision", choices=["fp32", "fp16", "int8"], help="override the profile's precision")
    p.add_argument("--weights", help="state_dict file for a pkg.module:fn model")
    p.add_argument("--input-shape", help="input shape for a pkg.module:fn model, e.g. 1,3,224,224")
    p.add_argument("--runs", type=int, help="timed inferences (default 200)")
    p.add_argument("--warmup", type=int, help="warm-up inferences (default 20)")
    p.add_argument("--min-seconds", type=float, default=0.0, help="keep timing at least this long")
    p.add_argument("--threads", type=int, help="runtime threads (default: the profile's)")
    p.add_argument("--inputs", help=".npz of your own inputs, one array per input name")
    p.add_argument("--save-outputs", help="write the device's outputs for --inputs to this .npz")
    p.add_argument("--eval-limit", type=int, help="evaluate accuracy on the first N test images only")
    p.add_argument("--profile", action="append", default=[], help="extra device profile YAML (repeatable)")
    p.add_argument("-o", "--out-dir", help="keep the exported artifacts and manifests here")
    p.add_argument("--report", help="write the report as JSON to this file")
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--strict", action="store_true", help="fail when parity is over tolerance")
    p.add_argument("--recipe", help="compression recipe (YAML) to run before export")
    p.add_argument("--data", help="data for --recipe: example:fashion-mnist or pkg.module:fn")
    ssh = p.add_argument_group("ssh")
    ssh.add_argument("--identity", "-i", help="private key file")
    ssh.add_argument("--known-hosts", help="known_hosts file (default ~/.ssh/known_hosts)")
    ssh.add_argument("--accept-new-host-key", action="store_true",
                     help="trust and record the host key of a host seen for the first time")
    ssh.add_argument("--python", help="the device's python (default: the profile's)")
    p.set_defaults(handler=_cmd_deploy)


def _cmd_deploy(args: argparse.Namespace) -> int:
    from edgekit.deploy import DeployOptions, deploy
    from edgekit.report.text import print_report

    if args.save_outputs and not args.inputs:
        from edgekit.errors import UsageError

        raise UsageError("--save-outputs needs --inputs", "pass the .npz whose outputs you want back")
    options = DeployOptions(
        emulate=args.emulate, host=args.host, format=args.format, precision=args.precision,
        weights=args.weights, input_shape=args.input_shape, runs=args.runs, warmup=args.warmup,
        min_seconds=args.min_seconds, threads=args.threads, inputs=args.inputs,
        save_outputs=args.save_outputs, out_dir=args.out_dir, profile_files=args.profile,
        eval_limit=args.eval_limit, strict=args.strict, recipe=args.recipe, recipe_data=args.data,
        ssh={"key_filename": args.identity, "known_hosts": args.known_hosts,
             "accept_new_host_key": args.accept_new_host_key or None, "python": args.python},
    )
    report = deploy(args.model, args.device, options, progress=_progress(args))
    if args.report:
        _write_report(args.report, report)
    if args.json:
        print(report.to_json())
    else:
        print_report(report)
    return int(ExitCode.OK)


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


# --- main ---------------------------------------------------------------------------------------

COMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [_add_deploy, _add_devices]


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
