# shellcheck shell=bash
# Shared shell for the image recipes (images/build-disk-image.sh, images/build-ramdisk.sh) and the
# lab's box (vagrant/build-box.sh):
# logging, the input-hash cache, debootstrap from Debian packages into a folder with the lab's
# shared .deb cache, chroot mounts, and the quiet-system settings every image shares.
# Sourced, never run. The caller sets TAG (log prefix) before sourcing.
#
# Cache layout:
#   ${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}/debs/        downloaded .debs, reused by every build
#   ${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}/<kind>/<key>/ one finished build per input hash
# The mirror: PROVISIONER_LAB_MIRROR, else the Debian URI of this machine's apt sources, else deb.debian.org.

CACHE_BASE=${PROVISIONER_LAB_CACHE:-/var/cache/provisioner-lab}
SUITE=bookworm
LIB_FILE="${BASH_SOURCE[0]}"

# A build killed by a signal still runs its EXIT trap (unmounts the chroot's /dev, /proc, loops).
trap 'exit 130' INT
trap 'exit 143' TERM

log() { printf '[%s %(%H:%M:%S)T] %s\n' "${TAG:-build}" -1 "$*" >&2; }
die() { printf '[%s] ERROR: %s\n' "${TAG:-build}" "$*" >&2; exit 1; }

# The Debian mirror to build from (deb822 or one-line sources; security/updates skipped).
debian_mirror() {
  local m=${PROVISIONER_LAB_MIRROR:-}
  if [[ -z $m ]]; then
    m=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -1 || true)
  fi
  if [[ -z $m ]]; then
    m=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '$1 == "deb" && $2 !~ /\[/ {print $2}' | grep -v security | head -1 || true)
  fi
  echo "${m:-http://deb.debian.org/debian}"
}

# Packages of a list file: one a line, '#' starts a comment.
read_packages() { sed -e 's/#.*//' -e 's/[[:space:]]//g' "$1" | grep -v '^$'; }

