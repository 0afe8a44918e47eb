#!/usr/bin/env bash
# Build a bootable Debian 12 whole-disk image from Debian packages, cached by input hash.
#
#   images/build-disk-image.sh NAME VERSION              build (or reuse the cached build)
#   images/build-disk-image.sh --print-dir NAME VERSION  only print the cache dir for these inputs
#
# The image: an msdos partition table, one ext4 root partition from 1 MiB (label root, UUID fixed
# per build), GRUB for BIOS in the MBR gap (grub-install onto a loop device of the raw file, from
# the image's own grub-pc-bin), Debian's cloud kernel + initramfs, systemd-networkd with DHCP on
# every Ethernet NIC, the root grown to the whole root disk at first boot, openssh-server,
# python3, mdadm, nftables, restic (images/disk-image-packages.txt).
# No SSH host keys (written per host by the service; generated at first boot when nobody did),
# an empty /etc/machine-id, and /etc/provisioner-image.json = {name, version, build_id, os_name,
# os_version, kernel}. GRUB's menu boots /vmlinuz and /initrd.img (the kernel package keeps those
# links current), so /proc/cmdline starts with BOOT_IMAGE=/vmlinuz.
#
# Cache: key = sha256(this script, images/lib/debian-build.sh, the package list, NAME, VERSION,
#   size, mirror, debootstrap's version); dir = ${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}
#   /disk-image/NAME-VERSION/<key>/ holding NAME.raw (sparse), NAME.raw.zst, NAME.bmap.json (the
#   catalogue's block map of the raw content), NAME.bmap (bmaptool XML), image.json, build.log.
#   PROVISIONER_IMAGE_SIZE_MIB sets the disk size (default 2048).
# stdout: the cache dir (one line). Everything else goes to stderr.
# Needs root (debootstrap, chroot, loop devices). Packages: scripts/install-lab-deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO=$(dirname "$HERE")
TAG=build-disk-image
# shellcheck source=lib/debian-build.sh
source "$HERE/lib/debian-build.sh"
PKG_FILE="$HERE/disk-image-packages.txt"
SIZE_MIB=${PROVISIONER_IMAGE_SIZE_MIB:-2048}
ZSTD_LEVEL=10

PRINT_DIR=0; ARGS=()
for a in "$@"; do
  case "$a" in
    --print-dir) PRINT_DIR=1 ;;
    -h|--help) sed -n '2,25p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    -*) die "unknown option: $a (see --help)" ;;
    *) ARGS+=("$a") ;;
  esac
