"""edgekit site install: unpack runtime wheels into the device's private site folder.

Run by `edgekit provision` (edgekit/provision.py) as
``python3 install.py SITE_DIR MANIFEST_JSON WHEEL...`` after pushing the wheels: unzips them
(no pip needed) into SITE_DIR.new, writes the manifest there, swaps it in for SITE_DIR and
prints ``@@edgekit-installed SITE_DIR``. A path that would leave the folder stops it.

Rules for this file (it is sent to devices as it is, like edgekit_runner.py):
* One file, standard library only. It never imports edgekit.
* Python >= 3.6: no walrus, no dataclasses, no `from __future__ import annotations`, no
  positional-only parameters, no f-string `=`, no subprocess capture_output/text
  (checked by `vermin -t=3.6-` in tests/runtimes/test_device_programs.py).
"""
import json, os, shutil, sys, time, zipfile
site, manifest_path, wheels = sys.argv[1], sys.argv[2], sys.argv[3:]
new = site + ".new"
shutil.rmtree(new, ignore_errors=True)
os.makedirs(new)
def dest_of(name):
    parts = name.split("/")
    if name.startswith("/") or ".." in parts or "\\" in name:
        raise SystemExit("unsafe path in wheel: " + name)
    if parts[0].endswith(".data") and len(parts) > 2:
        if parts[1] in ("purelib", "platlib"):
            return "/".join(parts[2:])
        return None  # scripts, headers, data: the runner needs none of them
    return name
for wheel in wheels:
    with zipfile.ZipFile(wheel) as zf:
        for info in zf.infolist():
            rel = dest_of(info.filename)
            if not rel:
                continue
            target = os.path.join(new, rel)
            if info.filename.endswith("/"):
                os.makedirs(target, exist_ok=True)
                continue
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with zf.open(info) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            if mode & 0o111:
                os.chmod(target, 0o755)
with open(manifest_path) as fh:
    manifest = json.load(fh)
manifest["installed_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
with open(os.path.join(new, "edgekit-site.json"), "w") as fh:
    json.dump(manifest, fh, indent=1)
old = None
if os.path.lexists(site):
    old = site + ".old"
    shutil.rmtree(old, ignore_errors=True)
    os.rename(site, old)
os.rename(new, site)
if old:
    shutil.rmtree(old, ignore_errors=True)
print("@@edgekit-installed " + site)

