#!/usr/bin/env bash
# Build the deploy ramdisk from Debian packages as a bootable ISO (isolinux, El Torito), cached by
# input hash.
#
#   images/build-ramdisk.sh              build (or reuse the cached build)
#   images/build-ramdisk.sh --print-dir  only print the cache dir for the current inputs
#
# What boots: Debian's cloud kernel and one zstd-compressed initramfs that IS the whole root
# (/init -> systemd; no switch_root): systemd, udev, systemd-networkd (DHCP on every Ethernet
# NIC), sshd, python3 (+ zstandard for the image writer), mdadm, util-linux, e2fsprogs, parted,
# gdisk, curl, zstd (images/ramdisk-packages.txt). No secrets inside: at boot,
# provisioner-provcfg.service finds the medium labelled PROVCFG (the per-job config ISO made by
# provisioner/imaging/config_iso.py, inserted as a second virtual CD), applies its bundle
# (hostname, the job's authorized key, the SSH host key the service generated) with
# playbooks/roles/provisioner/module_utils/prov_host_config.py, and only then starts sshd. No
# PROVCFG medium within 120 s: sshd never starts (nobody could log in, nothing is unpinned).
#
# Cache: key = sha256(this script, images/lib/debian-build.sh, the package list,
#   prov_host_config.py, mirror, debootstrap's version);
#   dir = ${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}/ramdisk/<key>/ holding
#   deploy-ramdisk.iso, vmlinuz, initrd.zst, ramdisk.json, build.log.
# stdout: the cache dir (one line). Everything else goes to stderr.
# Needs root (debootstrap, chroot). Packages: scripts/install-lab-deps.sh (xorriso, isolinux).
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
TAG=build-ramdisk
# shellcheck source=lib/debian-build.sh
source "$HERE/lib/debian-build.sh"
PKG_FILE="$HERE/ramdisk-packages.txt"
APPLIER="$REPO/playbooks/roles/provisioner/module_utils/prov_host_config.py"
ISOLINUX_BIN=/usr/lib/ISOLINUX/isolinux.bin
LDLINUX=/usr/lib/syslinux/modules/bios/ldlinux.c32
ZSTD_LEVEL=12

PRINT_DIR=0
for a in "$@"; do
  case "$a" in
    --print-dir) PRINT_DIR=1 ;;
    -h|--help) sed -n '2,26p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $a (see --help)" ;;
  esac
done

KEY=$(input_key "${BASH_SOURCE[0]}" "$PKG_FILE" "$APPLIER" -- "$(debian_mirror)" "$SUITE" "$ZSTD_LEVEL")
OUT="$CACHE_BASE/ramdisk/$KEY"
if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; exit 0; fi
if [[ -f $OUT/ramdisk.json && -f $OUT/deploy-ramdisk.iso ]]; then
  log "cached ramdisk $KEY in $OUT (skipping build)"
  echo "$OUT"; exit 0
fi
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot)"
need_tools debootstrap xorriso cpio zstd python3 sha256sum
[[ -f $ISOLINUX_BIN && -f $LDLINUX ]] || die "isolinux not found; run scripts/install-lab-deps.sh"

T0=$SECONDS
mkdir -p "$CACHE_BASE/ramdisk"
WORK=$(mktemp -d "$CACHE_BASE/ramdisk/.build-$KEY.XXXXXX")
ROOTFS="$WORK/rootfs"
cleanup() { chroot_umount "$ROOTFS"; rm -rf "$WORK"; }
trap cleanup EXIT
log "building the deploy ramdisk (key $KEY) in $WORK"

