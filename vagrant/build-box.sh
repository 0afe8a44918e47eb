#!/usr/bin/env bash
# Build the lab's Vagrant box (libvirt provider) from Debian packages, cache it,
# and register it with Vagrant as provisioner/debian12.
#
#   vagrant/build-box.sh            build (or reuse the cached build) + register
#   vagrant/build-box.sh --no-add   build (or reuse), do not touch Vagrant's box store
#   vagrant/build-box.sh --print-dir  only print the cache dir for the current key
#
# The box boots without a bootloader: vmlinuz + initrd.img are stored next to the
# box and the Vagrantfile passes them to libvirt (kernel/initrd/cmd_line).
#
# Debootstrap, chroot, the quiet-system settings, the shrink and the cache key are the image
# recipes' own (images/lib/debian-build.sh): the box and the images are built the same way from the
# same mirror and .deb cache.
#
# Cache: key = sha256(this script + images/lib/debian-build.sh + box-packages.txt + vagrant.pub +
#   mirror/suite/size + debootstrap's version).
#   dir = ${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}/box/<key>/
#         {provisioner-debian12.box, vmlinuz, initrd.img, key, build.log}
# stdout: the cache dir (one line). Everything else goes to stderr.
# Needs root (debootstrap, chroot). Packages: scripts/install-lab-deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=build-box
# shellcheck source=../images/lib/debian-build.sh
source "$HERE/../images/lib/debian-build.sh"
BOX_NAME=${PROVISIONER_LAB_BOX_NAME:-provisioner/debian12}
ROOT_SIZE_GB=${PROVISIONER_LAB_BOX_SIZE_GB:-4}
PKG_FILE="$HERE/box-packages.txt"

ADD=1; PRINT_DIR=0
for a in "$@"; do
  case "$a" in
    --no-add) ADD=0 ;;
    --print-dir) PRINT_DIR=1 ;;
    -h|--help) sed -n '2,18p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    *) die "unknown argument: $a (see --help)" ;;
  esac
done

find_vagrant_pub() {
  local f
  for f in /usr/share/rubygems-integration/all/gems/vagrant-*/keys/vagrant.pub \
           /opt/vagrant/embedded/gems/gems/vagrant-*/keys/vagrant.pub \
           /opt/vagrant/embedded/gems/*/gems/vagrant-*/keys/vagrant.pub; do
    [[ -f $f ]] && { echo "$f"; return 0; }
  done
  f=$(find /usr/share /usr/lib /opt -path '*vagrant*/keys/vagrant.pub' -print -quit 2>/dev/null || true)
  [[ -n $f ]] && { echo "$f"; return 0; }
  return 1
}

VAGRANT_PUB=$(find_vagrant_pub) || die "Vagrant's insecure public key (keys/vagrant.pub) not found; install the 'vagrant' package (scripts/install-lab-deps.sh)"
[[ -f $PKG_FILE ]] || die "missing $PKG_FILE"
mapfile -t PACKAGES < <(read_packages "$PKG_FILE")

KEY=$(input_key "${BASH_SOURCE[0]}" "$PKG_FILE" "$VAGRANT_PUB" -- "$(debian_mirror)" "$SUITE" "$ROOT_SIZE_GB")
OUT="$CACHE_BASE/box/$KEY"
BOX_FILE="$OUT/provisioner-debian12.box"

if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; exit 0; fi
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap/chroot)"

T0=$SECONDS
if [[ -f $OUT/key && -f $BOX_FILE && -f $OUT/vmlinuz && -f $OUT/initrd.img ]]; then
  log "cached box $KEY found in $OUT (skipping build)"
else
  need_tools debootstrap mkfs.ext4 qemu-img tar
  mkdir -p "$CACHE_BASE/box" "$CACHE_BASE/debs"
  chmod 755 "$CACHE_BASE" "$CACHE_BASE/box"
  WORK=$(mktemp -d "$CACHE_BASE/box/.build-$KEY.XXXXXX")
  ROOTFS="$WORK/rootfs"
  cleanup() { chroot_umount "$ROOTFS"; rm -rf "$WORK"; }
  trap cleanup EXIT
  log "building box $KEY (cold build, ~3-5 min) in $WORK"

  bootstrap "$ROOTFS" "$WORK/debootstrap.log" "${PACKAGES[@]}"
  chroot_mount "$ROOTFS"

  # --- system config -------------------------------------------------------
  echo localhost >"$ROOTFS/etc/hostname"   # real name comes from systemd.hostname= on the cmdline
  cat >"$ROOTFS/etc/hosts" <<'EOF'
