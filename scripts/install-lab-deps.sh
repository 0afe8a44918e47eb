#!/usr/bin/env bash
# Install the Debian packages the Vagrant lab (vagrant/lab) needs.
# Idempotent: does nothing when every package is already installed; otherwise
# runs `apt-get update` once and installs the missing ones.
# Target: Debian 12 (bookworm), run as root (or via sudo).
set -euo pipefail

PACKAGES=(
  vagrant vagrant-libvirt libvirt-daemon-system libvirt-clients
  qemu-system-x86 qemu-utils debootstrap mdadm nftables restic
  openssh-server bmap-tools zstd
  # images/build-ramdisk.sh (the deploy ramdisk ISO)
  xorriso isolinux syslinux-common
  # images/build-disk-image.sh (partition table of the whole-disk image)
  fdisk
  # used by vagrant/lab and vagrant/build-box.sh (normally already present)
  iproute2 e2fsprogs python3 util-linux dnsmasq-base iptables openssh-client debian-archive-keyring gpgv
)

log() { printf 'install-lab-deps: %s\n' "$*" >&2; }

if [[ $(id -u) -ne 0 ]]; then
  log "must run as root (try: sudo $0)"
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
    missing+=("$p")
  fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
  log "all ${#PACKAGES[@]} packages already installed"
  exit 0
fi

log "installing: ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  "${missing[@]}"
log "done"
