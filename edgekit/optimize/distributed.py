"""Trials as Ray tasks: ``edgekit optimize --ray auto|HOST:PORT`` (``pip install 'edgekit[distributed]'``).

Without ``--ray`` a study's trials run in threads of one process (``edgekit.optimize.api``). With
it every trial after the baseline is one Ray task: the host-side half (compress, fine-tune,
export) and the measurement on its device, in a Ray worker process on whichever node has a free
CPU and the device. Each device is a Ray custom resource of capacity 1 (``edgekit-device:LABEL``,
the label of ``target_label``: a fleet board's name or address, the ``--host``, or ``emulate``),
and a trial's task asks for one unit of it, so a device measures one candidate at a time, also
when several studies share the cluster (the lease idea of the TVM RPC tracker).

``auto`` connects to the Ray cluster this machine knows of (``RAY_ADDRESS``, else one running on
this machine, as ``ray.init(address="auto")`` finds it), else starts a local instance with one
CPU per core and every device's resource declared; that instance is shut down when the study
ends. ``HOST:PORT`` connects to a running cluster's head; its nodes must declare the devices' resources
(``ray start --address HOST:PORT --resources '{"edgekit-device:pi-01": 1}'`` on the node that
reaches the board), which is checked before the baseline. A study only disconnects from a cluster
it did not start.

A multi-node cluster needs the study folder (``--out``), and the data, at the same path on a
shared filesystem: tasks write their artifacts under the study folder and the driver reads them.
Nothing checks that. The baseline and the final re-score stay in the driver process.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
import socket
import threading
from concurrent.futures import Future
from types import TracebackType
from typing import TYPE_CHECKING, Any, Callable, Sequence

from edgekit.errors import ConnectionFailedError, MissingDependencyError, UsageError
from edgekit.optimize.history import TrialRecord
from edgekit.optimize.trial import TrialSettings, run_trial, target_label

if TYPE_CHECKING:
    from edgekit.optimize.api import _Pending

RESOURCE_PREFIX = "edgekit-device:"
# One retry covers a worker or node lost under a trial; a candidate that kills its worker twice is
# recorded as failed (see _settle) instead of being tried again and again.
TASK_RETRIES = 1
_CONNECT_TIMEOUT_S = 5.0  # ray.init waits minutes on an address nobody answers: probe it first


def device_resource(label: str) -> str:
    """The Ray custom resource that stands for one device (capacity 1: one trial at a time)."""
    return f"{RESOURCE_PREFIX}{label}"


def import_ray() -> Any:
    """The ``ray`` module, or a typed error naming the extra that installs it."""
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("--ray needs Ray", "pip install 'edgekit[distributed]' (or pip install ray)",
                                     extra="distributed") from None
    return ray


def check_address(address: str) -> None:
    """``auto`` or a head node's ``HOST:PORT`` (as ``ray start --head`` prints it)."""
    if address != "auto" and not _is_host_port(address):
        raise UsageError(f"--ray takes auto or HOST:PORT, not {address!r}",
                         "pass --ray auto, or the head node's address as `ray start --head` prints it")