127.0.0.1	localhost
::1		localhost ip6-localhost ip6-loopback
EOF
  sed -i 's/^hosts:.*/hosts:          files myhostname dns/' "$ROOTFS/etc/nsswitch.conf"
  cat >"$ROOTFS/etc/fstab" <<'EOF'
/dev/vda	/	ext4	defaults,errors=remount-ro	0	1
EOF
  cat >"$ROOTFS/etc/network/interfaces" <<'EOF'
auto lo
iface lo inet loopback

allow-hotplug eth0
iface eth0 inet dhcp
EOF
  : >"$ROOTFS/etc/machine-id"   # regenerated per VM on first boot
  rm -f "$ROOTFS/var/lib/dbus/machine-id"

  # --- user vagrant ----------------------------------------------------------
  in_chroot "$ROOTFS" useradd -m -s /bin/bash -G sudo vagrant
  echo 'vagrant:vagrant' | in_chroot "$ROOTFS" chpasswd
  install -d -m 700 "$ROOTFS/home/vagrant/.ssh"
  install -m 600 "$VAGRANT_PUB" "$ROOTFS/home/vagrant/.ssh/authorized_keys"
  in_chroot "$ROOTFS" chown -R vagrant:vagrant /home/vagrant/.ssh
  echo 'vagrant ALL=(ALL) NOPASSWD:ALL' >"$ROOTFS/etc/sudoers.d/vagrant"
  chmod 440 "$ROOTFS/etc/sudoers.d/vagrant"
  echo 'Defaults:vagrant !requiretty' >>"$ROOTFS/etc/sudoers.d/vagrant"

  # --- sshd ----------------------------------------------------------------
  cat >"$ROOTFS/etc/ssh/sshd_config.d/lab.conf" <<'EOF'
UseDNS no
GSSAPIAuthentication no
PasswordAuthentication no
# RSA host key generation takes ~10 s under QEMU TCG: only ed25519 + ecdsa
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
EOF
  rm -f "$ROOTFS"/etc/ssh/ssh_host_*   # unique host keys per VM, generated at first boot
  cat >"$ROOTFS/etc/systemd/system/lab-ssh-hostkeys.service" <<'EOF'
[Unit]
Description=Generate SSH host keys (lab box first boot)
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key
ExecStart=/usr/bin/ssh-keygen -q -t ecdsa -N "" -f /etc/ssh/ssh_host_ecdsa_key

[Install]
WantedBy=multi-user.target
EOF
  # root is ext4 directly on /dev/vda: grow it if the disk was made bigger
  cat >"$ROOTFS/etc/systemd/system/lab-growroot.service" <<'EOF'
[Unit]
Description=Grow root filesystem to the disk size (lab box)
After=local-fs.target

[Service]
Type=oneshot
ExecStart=-/sbin/resize2fs /dev/vda

[Install]
WantedBy=multi-user.target
EOF
  in_chroot "$ROOTFS" systemctl enable lab-ssh-hostkeys.service lab-growroot.service ssh.service >/dev/null 2>&1

  # --- nothing that eats CPU in the background --------------------------------
  quiet_system "$ROOTFS"

  # --- initramfs: make sure root on virtio-blk/ext4 mounts --------------------
  cat >>"$ROOTFS/etc/initramfs-tools/modules" <<'EOF'