# input_key FILE... -- WORD...: 16 hex of sha256 over the files, this library and the words.
input_key() {
  local files=() words=()
  while [[ $# -gt 0 && $1 != -- ]]; do files+=("$1"); shift; done
  [[ ${1-} == -- ]] && shift
  words=("$@")
  { cat "${files[@]}" "$LIB_FILE"; echo "${words[*]} $(debootstrap --version 2>/dev/null || echo none)"; } \
    | sha256sum | cut -c1-16
}

need_tools() {
  local t
  for t in "$@"; do
    command -v "$t" >/dev/null || die "'$t' not found; run scripts/install-lab-deps.sh"
  done
}

# bootstrap ROOTFS LOG PACKAGE...: debootstrap minbase + the packages, .debs from the shared cache.
bootstrap() {
  local rootfs=$1 logf=$2; shift 2
  local include mirror t=$SECONDS
  include=$(IFS=,; echo "$*")
  mirror=$(debian_mirror)
  mkdir -p "$CACHE_BASE/debs"
  log "debootstrap $SUITE (minbase + $# packages) from $mirror"
  if ! debootstrap --variant=minbase --include="$include" --components=main \
        --cache-dir="$CACHE_BASE/debs" "$SUITE" "$rootfs" "$mirror" >"$logf" 2>&1; then
    tail -n 30 "$logf" >&2
    [[ -f $rootfs/debootstrap/debootstrap.log ]] && tail -n 30 "$rootfs/debootstrap/debootstrap.log" >&2
    die "debootstrap failed (log tail above)"
  fi
  echo "deb $mirror $SUITE main" >"$rootfs/etc/apt/sources.list"
  log "debootstrap done in $((SECONDS - t)) s"
}

chroot_mount() {
  mount -t proc proc "$1/proc"
  mount -t sysfs sys "$1/sys"
  mount --bind /dev "$1/dev"
  mount --bind /dev/pts "$1/dev/pts"
}

chroot_umount() {
  local m
  for m in dev/pts dev sys proc; do
    mountpoint -q "$1/$m" 2>/dev/null && umount -l "$1/$m" || true
  done
}

# in_chroot ROOTFS CMD...: a clean environment, no questions.
in_chroot() {
  local r=$1; shift
  chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
    DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 "$@"
}

# Settings every image shares: no host identity, nothing eating CPU in the background,
# SSH host keys made at first boot only when nobody wrote them (the service normally does).
common_system_config() {
  local r=$1
  echo localhost >"$r/etc/hostname"
  printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$r/etc/hosts"
  sed -i 's/^hosts:.*/hosts:          files myhostname dns/' "$r/etc/nsswitch.conf"
  : >"$r/etc/machine-id"
  rm -f "$r/var/lib/dbus/machine-id" "$r"/etc/ssh/ssh_host_*
  cat >"$r/etc/ssh/sshd_config.d/provisioner.conf" <<'CONF'
UseDNS no
GSSAPIAuthentication no
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
# RSA host key generation takes ~10 s under QEMU TCG: ed25519 (+ ecdsa when present)
HostKey /etc/ssh/ssh_host_ed25519_key
HostKey /etc/ssh/ssh_host_ecdsa_key
CONF
  cat >"$r/etc/systemd/system/provisioner-ssh-hostkeys.service" <<'UNIT'
[Unit]
Description=Generate an SSH host key when none was written for this host
Before=ssh.service
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
ExecStart=/usr/bin/ssh-keygen -q -t ed25519 -N "" -f /etc/ssh/ssh_host_ed25519_key

[Install]
WantedBy=multi-user.target
UNIT
  in_chroot "$r" systemctl enable provisioner-ssh-hostkeys.service ssh.service >/dev/null 2>&1
  quiet_system "$r"
}

# Nothing that eats CPU in the background (under QEMU TCG a timer job costs minutes); mdadm sends
# no mail.
quiet_system() {
  local r=$1
  in_chroot "$r" systemctl mask apt-daily.timer apt-daily-upgrade.timer apt-daily.service \
    apt-daily-upgrade.service man-db.timer man-db.service e2scrub_all.timer e2scrub_reap.service \
    fstrim.timer mdcheck_start.timer mdcheck_continue.timer mdmonitor-oneshot.timer \
    systemd-tmpfiles-clean.timer dpkg-db-backup.timer >/dev/null 2>&1
  if [[ -f $r/etc/mdadm/mdadm.conf ]]; then
    sed -i 's/^MAILADDR.*/MAILADDR root/' "$r/etc/mdadm/mdadm.conf"
  fi
}

# DHCP on every Ethernet NIC with systemd-networkd (the service's own config sorts before it).
networkd_dhcp_all() {
  local r=$1
  mkdir -p "$r/etc/systemd/network"
  cat >"$r/etc/systemd/network/90-dhcp-all.network" <<'NET'
[Match]
Type=ether

[Network]
DHCP=yes
NET
  in_chroot "$r" systemctl enable systemd-networkd.service >/dev/null 2>&1
  # nothing here waits for network-online; do not hold boot for two minutes on a NIC without link
  in_chroot "$r" systemctl mask systemd-networkd-wait-online.service >/dev/null 2>&1
}

# Drop what a running system does not need (docs, man pages, locales, apt lists, .debs).
shrink_rootfs() {
  local r=$1
  in_chroot "$r" apt-get clean
  rm -rf "$r"/var/lib/apt/lists/* "$r"/var/cache/apt/*.bin "$r"/tmp/* "$r"/var/tmp/* \
         "$r"/var/log/*.log "$r"/usr/share/doc/* "$r"/usr/share/man/* "$r"/usr/share/info/* \
         "$r"/usr/share/locale/* "$r/debootstrap"
}

# publish_build WORK OUT: move a finished build into place atomically; keep the newest 2 per kind.
publish_build() {
  local work=$1 out=$2
  chmod 755 "$work"
  rm -rf "$out"
  mv "$work" "$out"
  ls -1dt "$(dirname "$out")"/*/ 2>/dev/null | tail -n +3 | xargs -r rm -rf
}
