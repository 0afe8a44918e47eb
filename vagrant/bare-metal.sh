# Bare-metal VMs behind a Redfish BMC (sourced by vagrant/lab; uses its nsx/log/die/lock/STATE/DATA).
#
# Each bare-metal VM "NAME" is a libvirt domain ${BM_PREFIX}NAME with no OS (SeaBIOS, machine pc,
# TCG), a root disk and two data disks in its own storage pool, one NIC on the lab network, an empty
# IDE CD drive, serial console to /var/log/libvirt/qemu/${BM_PREFIX}NAME-serial.log, created powered
# off. In front of it runs one sushy-emulator (libvirt driver, full feature set, only this domain,
# its own state dir and pool, basic auth from an htpasswd file, TLS with a self-signed certificate)
# on 127.0.0.1:PORT inside the lab's netns. Its record ($STATE/bm/NAME.json, and all of them in
# $STATE/bmc.json) names the BMC URL, user, password file, certificate and its SHA-256 fingerprint.
# The domain prefix is not the vagrant VMs' one, so `up`'s orphan purge leaves them alone.

BM_PREFIX=${PROVISIONER_LAB_BM_PREFIX:-provbm-}
BM_DIR="$STATE/bm"
BM_DATA="$DATA/bm"
SUSHY_VENV=${PROVISIONER_LAB_SUSHY_VENV:-/var/lib/provisioner-lab/sushy-venv}
BM_PORT_BASE=${PROVISIONER_LAB_BM_PORT_BASE:-8441}
BM_MEMORY_MB=${PROVISIONER_LAB_BM_MEMORY:-1024}
# One vCPU by default: on a 2-core machine a second TCG vCPU thread takes the core the service and
# the tests run on. A real server has many; the writer's ramdisk bench reports which it ran with.
BM_CPUS=${PROVISIONER_LAB_BM_CPUS:-1}
# No <cpu> element in the domain: QEMU's default model (qemu64), on purpose. Under TCG (QEMU 7.2,
# no SHA-NI) the writer's sha256 is fastest on it: OpenSSL takes its plain x86-64 code there, at
# 90 MiB/s of CPU time, against 43 MiB/s for its SSSE3 code (-cpu Nehalem) and 27 MiB/s for AVX2
# (-cpu max), which TCG runs through helpers (qemu-x86_64 -cpu MODEL python3 hashing 32 MiB).
BM_ROOT_GB=${PROVISIONER_LAB_BM_ROOT_GB:-4}
BM_DATA_GB=${PROVISIONER_LAB_BM_DATA_GB:-1}
# "full" is "vmedia" (virtual media, boot override, power) plus ProcessorSummary / MemorySummary /
# Processors, which the service records as the host's facts at enrollment; "vmedia" hides them.
BM_FEATURE_SET=${PROVISIONER_LAB_BM_FEATURE_SET:-full}
# Each bare-metal VM's fixed address on the lab network (a DHCP reservation for its MAC, as a
# datacenter's IPAM gives a machine): its deploy ramdisk and the OS deployed on it both get it, and
# the service reaches it there. bm1 gets .201, bm2 .202, ... (other names: .221-.250 by a hash).
BM_ADDRESS_BASE=${PROVISIONER_LAB_BM_ADDRESS_BASE:-201}

bm_names() { local f; for f in "$BM_DIR"/*.json; do [[ -f $f ]] && basename "$f" .json; done; true; }

emulator_alive() {  # emulator_alive NAME: its recorded pid runs sushy-emulator
  local pid; pid=$(pid_of "$BM_DIR/$1/emulator.pid")
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null && grep -q sushy-emulator "/proc/$pid/cmdline" 2>/dev/null
}

bm_port() {  # the port NAME's emulator listens on: kept across calls, else the first one no record uses
  local name=$1 p used
  [[ -s $BM_DIR/$name/port ]] && { cat "$BM_DIR/$name/port"; return; }
  used=$(cat "$BM_DIR"/*/port 2>/dev/null || true)
  for ((p = BM_PORT_BASE; p < BM_PORT_BASE + 200; p++)); do
    grep -qx "$p" <<<"$used" || { echo "$p" >"$BM_DIR/$name/port"; echo "$p"; return; }
  done
  die "no free BMC port from $BM_PORT_BASE"
}

