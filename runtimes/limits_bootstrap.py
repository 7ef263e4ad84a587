"""edgekit limits bootstrap: put this process under a profile's limits, then become the runner.

Run by ``--emulate`` (edgekit/targets/limits.py, ``LimitedProcess``) as
``python -c <this file> CONFIG_JSON PROGRAM ARG...``: writes its pid into each cgroup's
``cgroup.procs`` in ``cgroup_procs``, pins itself to ``cpus``, sets ``RLIMIT_AS`` to
``rlimit_as`` (each when given), then ``execv``s PROGRAM with its arguments, so the runner
starts inside the limits. Exit status 125 when a limit cannot be applied.

Rules for this file (the runner's, though it runs on this host today):
* One file, standard library only. It never imports edgekit.
* Python >= 3.6: no walrus, no dataclasses, no `from __future__ import annotations`, no
  positional-only parameters, no f-string `=`, no subprocess capture_output/text
  (checked by `vermin -t=3.6-` in tests/runtimes/test_device_programs.py).
"""
import json, os, sys
cfg = json.loads(sys.argv[1])
try:
    for procs in cfg["cgroup_procs"]:
        with open(procs, "w") as handle:
            handle.write(str(os.getpid()))
    if cfg["cpus"]:
        os.sched_setaffinity(0, cfg["cpus"])
    if cfg["rlimit_as"]:
        import resource
        resource.setrlimit(resource.RLIMIT_AS, (cfg["rlimit_as"], cfg["rlimit_as"]))
except Exception as exc:
    sys.stderr.write("edgekit: cannot apply the profile's limits: %s: %s\n" % (type(exc).__name__, exc))
    sys.exit(125)
os.execv(sys.argv[2], sys.argv[2:])