virtio_pci
virtio_blk
virtio_net
virtio_console
ext4
EOF
  sed -i 's/^MODULES=.*/MODULES=most/' "$ROOTFS/etc/initramfs-tools/initramfs.conf"
  t=$SECONDS
  in_chroot "$ROOTFS" update-initramfs -u -k all >"$WORK/initramfs.log" 2>&1 || { cat "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }
  log "initramfs regenerated in $((SECONDS - t)) s"
  KVER=$(basename "$(ls -1 "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
  [[ -n $KVER ]] || die "no kernel in rootfs /boot"
  # verify virtio_blk + ext4 are available in early boot (module in initrd or built in)
  # lsinitramfs of the rootfs itself: the host needs no initramfs-tools
  in_chroot "$ROOTFS" lsinitramfs "/boot/initrd.img-$KVER" >"$WORK/initrd.list"
  for m in virtio_blk ext4 virtio_pci; do
    if grep -q "/$m.ko" "$WORK/initrd.list"; then :
    elif grep -q "/$m.ko" "$ROOTFS/lib/modules/$KVER/modules.builtin"; then :
    else die "module $m is neither in the initrd nor built into kernel $KVER"; fi
  done
  log "kernel $KVER; initrd has virtio_blk/ext4/virtio_pci (module or built-in)"

  # --- shrink ----------------------------------------------------------------
  shrink_rootfs "$ROOTFS"
  chroot_umount "$ROOTFS"

  # --- image -------------------------------------------------------------------
  t=$SECONDS
  mkdir -p "$WORK/box"
  cp "$ROOTFS/boot/vmlinuz-$KVER" "$WORK/vmlinuz"
  cp "$ROOTFS/boot/initrd.img-$KVER" "$WORK/initrd.img"
  truncate -s "${ROOT_SIZE_GB}G" "$WORK/root.img"
  mkfs.ext4 -q -F -L root -d "$ROOTFS" "$WORK/root.img"
  qemu-img convert -f raw -O qcow2 "$WORK/root.img" "$WORK/box/box.img"
  rm -f "$WORK/root.img"
  printf '{"provider":"libvirt","format":"qcow2","virtual_size":%s}\n' "$ROOT_SIZE_GB" >"$WORK/box/metadata.json"
  cat >"$WORK/box/Vagrantfile" <<'EOF'
Vagrant.configure("2") do |config|
  config.vm.synced_folder ".", "/vagrant", disabled: true
  config.vm.provider :libvirt do |libvirt|
    libvirt.driver = "qemu"
  end
end
EOF
  tar -C "$WORK/box" -cf "$WORK/provisioner-debian12.box" metadata.json Vagrantfile box.img
  log "image + box written in $((SECONDS - t)) s ($(du -h "$WORK/provisioner-debian12.box" | cut -f1))"

  mkdir -p "$OUT.tmp"
  mv "$WORK/provisioner-debian12.box" "$WORK/vmlinuz" "$WORK/initrd.img" "$OUT.tmp/"
  echo "$KVER" >"$OUT.tmp/kernel-version"
  cat "$WORK/debootstrap.log" "$WORK/initramfs.log" >"$OUT.tmp/build.log" 2>/dev/null || true
  chmod 755 "$OUT.tmp"; chmod 644 "$OUT.tmp"/*
  echo "$KEY" >"$OUT.tmp/key"
  rm -rf "$OUT"; mv "$OUT.tmp" "$OUT"
  trap - EXIT; cleanup
  log "box $KEY built in $((SECONDS - T0)) s"
  # keep only the newest 2 builds
  ls -1dt "$CACHE_BASE"/box/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
fi

if [[ $ADD == 1 ]]; then
  command -v vagrant >/dev/null || die "'vagrant' not found; run scripts/install-lab-deps.sh"
  VHOME=${VAGRANT_HOME:-$HOME/.vagrant.d}
  MARKER="$VHOME/provisioner-lab-box.key"
  BOXDIR="$VHOME/boxes/$(echo "$BOX_NAME" | sed 's#/#-VAGRANTSLASH-#')"
  if [[ -f $MARKER && $(cat "$MARKER") == "$KEY" && -d $BOXDIR ]]; then
    log "vagrant box $BOX_NAME already at key $KEY"
  else
    t=$SECONDS
    log "registering box $BOX_NAME (key $KEY) with vagrant"
    vagrant box add --force --name "$BOX_NAME" "$BOX_FILE" >&2
    mkdir -p "$VHOME"; echo "$KEY" >"$MARKER"
    log "vagrant box add took $((SECONDS - t)) s"
  fi
fi
log "done in $((SECONDS - T0)) s"
echo "$OUT"