bm_pool() {  # a dir pool of NAME's own: its disks and the ISOs its emulator uploads
  local name=$1 pool="${BM_PREFIX}$1"
  mkdir -p "$BM_DATA/$name/pool"
  if ! nsx virsh pool-info "$pool" >/dev/null 2>&1; then
    nsx virsh pool-define-as "$pool" dir --target "$BM_DATA/$name/pool" >/dev/null || die "pool-define $pool"
  fi
  [[ $(nsx virsh pool-info "$pool" | awk '/^State:/ {print $2}') == running ]] || \
    nsx virsh pool-start "$pool" >/dev/null || die "pool-start $pool"
  local vol size
  for vol in root:$BM_ROOT_GB data1:$BM_DATA_GB data2:$BM_DATA_GB; do
    size=${vol#*:}; vol="${BM_PREFIX}$name-${vol%%:*}.qcow2"
    nsx virsh vol-info "$vol" --pool "$pool" >/dev/null 2>&1 || \
      nsx virsh vol-create-as "$pool" "$vol" "${size}G" --format qcow2 >/dev/null || die "vol-create $vol"
  done
}

bm_domain_xml() {  # bm_domain_xml NAME POOLDIR
  python3 - "${BM_PREFIX}$1" "$2" "$BM_MEMORY_MB" "$BM_CPUS" <<'PY'
import hashlib, sys
from xml.sax.saxutils import quoteattr as q
dom, pool, mem, cpus = sys.argv[1:]
# A MAC fixed by the name: a VM re-created under the same name gets its DHCP reservation at once
# (a new MAC would find the reserved address still leased to its predecessor's for an hour).
h = hashlib.sha256(dom.encode()).digest()
mac = f"52:54:00:{h[0]:02x}:{h[1]:02x}:{h[2]:02x}"
disks = "".join(
    f"""<disk type='file' device='disk'><driver name='qemu' type='qcow2'/>
      <source file={q(f'{pool}/{dom}-{d}.qcow2')}/><target dev='vd{chr(ord("a") + i)}' bus='virtio'/>
      <serial>{dom}-{d}</serial></disk>"""
    for i, d in enumerate(("root", "data1", "data2")))
log = f"/var/log/libvirt/qemu/{dom}-serial.log"
print(f"""<domain type='qemu'>
  <name>{dom}</name>
  <memory unit='MiB'>{mem}</memory>
  <vcpu>{int(cpus)}</vcpu>
  <os><type arch='x86_64' machine='pc'>hvm</type><boot dev='hd'/><bios useserial='yes'/></os>
  <features><acpi/><apic/></features>
  <on_poweroff>destroy</on_poweroff><on_reboot>restart</on_reboot><on_crash>destroy</on_crash>
  <devices>
    {disks}
    <disk type='file' device='cdrom'><driver name='qemu' type='raw'/><target dev='hdc' bus='ide'/><readonly/></disk>
    <interface type='network'><mac address='{mac}'/><source network='vagrant-libvirt'/><model type='virtio'/></interface>
    <serial type='file'><source path={q(log)} append='on'/><target port='0'/></serial>
    <console type='file'><source path={q(log)} append='on'/><target type='serial' port='0'/></console>
    <video><model type='none'/></video>
    <memballoon model='none'/>
  </devices>
</domain>""")
PY
}

bm_address() {  # bm_address NAME: its reserved address, from the name alone (bmN -> base+N-1, else a hash)
  # Not from the port: bm2 made after bm1 is gone would get bm1's port and address, still leased
  # to bm1's MAC for an hour, and answer nowhere.
  local name=$1 n
  if [[ $name =~ ^bm([0-9]{1,2})$ ]]; then n=$((10#${BASH_REMATCH[1]} - 1))
  else n=$(( 20 + 0x$(printf %s "$name" | sha256sum | cut -c1-4) % 30 )); fi
  echo "$(lab_subnet_prefix).$((BM_ADDRESS_BASE + n))"
}

lab_subnet_prefix() {  # "192.168.121" of the lab network's gateway
  nsx virsh net-dumpxml vagrant-libvirt | python3 -c '
import sys, xml.etree.ElementTree as ET
ip = ET.fromstring(sys.stdin.read()).find("ip").get("address")
print(ip.rsplit(".", 1)[0])'
}

bm_reserve() {  # bm_reserve NAME MAC ADDRESS: the lab's DHCP gives MAC the ADDRESS (live and persistent)
  local xml="<host mac='$2' name='${BM_PREFIX}$1' ip='$3'/>"
  nsx virsh net-update vagrant-libvirt delete ip-dhcp-host "$xml" --live --config >/dev/null 2>&1 || true
  nsx virsh net-update vagrant-libvirt add ip-dhcp-host "$xml" --live --config >/dev/null || \
    die "cannot reserve $3 for $2 on the lab network"
}

bm_unreserve() {  # bm_unreserve NAME: drop NAME's reservation (by its recorded MAC and address)
  local rec="$BM_DIR/$1.json" mac ip
  [[ -f $rec ]] || return 0
  read -r mac ip < <(python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print((r.get("macs") or [""])[0], r.get("address", ""))' "$rec")
  [[ -n $mac && -n $ip ]] || return 0
  nsx virsh net-update vagrant-libvirt delete ip-dhcp-host "<host mac='$mac' name='${BM_PREFIX}$1' ip='$ip'/>" \
    --live --config >/dev/null 2>&1 || true
}

bm_tls_and_auth() {  # self-signed certificate and htpasswd (bcrypt) of NAME's BMC
  local d="$BM_DIR/$1"
  if [[ ! -s $d/cert.pem || ! -s $d/key.pem ]]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 825 \
      -subj "/CN=${BM_PREFIX}$1 BMC (provisioner lab)" -addext "subjectAltName=IP:127.0.0.1" \
      -keyout "$d/key.pem" -out "$d/cert.pem" 2>/dev/null || die "openssl: cannot make the BMC certificate"
    chmod 600 "$d/key.pem"; chmod 644 "$d/cert.pem"
  fi
  if [[ ! -s $d/password || ! -s $d/htpasswd ]]; then
    (umask 077; openssl rand -base64 18 | tr -d '\n' >"$d/password")
    "$SUSHY_VENV/bin/python" - "$d/password" "$d/htpasswd" <<'PY' || die "cannot write the BMC's htpasswd"
import sys, bcrypt
pw = open(sys.argv[1], "rb").read()
open(sys.argv[2], "w").write("admin:" + bcrypt.hashpw(pw, bcrypt.gensalt()).decode() + "\n")
PY
    chmod 600 "$d/htpasswd"
  fi
  chmod 644 "$d/password"  # like the backup store's client key: the (possibly non-root) service reads it
}

bm_up() {  # bm_up NAME -> defines/starts what is missing; writes $BM_DIR/NAME.json
  local name=$1 dom="${BM_PREFIX}$1" d="$BM_DIR/$1" port uuid
  [[ -x $SUSHY_VENV/bin/sushy-emulator ]] || die "no sushy-emulator in $SUSHY_VENV: run scripts/install-lab-deps.sh"
  nsx virsh net-info vagrant-libvirt >/dev/null 2>&1 || die "libvirt network 'vagrant-libvirt' not found: bring the lab up first"
  mkdir -p "$d/state"; chmod 755 "$BM_DIR" "$d"
  bm_pool "$name"
  if ! nsx virsh dominfo "$dom" >/dev/null 2>&1; then
    bm_domain_xml "$name" "$BM_DATA/$name/pool" >"$d/domain.xml"
    nsx virsh define "$d/domain.xml" >/dev/null || die "virsh define $dom failed ($d/domain.xml)"
    log "defined bare-metal VM $dom (powered off)"
  fi
  uuid=$(nsx virsh domuuid "$dom")
  bm_tls_and_auth "$name"
  port=$(bm_port "$name")
  local mac address
  # no `exit` in awk: virsh would write into a closed pipe (SIGPIPE, 141 under pipefail)
  mac=$(nsx virsh domiflist "$dom" | awk 'NR>2 && $5 && !seen {print tolower($5); seen=1}')
  address=$(bm_address "$name")
  bm_reserve "$name" "$mac" "$address"
  cat >"$d/emulator.conf" <<CONF
# generated by vagrant/lab bm-up $name: the Redfish BMC of $dom only
SUSHY_EMULATOR_LISTEN_IP = '127.0.0.1'
SUSHY_EMULATOR_LISTEN_PORT = $port
SUSHY_EMULATOR_SSL_CERT = '$d/cert.pem'
SUSHY_EMULATOR_SSL_KEY = '$d/key.pem'
SUSHY_EMULATOR_AUTH_FILE = '$d/htpasswd'
SUSHY_EMULATOR_LIBVIRT_URI = 'qemu:///system'
SUSHY_EMULATOR_FEATURE_SET = '$BM_FEATURE_SET'
SUSHY_EMULATOR_STORAGE_POOL = '$dom'
SUSHY_EMULATOR_STATE_DIR = '$d/state'
SUSHY_EMULATOR_ALLOWED_INSTANCES = ['$uuid']
SUSHY_EMULATOR_VMEDIA_DEVICES = {'Cd': {'Name': 'Virtual CD', 'MediaTypes': ['CD', 'DVD']}}
SUSHY_EMULATOR_IGNORE_BOOT_DEVICE = False
CONF
  if ! emulator_alive "$name"; then
    # ip netns exec execs the emulator: the pid recorded is its own
    SUSHY_EMULATOR_CONFIG="$d/emulator.conf" TMPDIR="$d/state" \
      ip netns exec "$NETNS" "$SUSHY_VENV/bin/sushy-emulator" --config "$d/emulator.conf" \
      </dev/null >>"$d/emulator.log" 2>&1 9>&- &
    echo $! >"$d/emulator.pid"
    local i
    for ((i = 0; i < 60; i++)); do
      nsx python3 - "$port" <<'PY' >/dev/null 2>&1 && break
import ssl, sys, urllib.request
ctx = ssl.create_default_context(); ctx.check_hostname = False; ctx.verify_mode = ssl.CERT_NONE
urllib.request.urlopen(f"https://127.0.0.1:{sys.argv[1]}/redfish/v1/", context=ctx, timeout=2)
PY
      emulator_alive "$name" || die "sushy-emulator for $dom exited; log: $d/emulator.log"
      sleep 0.5
    done
    ((i < 60)) || die "sushy-emulator for $dom does not answer on 127.0.0.1:$port after 30 s; log: $d/emulator.log"
    log "BMC of $dom: sushy-emulator (pid $(pid_of "$d/emulator.pid")) on https://127.0.0.1:$port"
  fi
  python3 - "$name" "$dom" "$uuid" "$port" "$d" "$(nsx virsh domiflist "$dom" | awk 'NR>2 && $5 {print $5}' | paste -sd,)" \
      "$(openssl x509 -in "$d/cert.pem" -noout -fingerprint -sha256 | cut -d= -f2)" \
      "$(pid_of "$d/emulator.pid")" "$BM_DATA/$name/pool" "$address" >"$BM_DIR/$name.json.tmp" <<'PY'
import json, sys
name, dom, uuid, port, d, macs, fp, pid, pool, address = sys.argv[1:]
json.dump({"name": name, "domain": dom, "uuid": uuid, "bmc_url": f"https://127.0.0.1:{port}", "address": address,
           "username": "admin", "password_file": f"{d}/password", "cert": f"{d}/cert.pem",
           "cert_sha256": fp, "macs": [m.lower() for m in macs.split(",") if m],
           "serial_log": f"/var/log/libvirt/qemu/{dom}-serial.log",
           "disks": [f"{pool}/{dom}-{x}.qcow2" for x in ("root", "data1", "data2")],
           "emulator_pid": int(pid), "emulator_log": f"{d}/emulator.log"}, sys.stdout, indent=2)
print()
PY
  mv "$BM_DIR/$name.json.tmp" "$BM_DIR/$name.json"
  bm_write_index
}

bm_write_index() {  # $STATE/bmc.json: every bare-metal VM's record, as a list
  mkdir -p "$BM_DIR"
  python3 - "$BM_DIR" >"$STATE/bmc.json.tmp" <<'PY'
import glob, json, os, sys
print(json.dumps([json.load(open(f)) for f in sorted(glob.glob(os.path.join(sys.argv[1], "*.json")))], indent=2))
PY
  mv "$STATE/bmc.json.tmp" "$STATE/bmc.json"
}

bm_destroy() {  # bm_destroy NAME: emulator, domain, volumes (its own and the ISOs it uploaded), pool, state
  local name=$1 dom="${BM_PREFIX}$1" pool="${BM_PREFIX}$1" d="$BM_DIR/$1" pid vol
  if emulator_alive "$name"; then
    pid=$(pid_of "$d/emulator.pid")
    stop_pid "$pid"
    log "stopped the BMC of $dom (sushy-emulator pid $pid)"
  fi
  bm_unreserve "$name"
  if nsx virsh dominfo "$dom" >/dev/null 2>&1; then
    nsx virsh destroy "$dom" >/dev/null 2>&1 || true
    nsx virsh undefine "$dom" >/dev/null 2>&1 || true
    log "removed bare-metal VM $dom"
  fi
  if nsx virsh pool-info "$pool" >/dev/null 2>&1; then
    for vol in $(nsx virsh vol-list "$pool" 2>/dev/null | awk 'NR>2 && $1 {print $1}'); do
      nsx virsh vol-delete "$vol" --pool "$pool" >/dev/null 2>&1 || true
    done
    nsx virsh pool-destroy "$pool" >/dev/null 2>&1 || true
    nsx virsh pool-undefine "$pool" >/dev/null 2>&1 || true
  fi
  if [[ -n $name ]]; then rm -rf "${BM_DATA:?}/$name" "${BM_DIR:?}/$name" "${BM_DIR:?}/$name.json"; fi
  rm -f "/var/log/libvirt/qemu/$dom-serial.log" "/var/log/libvirt/qemu/$dom.log"
  bm_write_index
}

bm_status() {  # stderr lines per bare-metal VM; rc!=0 when an emulator is down
  local name st rc=0
  for name in $(bm_names); do
    st=$(nsx virsh domstate "${BM_PREFIX}$name" 2>/dev/null || echo missing)
    if emulator_alive "$name"; then
      log "bare-metal vm $name: $st; BMC $(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bmc_url"])' "$BM_DIR/$name.json") (pid $(pid_of "$BM_DIR/$name/emulator.pid")), $STATE/bmc.json"
    else
      log "bare-metal vm $name: $st; BMC not running"; rc=1
    fi
  done
  return $rc
}

bm_purge_orphans() {  # bare-metal domains / pools libvirt still has but no record names (state lost)
  local dom pool name
  for dom in $(nsx virsh list --all --name 2>/dev/null | grep "^${BM_PREFIX}" || true); do
    name=${dom#"$BM_PREFIX"}
    [[ -f $BM_DIR/$name.json ]] || { log "removing orphan bare-metal VM $dom"; bm_destroy "$name"; }
  done
  for pool in $(nsx virsh pool-list --all --name 2>/dev/null | grep "^${BM_PREFIX}" || true); do
    name=${pool#"$BM_PREFIX"}
    [[ -f $BM_DIR/$name.json ]] || { log "removing orphan bare-metal pool $pool"; bm_destroy "$name"; }
  done
}
