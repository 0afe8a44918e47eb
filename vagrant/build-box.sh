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
# Cache: key = sha256(this script + box-packages.txt + vagrant.pub + mirror/suite/size).
#   dir = ${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}/box/<key>/
#         {provisioner-debian12.box, vmlinuz, initrd.img, key, build.log}
# stdout: the cache dir (one line). Everything else goes to stderr.
# Needs root (debootstrap, chroot). Packages: scripts/install-lab-deps.sh.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
BOX_NAME=${PROVISIONER_LAB_BOX_NAME:-provisioner/debian12}
CACHE_BASE=${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}
MIRROR=${PROVISIONER_LAB_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
ROOT_SIZE_GB=${PROVISIONER_LAB_BOX_SIZE_GB:-4}
PKG_FILE="$HERE/box-packages.txt"

log() { printf '[build-box %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[build-box] ERROR: %s\n' "$*" >&2; exit 1; }

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
mapfile -t PACKAGES < <(sed -e 's/#.*//' -e 's/[[:space:]]//g' "$PKG_FILE" | grep -v '^$')

KEY=$( { cat "${BASH_SOURCE[0]}" "$PKG_FILE" "$VAGRANT_PUB"; echo "$MIRROR $SUITE $ROOT_SIZE_GB"; } | sha256sum | cut -c1-16)
OUT="$CACHE_BASE/box/$KEY"
BOX_FILE="$OUT/provisioner-debian12.box"

if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; exit 0; fi
[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap/chroot)"

T0=$SECONDS
if [[ -f $OUT/key && -f $BOX_FILE && -f $OUT/vmlinuz && -f $OUT/initrd.img ]]; then
  log "cached box $KEY found in $OUT (skipping build)"
else
  for t in debootstrap mkfs.ext4 qemu-img tar; do
    command -v "$t" >/dev/null || die "'$t' not found; run scripts/install-lab-deps.sh"
  done
  mkdir -p "$CACHE_BASE/box" "$CACHE_BASE/debs"
  chmod 755 "$CACHE_BASE" "$CACHE_BASE/box"
  WORK=$(mktemp -d "$CACHE_BASE/box/.build-$KEY.XXXXXX")
  ROOTFS="$WORK/rootfs"
  cleanup() {
    local m
    for m in dev/pts dev sys proc; do
      mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true
    done
    rm -rf "$WORK"
  }
  trap cleanup EXIT
  log "building box $KEY (cold build, ~3-5 min) in $WORK"

  export DEBIAN_FRONTEND=noninteractive DEBCONF_NONINTERACTIVE_SEEN=true
  include=$(IFS=,; echo "${PACKAGES[*]}")
  t=$SECONDS
  log "debootstrap $SUITE (minbase, ${#PACKAGES[@]} extra packages) from $MIRROR"
  if ! debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE_BASE/debs" \
        "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
    tail -n 30 "$WORK/debootstrap.log" >&2
    [[ -f $ROOTFS/debootstrap/debootstrap.log ]] && tail -n 30 "$ROOTFS/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log tail above); check the mirror $MIRROR and box-packages.txt, then rerun"
  fi
  log "debootstrap done in $((SECONDS - t)) s"

  mount -t proc proc "$ROOTFS/proc"
  mount -t sysfs sys "$ROOTFS/sys"
  mount --bind /dev "$ROOTFS/dev"
  mount --bind /dev/pts "$ROOTFS/dev/pts"
  in_chroot() { chroot "$ROOTFS" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
                  DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"; }

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
  echo "deb $MIRROR $SUITE main" >"$ROOTFS/etc/apt/sources.list"
  : >"$ROOTFS/etc/machine-id"   # regenerated per VM on first boot
  rm -f "$ROOTFS/var/lib/dbus/machine-id"

  # --- user vagrant ----------------------------------------------------------
  in_chroot useradd -m -s /bin/bash -G sudo vagrant
  echo 'vagrant:vagrant' | in_chroot chpasswd
  install -d -m 700 "$ROOTFS/home/vagrant/.ssh"
  install -m 600 "$VAGRANT_PUB" "$ROOTFS/home/vagrant/.ssh/authorized_keys"
  in_chroot chown -R vagrant:vagrant /home/vagrant/.ssh
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
  in_chroot systemctl enable lab-ssh-hostkeys.service lab-growroot.service ssh.service >/dev/null 2>&1

  # --- nothing that eats CPU in the background --------------------------------
  in_chroot systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
    apt-daily-upgrade.service man-db.timer man-db.service e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer mdcheck_start.timer mdcheck_continue.timer mdmonitor-oneshot.timer \
    systemd-tmpfiles-clean.timer dpkg-db-backup.timer >/dev/null 2>&1
  # allow-hotplug (not auto): sshd starts while DHCP runs instead of after it
# mdadm: no mail, no questions, no arrays assembled from the image
  if [[ -f $ROOTFS/etc/mdadm/mdadm.conf ]]; then
    sed -i 's/^MAILADDR.*/MAILADDR root/' "$ROOTFS/etc/mdadm/mdadm.conf"
  fi

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
  in_chroot update-initramfs -u -k all >"$WORK/initramfs.log" 2>&1 || { cat "$WORK/initramfs.log" >&2; die "update-initramfs failed"; }
  log "initramfs regenerated in $((SECONDS - t)) s"
  KVER=$(basename "$(ls -1 "$ROOTFS"/boot/vmlinuz-* | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
  [[ -n $KVER ]] || die "no kernel in rootfs /boot"
  # verify virtio_blk + ext4 are available in early boot (module in initrd or built in)
  # lsinitramfs of the rootfs itself: the host needs no initramfs-tools
  in_chroot lsinitramfs "/boot/initrd.img-$KVER" >"$WORK/initrd.list"
  for m in virtio_blk ext4 virtio_pci; do
    if grep -q "/$m.ko" "$WORK/initrd.list"; then :
    elif grep -q "/$m.ko" "$ROOTFS/lib/modules/$KVER/modules.builtin"; then :
    else die "module $m is neither in the initrd nor built into kernel $KVER"; fi
  done
  log "kernel $KVER; initrd has virtio_blk/ext4/virtio_pci (module or built-in)"

  # --- shrink ----------------------------------------------------------------
  in_chroot apt-get clean
  rm -rf "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/cache/apt/*.bin "$ROOTFS"/tmp/* \
         "$ROOTFS"/var/log/*.log "$ROOTFS"/usr/share/doc/* "$ROOTFS"/usr/share/man/* \
         "$ROOTFS"/usr/share/locale/* "$ROOTFS/debootstrap"
  for m in dev/pts dev sys proc; do umount -l "$ROOTFS/$m"; done

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
