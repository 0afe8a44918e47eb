#!/usr/bin/env bash
# Build a sample OS image from a manifest: a Debian root filesystem made with debootstrap
# (--variant=minbase), put into a sparse raw file with mkfs.ext4 -d, plus a .raw.zst of it.
#
#   images/build-sample.sh [manifest.json]   build (or reuse the cached build); default
#                                            images/manifests/debian-12-minimal.json
#   images/build-sample.sh --print-dir [m]   only print the cache dir for the current inputs
#
# Cache: key = sha256(this script + the manifest + the resolved mirror + debootstrap's version).
#   dir = ${PROVISIONER_IMAGE_CACHE:-/var/cache/provisioner-images}/<name>/<key>/
#         {<name>.raw, <name>.raw.zst, SHA256SUMS, image.json, build.log}
#   image.json = the manifest's name/version/os + sha256 and size of the RAW content (what the
#   catalogue stores and the writer checks); pass that sha256 as expected_sha256 when publishing.
# stdout: the cache dir (one line). Everything else goes to stderr.
# Needs root (debootstrap) and: debootstrap, e2fsprogs (mkfs.ext4 -d), zstd, python3.
# Mirror: the manifest's build.mirror, or "auto" = the Debian URI of /etc/apt/sources.list.d
# (deb.debian.org when none is found); PROVISIONER_IMAGE_MIRROR overrides both.
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_BASE=${PROVISIONER_IMAGE_CACHE:-/var/cache/provisioner-images}

log() { printf '[build-sample %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { printf '[build-sample] ERROR: %s\n' "$*" >&2; exit 1; }

PRINT_DIR=0; MANIFEST=
for a in "$@"; do
  case "$a" in
    --print-dir) PRINT_DIR=1 ;;
    -h|--help) sed -n '2,20p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2; exit 0 ;;
    -*) die "unknown option: $a (see --help)" ;;
    *) [[ -z $MANIFEST ]] || die "one manifest at a time"; MANIFEST=$a ;;
  esac
done
MANIFEST=${MANIFEST:-$HERE/manifests/debian-12-minimal.json}
[[ -f $MANIFEST ]] || die "manifest $MANIFEST not found"
command -v python3 >/dev/null || die "python3 is needed to read the manifest"

# One manifest field (dotted path) per call; lists come out space-separated.
field() {
  python3 - "$MANIFEST" "$1" "${2-}" <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
cur = doc
for part in sys.argv[2].split("."):
    cur = cur.get(part) if isinstance(cur, dict) else None
if cur is None:
    if sys.argv[3] == "":
        sys.exit(f"manifest field {sys.argv[2]} is missing")
    cur = sys.argv[3]
print(" ".join(map(str, cur)) if isinstance(cur, list) else cur)
PY
}

NAME=$(field name)
[[ $NAME =~ ^[A-Za-z0-9][A-Za-z0-9._-]*$ ]] || die "manifest name $NAME is not a valid catalogue name"
VERSION=$(field version)
OS_NAME=$(field os.name)
OS_VERSION=$(field os.version)
RECIPE=$(field build.recipe debootstrap)
[[ $RECIPE == debootstrap ]] || die "this script only knows the debootstrap recipe, not $RECIPE"
SUITE=$(field build.suite)
VARIANT=$(field build.variant minbase)
INCLUDE=$(field build.include " ")
FS_SIZE_MIB=$(field build.fs_size_mib 512)
FS_LABEL=$(field build.fs_label root)
ZSTD_LEVEL=$(field build.zstd_level 10)
MIRROR=${PROVISIONER_IMAGE_MIRROR:-$(field build.mirror auto)}