done
[[ ${#ARGS[@]} -eq 2 ]] || die "usage: $0 [--print-dir] NAME VERSION"
NAME=${ARGS[0]}; VERSION=${ARGS[1]}
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "$NAME is not a valid catalogue name (letters, digits, ._-)"
[[ $VERSION =~ ^[A-Za-z0-9][A-Za-z0-9._+-]*$ ]] || die "$VERSION is not a valid version (letters, digits, ._+-)"

KEY=$(input_key "${BASH_SOURCE[0]}" "$PKG_FILE" -- "$NAME" "$VERSION" "$SIZE_MIB" "$(debian_mirror)" "$SUITE")
OUT="$CACHE_BASE/disk-image/$NAME-$VERSION/$KEY"
if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; exit 0; fi
if [[ -f $OUT/image.json && -f $OUT/$NAME.raw.zst && -f $OUT/$NAME.bmap.json ]]; then
  log "cached build $KEY of $NAME $VERSION in $OUT (skipping build)"
  echo "$OUT"; exit 0
fi
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap, chroot, losetup)"
need_tools debootstrap mkfs.ext4 e2fsck sfdisk losetup zstd python3 sha256sum

T0=$SECONDS
mkdir -p "$(dirname "$OUT")"
WORK=$(mktemp -d "$(dirname "$OUT")/.build-$KEY.XXXXXX")
ROOTFS="$WORK/rootfs"; MNT="$WORK/mnt"; LOOP=; PART=
cleanup() {
  chroot_umount "$ROOTFS"; chroot_umount "$MNT"
  mountpoint -q "$MNT" 2>/dev/null && umount "$MNT" || true
  [[ -n $PART ]] && losetup -d "$PART" 2>/dev/null || true
  [[ -n $LOOP ]] && losetup -d "$LOOP" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT
log "building $NAME $VERSION (key $KEY) in $WORK"

mapfile -t PACKAGES < <(read_packages "$PKG_FILE")
bootstrap "$ROOTFS" "$WORK/debootstrap.log" "${PACKAGES[@]}"
chroot_mount "$ROOTFS"

# A fixed filesystem UUID per build key: the same inputs give the same identity.
FS_UUID=$(echo "$KEY" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
KVER=$(basename "$(ls -1 "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
[[ -n $KVER ]] || die "no kernel in the root's /boot"

common_system_config "$ROOTFS"
networkd_dhcp_all "$ROOTFS"
printf 'UUID=%s\t/\text4\tdefaults,errors=remount-ro\t0\t1\n' "$FS_UUID" >"$ROOTFS/etc/fstab"
# first boot: the root partition and filesystem grow to the whole root disk, before sshd answers
cat >"$ROOTFS/usr/local/sbin/provisioner-growroot" <<'SH'
#!/bin/sh
# Grow the root partition and its ext4 to the end of the root disk, once. sfdisk + partx, not
# cloud-guest-utils' growpart: that shell script forks hundreds of processes, minutes under TCG.
set -eu
src=$(findmnt -no SOURCE /)
disk=/dev/$(lsblk -no PKNAME "$src")
part=$(cat "/sys/class/block/$(basename "$src")/partition")
echo ', +' | sfdisk -q --no-reread --no-tell-kernel -N "$part" "$disk"
partx -u -n "$part" "$disk"
resize2fs "$src"
mkdir -p /var/lib/provisioner
touch /var/lib/provisioner/growroot.done
SH
chmod 755 "$ROOTFS/usr/local/sbin/provisioner-growroot"
cat >"$ROOTFS/etc/systemd/system/provisioner-growroot.service" <<'UNIT'
[Unit]
Description=Grow the root partition and filesystem to the root disk (first boot)
After=local-fs.target
Before=ssh.service
ConditionPathExists=!/var/lib/provisioner/growroot.done

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/provisioner-growroot

[Install]
WantedBy=multi-user.target
UNIT
in_chroot "$ROOTFS" systemctl enable provisioner-growroot.service >/dev/null 2>&1
# the kernel package maintains /vmlinuz and /initrd.img; make sure they exist for GRUB's menu
ln -sfn "boot/vmlinuz-$KVER" "$ROOTFS/vmlinuz"
ln -sfn "boot/initrd.img-$KVER" "$ROOTFS/initrd.img"

# initramfs: the modules a root on virtio / IDE / SATA / SCSI needs (MODULES=most keeps the rest)
cat >>"$ROOTFS/etc/initramfs-tools/modules" <<'MODS'
virtio_pci
virtio_blk
virtio_scsi
ata_piix
sd_mod
ext4
MODS
sed -i 's/^MODULES=.*/MODULES=most/' "$ROOTFS/etc/initramfs-tools/initramfs.conf"
in_chroot "$ROOTFS" update-initramfs -u -k "$KVER" >"$WORK/initramfs.log" 2>&1 \
  || { cat "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }

python3 - "$ROOTFS/etc/provisioner-image.json" "$NAME" "$VERSION" "$KEY" "$KVER" <<'PY'
import json, sys
path, name, version, build_id, kernel = sys.argv[1:]
with open(path, "w") as f:
    json.dump({"name": name, "version": version, "build_id": build_id, "os_name": "debian",
               "os_version": "12", "kernel": kernel}, f, indent=2)
    f.write("\n")
PY

# GRUB's menu, written by hand: no grub-pc package (its postinst asks for install devices), and a
# menu that boots the /vmlinuz link keeps working across kernel updates inside the deployed OS.
mkdir -p "$ROOTFS/boot/grub"
cat >"$ROOTFS/boot/grub/grub.cfg" <<CFG
serial --unit=0 --speed=115200
terminal_input serial console
terminal_output serial console
set timeout=1
set default=0
insmod part_msdos
insmod ext2
search --no-floppy --fs-uuid --set=root $FS_UUID
menuentry '$NAME $VERSION (Debian 12)' {
  linux /vmlinuz root=UUID=$FS_UUID ro console=tty0 console=ttyS0,115200n8
  initrd /initrd.img
}
CFG
shrink_rootfs "$ROOTFS"
chroot_umount "$ROOTFS"
USED_MIB=$(du -sxm "$ROOTFS" | cut -f1)
(( USED_MIB < SIZE_MIB * 8 / 10 )) || die "the root needs ${USED_MIB} MiB; raise PROVISIONER_IMAGE_SIZE_MIB"

# --- the disk: msdos label, root partition from 1 MiB, ext4 filled from the folder ----------------
t=$SECONDS
RAW="$WORK/$NAME.raw"
truncate -s "${SIZE_MIB}M" "$RAW"
echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$RAW"
# Two loop devices: the whole disk (for GRUB's MBR and its core image in the MBR gap) and the root
# partition alone (loop partition scanning is off on some kernels). GRUB then finds its folder by
# the root filesystem's UUID (grub-install embeds search.fs_uuid when the two differ).
LOOP=$(losetup --show -f "$RAW")
PART=$(losetup --show -f -o $((1 << 20)) --sizelimit $(( (SIZE_MIB - 1) << 20 )) "$RAW")
mkfs.ext4 -q -F -L root -U "$FS_UUID" -E root_owner=0:0 -d "$ROOTFS" "$PART" >>"$WORK/build.log" 2>&1 \
  || die "mkfs.ext4 failed"
mkdir -p "$MNT"
mount "$PART" "$MNT"
chroot_mount "$MNT"
in_chroot "$MNT" grub-install --target=i386-pc --no-floppy --modules="part_msdos ext2 search_fs_uuid" "$LOOP" \
  >>"$WORK/build.log" 2>&1 || { tail -20 "$WORK/build.log" >&2; die "grub-install failed"; }
chroot_umount "$MNT"
umount "$MNT"
e2fsck -fn "$PART" >>"$WORK/build.log" 2>&1 || die "the root filesystem does not check clean"
losetup -d "$PART"; PART=
losetup -d "$LOOP"; LOOP=
log "disk written in $((SECONDS - t)) s (${USED_MIB} MiB used of ${SIZE_MIB} MiB)"
rm -rf "$ROOTFS"; rmdir "$MNT"

# --- publishable artefacts: raw.zst + the catalogue's block map --------------------------------
zstd -q -T0 "-$ZSTD_LEVEL" "$RAW" -o "$WORK/$NAME.raw.zst"
PYTHONPATH="$REPO" python3 - "$WORK" "$NAME" "$VERSION" "$KEY" "$KVER" "$(debian_mirror)" <<'PY'
import json, os, sys
from provisioner.imaging.bmap import bmap_from_file, data_bytes
from provisioner.imaging.bmap_xml import to_bmaptool_xml
work, name, version, key, kernel, mirror = sys.argv[1:]
raw = os.path.join(work, f"{name}.raw")
bmap = bmap_from_file(raw)
with open(os.path.join(work, f"{name}.bmap.json"), "w") as f:
    json.dump(bmap, f)
with open(os.path.join(work, f"{name}.bmap"), "w") as f:
    f.write(to_bmaptool_xml(bmap))
info = {"name": name, "version": version, "build_id": key, "os_name": "debian", "os_version": "12",
        "format": "raw.zst", "sha256": bmap["sha256"], "size": bmap["image_size"],
        "data_bytes": data_bytes(bmap), "kernel": kernel, "mirror": mirror, "boot": "bios-grub",
        "partition_table": "msdos", "root": "ext4, partition 1, label root",
        "files": {"raw": f"{name}.raw", "raw.zst": f"{name}.raw.zst", "bmap": f"{name}.bmap.json",
                  "bmaptool": f"{name}.bmap"}}
with open(os.path.join(work, "image.json"), "w") as f:
    json.dump(info, f, indent=2)
    f.write("\n")
PY
cat "$WORK/debootstrap.log" "$WORK/initramfs.log" >>"$WORK/build.log" 2>/dev/null || true
rm -f "$WORK/debootstrap.log" "$WORK/initramfs.log"
publish_build "$WORK" "$OUT"
trap - EXIT
log "built $NAME $VERSION in $((SECONDS - T0)) s: $(du -h "$OUT/$NAME.raw.zst" | cut -f1) raw.zst"
echo "$OUT"