mapfile -t PACKAGES < <(read_packages "$PKG_FILE")
bootstrap "$ROOTFS" "$WORK/debootstrap.log" "${PACKAGES[@]}"
chroot_mount "$ROOTFS"
KVER=$(basename "$(ls -1 "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
[[ -n $KVER ]] || die "no kernel in the root's /boot"

common_system_config "$ROOTFS"
networkd_dhcp_all "$ROOTFS"
echo deploy-ramdisk >"$ROOTFS/etc/hostname"
: >"$ROOTFS/etc/fstab"
# host keys come only from the per-job config: never generate one here
in_chroot "$ROOTFS" systemctl disable provisioner-ssh-hostkeys.service >/dev/null 2>&1
rm -f "$ROOTFS/etc/systemd/system/provisioner-ssh-hostkeys.service"

install -D -m 755 "$APPLIER" "$ROOTFS/usr/local/lib/provisioner/prov_host_config.py"
cat >"$ROOTFS/usr/local/sbin/provisioner-provcfg" <<'SH'
#!/bin/sh
# Find the per-job config medium (label PROVCFG), apply its bundle to /, set the hostname.
set -u
dev=
for _ in $(seq 240); do
  dev=$(blkid -c /dev/null -o device -t LABEL=PROVCFG 2>/dev/null | head -n1)
  [ -n "$dev" ] && break
  sleep 0.5
done
if [ -z "$dev" ]; then
  echo "provcfg: no medium labelled PROVCFG after 120 s: sshd stays off" >&2
  exit 1
fi
mkdir -p /run/provcfg
mount -o ro "$dev" /run/provcfg || exit 1
python3 /usr/local/lib/provisioner/prov_host_config.py /run/provcfg/provcfg.json / || exit 1
umount /run/provcfg
hostname "$(cat /etc/hostname)"
echo "provcfg: applied the per-job config from $dev"
SH
chmod 755 "$ROOTFS/usr/local/sbin/provisioner-provcfg"
cat >"$ROOTFS/etc/systemd/system/provisioner-provcfg.service" <<'UNIT'
[Unit]
Description=Apply the per-job config (medium labelled PROVCFG)
After=systemd-udev-trigger.service
Before=ssh.service systemd-networkd.service
DefaultDependencies=no

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/provisioner-provcfg
StandardOutput=journal+console

[Install]
WantedBy=multi-user.target
UNIT
mkdir -p "$ROOTFS/etc/systemd/system/ssh.service.d"
printf '[Unit]\nRequires=provisioner-provcfg.service\nAfter=provisioner-provcfg.service\n' \
  >"$ROOTFS/etc/systemd/system/ssh.service.d/provcfg.conf"
in_chroot "$ROOTFS" systemctl enable provisioner-provcfg.service >/dev/null 2>&1
# a root in RAM: nothing to fsck or remount, no swap, no getty beyond the serial console
in_chroot "$ROOTFS" systemctl mask systemd-remount-fs.service getty@tty1.service \
  systemd-timesyncd.service >/dev/null 2>&1 || true
ln -sfn /lib/systemd/systemd "$ROOTFS/init"

cp "$ROOTFS/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
shrink_rootfs "$ROOTFS"
chroot_umount "$ROOTFS"
# the kernel is outside the initramfs; drivers a deploy never needs go too
rm -rf "$ROOTFS"/boot/* "$ROOTFS"/var/cache/debconf/*-old \
  "$ROOTFS/lib/modules/$KVER/kernel/sound" "$ROOTFS/lib/modules/$KVER/kernel/drivers/gpu" \
  "$ROOTFS/lib/modules/$KVER/kernel/drivers/media" "$ROOTFS/lib/modules/$KVER/kernel/drivers/infiniband" \
  "$ROOTFS/lib/modules/$KVER/kernel/net/wireless" "$ROOTFS/lib/modules/$KVER/kernel/net/mac80211" \
  "$ROOTFS/lib/modules/$KVER/kernel/drivers/net/wireless"
chroot "$ROOTFS" depmod "$KVER"

t=$SECONDS
USED_MIB=$(du -sxm "$ROOTFS" | cut -f1)
( cd "$ROOTFS" && find . -xdev -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet ) \
  | zstd -q -T0 "-$ZSTD_LEVEL" -o "$WORK/initrd.zst"
log "initramfs: ${USED_MIB} MiB of root -> $(du -h "$WORK/initrd.zst" | cut -f1) zstd in $((SECONDS - t)) s"
rm -rf "$ROOTFS"

mkdir -p "$WORK/iso/isolinux"
cp "$ISOLINUX_BIN" "$LDLINUX" "$WORK/iso/isolinux/"
cat >"$WORK/iso/isolinux/isolinux.cfg" <<'CFG'
SERIAL 0 115200
CONSOLE 0
DEFAULT deploy
PROMPT 0
TIMEOUT 0
LABEL deploy
  KERNEL /vmlinuz
  INITRD /initrd.zst
  APPEND console=tty0 console=ttyS0,115200n8 systemd.show_status=auto
CFG
cp "$WORK/vmlinuz" "$WORK/initrd.zst" "$WORK/iso/"
xorriso -as mkisofs -quiet -o "$WORK/deploy-ramdisk.iso" -V PROVDEPLOY -J -R \
  -b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
  "$WORK/iso" >>"$WORK/build.log" 2>&1 || { tail "$WORK/build.log" >&2; die "xorriso failed"; }
rm -rf "$WORK/iso"
python3 - "$WORK" "$KEY" "$KVER" "$(debian_mirror)" "$USED_MIB" <<'PY'
import hashlib, json, os, sys
work, key, kernel, mirror, used = sys.argv[1:]
def sha(name):
    h = hashlib.sha256()
    with open(os.path.join(work, name), "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
info = {"build_id": key, "kernel": kernel, "mirror": mirror, "root_mib": int(used),
        "boot": "isolinux (El Torito, BIOS)", "config_label": "PROVCFG",
        "files": {n: {"sha256": sha(n), "size": os.path.getsize(os.path.join(work, n))}
                  for n in ("deploy-ramdisk.iso", "vmlinuz", "initrd.zst")}}
with open(os.path.join(work, "ramdisk.json"), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
PY
cat "$WORK/debootstrap.log" >>"$WORK/build.log"; rm -f "$WORK/debootstrap.log"
publish_build "$WORK" "$OUT"
trap - EXIT
log "built the deploy ramdisk in $((SECONDS - T0)) s: $(du -h "$OUT/deploy-ramdisk.iso" | cut -f1) ISO"
echo "$OUT"