if [[ $MIRROR == auto ]]; then
  # deb822 sources (URIs: ...) or one-line sources (deb URI suite ...); skip security/updates archives.
  MIRROR=$(cat /etc/apt/sources.list.d/*.sources 2>/dev/null | awk '/^URIs:/ {print $2}' | grep -v security | head -1 || true)
  if [[ -z $MIRROR ]]; then
    MIRROR=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null \
      | awk '$1 == "deb" && $2 !~ /\[/ {print $2}' | grep -v security | head -1 || true)
  fi
  MIRROR=${MIRROR:-http://deb.debian.org/debian}
fi

DEBOOTSTRAP_VERSION=$(debootstrap --version 2>/dev/null || echo none)
KEY=$( { cat "${BASH_SOURCE[0]}" "$MANIFEST"; echo "$MIRROR $DEBOOTSTRAP_VERSION"; } | sha256sum | cut -c1-16)
OUT="$CACHE_BASE/$NAME/$KEY"

if [[ $PRINT_DIR == 1 ]]; then echo "$OUT"; exit 0; fi

if [[ -f $OUT/image.json && -f $OUT/$NAME.raw && -f $OUT/$NAME.raw.zst ]]; then
  log "cached build $KEY of $NAME found in $OUT (skipping build)"
  echo "$OUT"
  exit 0
fi

[[ $(id -u) -eq 0 ]] || die "must run as root (debootstrap)"
for t in debootstrap mkfs.ext4 e2fsck zstd sha256sum truncate; do
  command -v "$t" >/dev/null || die "'$t' not found; apt-get install debootstrap e2fsprogs zstd coreutils"
done
# mkfs.ext4 -d (populate from a directory) exists since e2fsprogs 1.43.
MKFS_USAGE=$(mkfs.ext4 2>&1 || true)
[[ $MKFS_USAGE == *"[-d "* ]] || die "mkfs.ext4 does not support -d (e2fsprogs >= 1.43 needed)"

T0=$SECONDS
mkdir -p "$CACHE_BASE/$NAME" "$CACHE_BASE/debs"
WORK=$(mktemp -d "$CACHE_BASE/$NAME/.build-$KEY.XXXXXX")
ROOTFS="$WORK/rootfs"
cleanup() {
  local m
  for m in dev/pts dev sys proc; do
    mountpoint -q "$ROOTFS/$m" 2>/dev/null && umount -l "$ROOTFS/$m" || true
  done
  rm -rf "$WORK"
}
trap cleanup EXIT

log "debootstrap --variant=$VARIANT $SUITE from $MIRROR (log: build.log)"
INCLUDE_ARG=()
[[ -n ${INCLUDE// } ]] && INCLUDE_ARG=("--include=$(echo "$INCLUDE" | tr ' ' ',')")
if ! debootstrap --variant="$VARIANT" "${INCLUDE_ARG[@]}" --components=main --cache-dir="$CACHE_BASE/debs" \
      "$SUITE" "$ROOTFS" "$MIRROR" >"$WORK/build.log" 2>&1; then
  tail -20 "$WORK/build.log" >&2
  die "debootstrap failed (full log above was $WORK/build.log)"
fi

log "configuring the root filesystem"
echo "$NAME" >"$ROOTFS/etc/hostname"
printf 'LABEL=%s / ext4 defaults,errors=remount-ro 0 1\n' "$FS_LABEL" >"$ROOTFS/etc/fstab"
: >"$ROOTFS/etc/machine-id"                    # regenerated on first boot
rm -f "$ROOTFS"/etc/ssh/ssh_host_*            # every host makes its own keys
rm -rf "$ROOTFS"/var/cache/apt/archives/*.deb "$ROOTFS"/var/lib/apt/lists/* "$ROOTFS"/var/log/*.log \
       "$ROOTFS"/tmp/* "$ROOTFS"/var/tmp/*
cat >"$ROOTFS/etc/provisioner-image" <<EOF
name=$NAME
version=$VERSION
os=$OS_NAME $OS_VERSION
build_key=$KEY
EOF
USED_MIB=$(du -sxm "$ROOTFS" | cut -f1)
(( USED_MIB < FS_SIZE_MIB * 9 / 10 )) || die "root filesystem needs ${USED_MIB} MiB; raise build.fs_size_mib"

log "mkfs.ext4 -d into a ${FS_SIZE_MIB} MiB sparse file (${USED_MIB} MiB used)"
RAW="$WORK/$NAME.raw"
truncate -s "${FS_SIZE_MIB}M" "$RAW"
# A fixed UUID per build key: the same inputs give the same filesystem identity.
FS_UUID=$(echo "$KEY" | sha256sum | sed -E 's/^(.{8})(.{4}).(.{3}).(.{3})(.{12}).*/\1-\2-4\3-8\4-\5/')
mkfs.ext4 -q -F -L "$FS_LABEL" -U "$FS_UUID" -E root_owner=0:0 -d "$ROOTFS" "$RAW" >>"$WORK/build.log" 2>&1 \
  || die "mkfs.ext4 failed (see $WORK/build.log)"
e2fsck -fn "$RAW" >>"$WORK/build.log" 2>&1 || die "the new filesystem does not check clean"

log "compressing (zstd -$ZSTD_LEVEL)"
zstd -q -T0 "-$ZSTD_LEVEL" "$RAW" -o "$WORK/$NAME.raw.zst"

RAW_SHA=$(sha256sum "$RAW" | cut -d' ' -f1)
RAW_SIZE=$(stat -c %s "$RAW")
( cd "$WORK" && sha256sum "$NAME.raw" "$NAME.raw.zst" >SHA256SUMS )
python3 - "$WORK/image.json" <<PY
import json, sys
json.dump({"name": "$NAME", "version": "$VERSION", "os_name": "$OS_NAME", "os_version": "$OS_VERSION",
           "sha256": "$RAW_SHA", "size": $RAW_SIZE, "used_mib": $USED_MIB, "suite": "$SUITE",
           "variant": "$VARIANT", "mirror": "$MIRROR", "build_key": "$KEY",
           "files": {"raw": "$NAME.raw", "raw.zst": "$NAME.raw.zst"}},
          open(sys.argv[1], "w"), indent=2)
PY

# Publish the build atomically: the cache dir either holds a complete build or nothing.
rm -rf "$ROOTFS"
rm -rf "$OUT"
mv "$WORK" "$OUT"
trap - EXIT
chmod 755 "$OUT"
log "built $NAME $VERSION in $((SECONDS - T0))s: raw sha256 $RAW_SHA, $(du -h --apparent-size "$OUT/$NAME.raw" | cut -f1) apparent," \
    "$(du -h "$OUT/$NAME.raw" | cut -f1) on disk, $(du -h "$OUT/$NAME.raw.zst" | cut -f1) compressed"
echo "$OUT"
