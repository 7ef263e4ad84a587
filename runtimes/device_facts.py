"""edgekit device facts: what this device's Python, CPU, C library, disk and memory are.

Run by `edgekit provision` and `edgekit doctor` (edgekit/provision.py) as
``python3 -c <this file> SITE_DIR``: prints one line ``@@edgekit-facts <JSON>`` with the
Python version, machine, glibc, home, the site folder's state and manifest, the installed
distributions outside it, free disk and memory. Every fact that cannot be read is null.

Rules for this file (it is sent to devices as it is, like edgekit_runner.py):
* One file, standard library only. It never imports edgekit.
* Python >= 3.6: no walrus, no dataclasses, no `from __future__ import annotations`, no
  positional-only parameters, no f-string `=`, no subprocess capture_output/text
  (checked by `vermin -t=3.6-` in tests/runtimes/test_device_programs.py).
"""
import json, os, platform, re, sys
out = {"python": platform.python_version(), "implementation": sys.implementation.name,
       "machine": platform.machine(), "system": platform.system(), "executable": sys.executable,
       "platform": sys.platform}
try:
    # only Android builds of Python have it (others raise AttributeError, so 3.6 is fine)
    out["android_api"] = sys.getandroidapilevel()  # novermin
except AttributeError:
    out["android_api"] = None
glibc = None
try:
    parts = os.confstr("CS_GNU_LIBC_VERSION").split()
    if len(parts) == 2 and parts[0] == "glibc":
        glibc = parts[1]
except (AttributeError, ValueError, OSError):
    pass
out["glibc"] = glibc
home = os.path.expanduser("~")
site = os.path.abspath(os.path.expanduser(sys.argv[1]))
out["home"] = home
out["site_dir"] = site
out["site_dir_exists"] = os.path.isdir(site)
manifest = None
try:
    with open(os.path.join(site, "edgekit-site.json")) as fh:
        manifest = json.load(fh)
except Exception:
    pass
out["manifest"] = manifest
dists = {}
pat = re.compile(r"^(.+?)-(\d[^-]*?)(-py\d[^-]*)?(-[^-]+)?\.(dist-info|egg-info)$")
for entry in sys.path:
    if not entry or not os.path.isdir(entry) or os.path.abspath(entry).startswith(site):
        continue
    for name in os.listdir(entry):
        m = pat.match(name)
        if m:
            key = re.sub(r"[-_.]+", "-", m.group(1)).lower()
            dists.setdefault(key, m.group(2))
out["dists"] = dists
import importlib.util
out["pip"] = importlib.util.find_spec("pip") is not None
try:
    st = os.statvfs(home)
    out["free_disk_mib"] = st.f_bavail * st.f_frsize // (1 << 20)
except OSError:
    out["free_disk_mib"] = None
mem = {}
try:
    with open("/proc/meminfo") as fh:
        for line in fh:
            k, v = line.split(":", 1)
            if k in ("MemTotal", "MemAvailable"):
                mem[k] = int(v.split()[0]) // 1024
except Exception:
    pass
out["mem_total_mib"] = mem.get("MemTotal")
out["mem_available_mib"] = mem.get("MemAvailable")
print("@@edgekit-facts " + json.dumps(out))

