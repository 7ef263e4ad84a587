"""edgekit image versions: what the emulator's root filesystem has (Python, numpy, machine, glibc).

Run by `edgekit emulator` (edgekit/emulator.py) as ``python3 -c <this file>`` inside the
image being built (chroot): prints one JSON line. numpy is null when it does not import.

Rules for this file (the runner's: it runs with the device's own Python):
* One file, standard library + numpy (optional). It never imports edgekit.
* Python >= 3.6: no walrus, no dataclasses, no `from __future__ import annotations`, no
  positional-only parameters, no f-string `=`, no subprocess capture_output/text
  (checked by `vermin -t=3.6-` in tests/runtimes/test_device_programs.py).
"""
import json, platform, sys
try:
    import numpy; n = numpy.__version__
except Exception:
    n = None
print(json.dumps({'python': platform.python_version(), 'numpy': n, 'machine': platform.machine(), 'glibc': platform.libc_ver()[1]}))
