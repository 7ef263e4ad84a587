# edgekit emulator namespace init: mount the emulated device's filesystems, then become its sshd.
#
# Run by `edgekit emulator start` (edgekit/emulator.py) as root, as PID 1 of new mount + PID
# namespaces: ``sh -c <this file> NAME root base inst mode user uid gid home cpu`` (each
# argument one word, never spliced into the script). Every mount dies with the namespace.
#
# Rules for this file: POSIX sh (dash), no bashisms (checked by `sh -n` in
# tests/runtimes/test_device_programs.py); it is sent as it is, nothing is generated into it.
set -eu
root=$1 base=$2 inst=$3 mode=$4 user=$5 uid=$6 gid=$7 home=$8 cpu=$9
if [ "$mode" = overlay ]; then
  mount -t overlay edgekit-overlay -o "lowerdir=$base,upperdir=$inst/upper,workdir=$inst/work" "$root"
fi
mount -t proc proc "$root/proc"
mount -t tmpfs -o mode=0755,size=64m,nosuid,nodev tmpfs "$root/run"
mkdir -m 0755 "$root/run/sshd"
if mount -t devpts -o newinstance,ptmxmode=0666,mode=0620 devpts "$root/dev/pts" 2>/dev/null; then
  mount --bind "$root/dev/pts/ptmx" "$root/dev/ptmx" 2>/dev/null || true
fi
# no host /sys (it makes onnxruntime and ai_edge_litert crash under qemu), only the CPU lists
mount -t tmpfs -o mode=0755,size=1m,nosuid,nodev,noexec tmpfs "$root/sys"
mkdir -p "$root/sys/devices/system/cpu"
for f in possible present online; do
  cat "/sys/devices/system/cpu/$f" > "$root/sys/devices/system/cpu/$f" 2>/dev/null || echo 0 > "$root/sys/devices/system/cpu/$f"
done
mkdir -p "$root/etc/edgekit"
mount --bind "$inst/etc" "$root/etc/edgekit"
mount -o remount,bind,ro "$root/etc/edgekit"
install -d -o "$uid" -g "$gid" -m 0700 "$root$home/.ssh"
install -o "$uid" -g "$gid" -m 0600 "$inst/etc/authorized_keys" "$root$home/.ssh/authorized_keys"
if [ -n "$cpu" ]; then
  export QEMU_CPU="$cpu"
  if [ -f "$inst/etc/ssh_environment" ]; then
    install -o "$uid" -g "$gid" -m 0600 "$inst/etc/ssh_environment" "$root$home/.ssh/environment"
  fi
fi
echo "edgekit: starting sshd (pid namespace init)" >&2
exec chroot "$root" /usr/sbin/sshd -D -e -f /etc/edgekit/sshd_config