class RayPool:
    """Trials as Ray tasks; ``submit(pending)`` returns a ``concurrent.futures.Future`` of its record,
    so the study's wait-for-the-first-finished loop is the same as with threads.

    A context manager: entering connects (or starts a local instance) and checks that every device
    has its resource; leaving cancels the trials still running (an error or Ctrl-C: they are not in
    the history and run again on the rerun) and shuts down an instance it started.
    """

    def __init__(self, address: str, settings: TrialSettings, labels: Sequence[str],
                 deploy: Callable[..., Any] | None = None, say: Callable[[str], None] | None = None,
                 num_cpus: int | None = None) -> None:
        check_address(address)
        self.address, self.labels, self.deploy = address, list(labels), deploy
        # tasks may run with another working directory (another node): the study folder by its full path
        self.settings = dataclasses.replace(settings, folder=settings.folder.resolve())
        self.say = say or (lambda _m: None)
        self.num_cpus = num_cpus or os.cpu_count() or 1
        self._ray: Any = None
        self._owns: str | None = None  # "instance": started here; "connection": connected here; None: the caller's
        self._in_flight: set[Any] = set()
        self._lock = threading.Lock()
        self._task: Any = None

    def __enter__(self) -> "RayPool":
        self._ray = import_ray()
        self._owns = self._connect()
        try:
            self._check_resources()
            self._task = self._ray.remote(_trial_in_worker)
        except BaseException:
            self._close()
            raise
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is not None:
            self._cancel_in_flight()
        self._close()

    def submit(self, pending: "_Pending") -> "Future[TrialRecord]":
        """Run ``pending`` as a task holding one CPU and its device's resource."""
        label = self._label(pending.board)
        # No prepare_lock in a worker (it is per process): Ray's CPU accounting (num_cpus=1 per
        # trial) bounds how many fine-tunes a node runs at once, and sets each one's OMP threads.
        ref = self._task.options(num_cpus=1, resources={device_resource(label): 1}, max_retries=TASK_RETRIES,
                                 name=f"edgekit-trial-{pending.number}").remote(
            self.settings, pending.candidate, pending.number, pending.note, self.deploy, pending.board)
        with self._lock:
            self._in_flight.add(ref)
        out: Future[TrialRecord] = Future()
        ref.future().add_done_callback(functools.partial(self._settle, out, ref, pending))
        return out

    def _label(self, board: Any) -> str:
        return target_label(self.settings, board)

    def _settle(self, out: "Future[TrialRecord]", ref: Any, pending: "_Pending", done: Future) -> None:
        """The task's record into ``out``; a Ray system failure (worker or node lost twice) becomes a
        failed record; an exception raised by the trial's code (a bug) is passed on as is."""
        with self._lock:
            self._in_flight.discard(ref)
        ray = self._ray
        try:
            out.set_result(TrialRecord.from_dict(done.result()))
        except ray.exceptions.RayTaskError as exc:
            out.set_exception(exc)
        except ray.exceptions.RayError as exc:
            error = " ".join(str(exc).split())[:300]
            out.set_result(TrialRecord(pending.number, pending.candidate, status="failed",
                                       error=f"Ray lost the trial's worker: {error}", strategy_note=pending.note,
                                       extra={"error_type": type(exc).__name__, "target": self._label(pending.board)}))
        except BaseException as exc:  # noqa: BLE001 - cancelled or unexpected: the study sees it
            out.set_exception(exc)

    def _connect(self) -> str | None:
        """Join the caller's Ray, a running cluster, or a new local instance; who owns it."""
        ray = self._ray
        quiet = dict(logging_level=logging.ERROR, log_to_driver=False)  # workers' output would mix into --json
        if ray.is_initialized():
            self.say("using this process's Ray connection")
            return None
        if self.address != "auto":
            _probe(self.address, "start its head with `ray start --head` and pass the address it prints to --ray, "
                                 "or pass --ray auto for a local instance")
            ray.init(address=self.address, **quiet)
            self.say(f"connected to the Ray cluster at {self.address}")
            return "connection"
        named = os.environ.get("RAY_ADDRESS", "")
        if _is_host_port(named):  # `auto` connects there first
            _probe(named, "the environment variable RAY_ADDRESS names it: start that cluster, or unset RAY_ADDRESS "
                          "for a local instance")
        try:
            ray.init(address="auto", **quiet)
            self.say("connected to the running Ray cluster")
            return "connection"
        except ConnectionError:
            pass  # none running: start one here
        resources = {device_resource(label): 1 for label in self.labels}
        ray.init(address="local", num_cpus=self.num_cpus, resources=resources, include_dashboard=False, **quiet)
        self.say(f"started a local Ray instance ({self.num_cpus} CPUs, devices {', '.join(self.labels)})")
        return "instance"

    def _check_resources(self) -> None:
        """Every device needs its resource somewhere in the cluster, or its trials would wait forever."""
        have = self._ray.cluster_resources()
        where = "the Ray cluster" + (f" at {self.address}" if self.address != "auto" else "")
        head = self.address if self.address != "auto" else "HEAD:PORT"
        for label in self.labels:
            name = device_resource(label)
            if name not in have:
                raise UsageError(
                    f"{where} has no resource {name!r} (the device {label!r} measures this study's trials)",
                    f"declare it on the node that reaches the device: ray start --address {head} --resources "
                    f"'{{\"{name}\": 1}}'")
            if have[name] != 1:
                self.say(f"warning: {where} declares {name} {have[name]:g} times; with more than 1 a device "
                         "may measure two trials at once")

    def _cancel_in_flight(self) -> None:
        with self._lock:
            refs = list(self._in_flight)
        for ref in refs:
            try:
                self._ray.cancel(ref)  # KeyboardInterrupt in the task: deploy's clean-up runs
            except Exception:  # noqa: BLE001 - finished meanwhile, or the cluster is gone: nothing to stop
                pass

    def _close(self) -> None:
        # ray.shutdown() ends an instance started here, and only disconnects from a cluster (it lives on);
        # the caller's own Ray connection is left alone.
        if self._owns is not None:
            self._ray.shutdown()
            self._owns = None


def _is_host_port(address: str) -> bool:
    host, _, port = address.rpartition(":")
    return bool(host) and port.isdigit()


def _probe(address: str, hint: str) -> None:
    """A typed error at once when nothing listens at ``address`` (ray.init would wait minutes)."""
    host, _, port = address.rpartition(":")
    try:
        socket.create_connection((host, int(port)), timeout=_CONNECT_TIMEOUT_S).close()
    except OSError as exc:
        raise ConnectionFailedError(f"cannot reach the Ray cluster at {address}: {exc.strerror or exc}", hint) from None


def _trial_in_worker(settings: TrialSettings, candidate: Any, number: int, note: str | None,
                     deploy: Callable[..., Any] | None, board: Any) -> dict[str, Any]:
    """One trial, in a Ray worker: its record as a dict, with the worker that ran it."""
    import ray

    record = run_trial(settings, candidate, number, note, deploy=deploy, board=board)
    record.extra["ray_worker"] = {"node": ray.util.get_node_ip_address(), "pid": os.getpid()}
    return record.to_dict()


__all__ = ["RESOURCE_PREFIX", "RayPool", "check_address", "device_resource", "import_ray"]
