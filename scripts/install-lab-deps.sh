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
  # bare-metal VMs behind a Redfish BMC (vagrant/lab bm-up): sushy-emulator's libvirt binding and
  # its venv (Debian's own python3 with --system-site-packages), TLS cert, firmware, ISO tools
  python3-libvirt python3-venv openssl seabios xorriso grub-pc-bin isolinux mtools
  # images/build-ramdisk.sh (the deploy ramdisk ISO)
  syslinux-common cpio
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
else
  log "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends \
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
    "${missing[@]}"
fi

# sushy-emulator (the lab's Redfish BMCs) in its own venv: Debian's own python3 with
# --system-site-packages, so it sees python3-libvirt; the version is pinned in constraints.txt.
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
SUSHY_VENV=${PROVISIONER_LAB_SUSHY_VENV:-/var/lib/provisioner-lab/sushy-venv}
want=$(grep -E '^sushy-tools==' "$HERE/../constraints.txt" | cut -d= -f3)
have=$("$SUSHY_VENV/bin/python" -c 'import importlib.metadata as m; print(m.version("sushy-tools"))' 2>/dev/null || true)
if [[ -n $want && $have == "$want" ]]; then
  log "sushy-tools $have already in $SUSHY_VENV"
else
  log "sushy-tools $want into $SUSHY_VENV"
  /usr/bin/python3 -m venv --system-site-packages "$SUSHY_VENV"
  "$SUSHY_VENV/bin/pip" install -q -c "$HERE/../constraints.txt" "sushy-tools==$want"
  "$SUSHY_VENV/bin/python" -c 'import libvirt, sushy_tools' || { log "sushy venv cannot import libvirt"; exit 1; }
fi
log "done"
