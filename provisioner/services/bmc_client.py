"""A thin Redfish BMC client over `sushy` (OpenStack Ironic's Redfish library): power, one-time boot
source override, virtual media, system facts. Every failure becomes a domain error that carries the
BMC's own words; the TLS certificate must be the pinned one (urllib3 checks its SHA-256 fingerprint
on every connection, no CA or hostname is trusted) and the password never reaches a log.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import requests
import sushy
from requests.adapters import HTTPAdapter
from sushy import auth as sushy_auth
from sushy import connector as sushy_connector
from sushy import exceptions as sx
from sushy.resources.manager.virtual_media import VirtualMedia

from provisioner.core.bmc_rules import BootDevice, PowerAction
from provisioner.core.errors import DeviceFailed

# sushy logs request bodies at DEBUG (it masks passwords, but a BMC password has no business in a log
# at any level): only its warnings and errors pass.
logging.getLogger("sushy").setLevel(logging.WARNING)

CONNECT_TIMEOUT_S = 3.0  # an unreachable BMC fails in seconds, not after a read timeout
READ_TIMEOUT_S = 30.0

RESET = {PowerAction.on: sushy.ResetType.ON, PowerAction.off: sushy.ResetType.FORCE_OFF,
         PowerAction.reset: sushy.ResetType.FORCE_RESTART}
BOOT = {BootDevice.cd: sushy.BootSource.CD, BootDevice.pxe: sushy.BootSource.PXE,
        BootDevice.hdd: sushy.BootSource.HDD}
T = TypeVar("T")

# Where each BMC keeps its system and its virtual CD drive, learned on first contact and kept for
# this process: a client made for a later phase (or the next deploy in this worker) reads them at
# once instead of walking the collections again (the systems collection and its member, the virtual
# media collection and each of its members: four of a phase's requests, each a TLS handshake and a
# password check on the BMC). Keyed by URL, user and pinned certificate; forgotten when a call fails.
_PATHS: dict[tuple[str, str, str], dict[str, str]] = {}


UNREACHABLE = "bmc.unreachable"


class BmcUnreachable(DeviceFailed):
    def __init__(self, url: str, why: str) -> None:
        super().__init__(UNREACHABLE, f"the BMC at {url} does not answer: {why}",
                         hint="check the BMC's address and port and that it runs; nothing was changed")


class BmcAuthFailed(DeviceFailed):
    def __init__(self, url: str, words: str) -> None:
        super().__init__("bmc.auth_failed", f"the BMC at {url} refused the credentials: {words}",
                         hint="check the BMC user and password (re-enroll the host with the right ones)")


class BmcCertMismatch(DeviceFailed):
    def __init__(self, url: str, pinned: str) -> None:
        super().__init__("bmc.cert_mismatch",
                         f"the BMC at {url} presented a TLS certificate that is not the pinned one ({pinned})",
                         hint="nothing was sent to it: if the BMC's certificate was replaced on purpose, "
                              "check its fingerprint on the BMC and re-enroll the host with it")


class BmcRefused(DeviceFailed):
    def __init__(self, url: str, words: str) -> None:
        super().__init__("bmc.refused", f"the BMC at {url} refused the request: {words}",
                         hint="the BMC's own words above say why; nothing else was changed")


@dataclass(frozen=True)
class BmcCredentials:
    url: str  # https://HOST[:PORT], checked by core.bmc_rules.check_url
    username: str
    password: str
    cert_sha256: str  # "AB:CD:..." of the certificate pinned at enrollment

    def __repr__(self) -> str:  # never the password, whatever prints this
        return f"BmcCredentials(url={self.url!r}, username={self.username!r}, cert_sha256={self.cert_sha256!r})"


class _PinnedAdapter(HTTPAdapter):
    """HTTPS whose only trust is the leaf certificate's SHA-256 fingerprint."""

    def __init__(self, fingerprint: str) -> None:
        self._fingerprint = fingerprint.replace(":", "").lower()
        super().__init__(max_retries=0)

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        kwargs["assert_fingerprint"] = self._fingerprint
        super().init_poolmanager(*args, **kwargs)


class _PinnedConnector(sushy_connector.Connector):
    def __init__(self, creds: BmcCredentials) -> None:
        # verify=False turns off CA and hostname checks only: the adapter's fingerprint check stays.
        super().__init__(creds.url, verify=False, server_side_retries=1, server_side_retries_delay=1,
                         default_request_timeout=READ_TIMEOUT_S, connect_timeout=CONNECT_TIMEOUT_S)
        session: requests.Session = self._session
        session.trust_env = False  # no proxy from the environment between us and the BMC
        session.mount("https://", _PinnedAdapter(creds.cert_sha256))
        session.mount("http://", _PinnedAdapter(creds.cert_sha256))  # never used: check_url allows https only


def _words(exc: sx.SushyError) -> str:
    detail = getattr(exc, "detail", None)
    return str(detail or exc.message or exc).strip()


def _is_fingerprint_error(exc: BaseException) -> bool:
    seen: set[int] = set()
    cur: BaseException | None = exc
    while cur is not None and id(cur) not in seen:
        seen.add(id(cur))
        if "fingerprint" in str(cur).lower():
            return True
        cur = cur.__cause__ or cur.__context__ or (cur.args[0] if cur.args and isinstance(cur.args[0], BaseException)
                                                 else None)
    return False


class RedfishBmc:
    """One BMC's one system, over one connection for the client's life: a deploy's BMC phase makes
    five or six calls, and a fresh session per call re-read the service root, the systems and the
    system every time (33 requests for a ramdisk boot, each a TLS handshake and an auth check on the
    BMC). A call that fails drops the connection: the next one starts over. Where the system and its
    CD drive live is remembered across clients (``_PATHS``)."""

    def __init__(self, creds: BmcCredentials) -> None:
        self.creds = creds
        self._paths_key = (creds.url, creds.username, creds.cert_sha256)
        self._conn: Any = None
        self._system: Any = None
        self._cd: Any = None

    def _known_or_found(self, what: str, at: Callable[[str], Any], find: Callable[[], Any]) -> Any:
        """The resource at the path this BMC had it last time, else (none known, or gone) found."""
        known = _PATHS.get(self._paths_key, {}).get(what)
        if known is not None:
            try:
                return at(known)
            except sx.ResourceNotFoundError:  # moved (BMC reset, system re-created): look again
                pass
        found = find()
        _PATHS.setdefault(self._paths_key, {})[what] = found.path
        return found

    @contextmanager
    def _errors(self) -> Iterator[None]:
        url = self.creds.url
        try:
            yield
        except sx.AccessError as exc:
            raise BmcAuthFailed(url, _words(exc)) from None
        except sx.ConnectionError as exc:
            if _is_fingerprint_error(exc):
                raise BmcCertMismatch(url, self.creds.cert_sha256) from None
            raise BmcUnreachable(url, _connection_words(exc)) from None
        except sx.SushyError as exc:
            raise BmcRefused(url, _words(exc)) from None
        except ValueError as exc:  # not JSON, or not Redfish's shape: whatever answers there is no BMC
            raise BmcRefused(url, f"not a Redfish answer ({type(exc).__name__}: {str(exc)[:200]})") from None

    def _call(self, fn: Callable[[sushy.resources.system.system.System], T], *, fresh: bool = True) -> T:
        """fn on the system; `fresh`: as the BMC sees it now, for calls that read its state first."""
        with self._errors():
            try:
                if self._system is None:
                    # Kept (a Sushy that is collected closes its connector under the system).
                    self._conn = sushy.Sushy(self.creds.url, connector=_PinnedConnector(self.creds),
                                             auth=sushy_auth.BasicAuth(self.creds.username, self.creds.password))
                    self._conn._auth = None  # basic auth: no session to close when it goes
                    self._system = self._known_or_found(
                        "system", lambda path: self._conn.get_system(path), self._conn.get_system)
                elif fresh:
                    self._reread()
                return fn(self._system)
            except Exception:
                self._system = self._cd = None
                _PATHS.pop(self._paths_key, None)
                raise

    def _reread(self) -> Any:
        # One GET. (System.refresh() would also re-read every sub-resource it has cached: the virtual
        # media collection, its members, the managers and theirs: seven more requests.)
        self._system = self._conn.get_system(self._system.path)
        return self._system

    def _cached_cd_drive(self, system: Any, *, fresh: bool = True) -> Any:
        if self._cd is None:
            self._cd = self._known_or_found(  # one GET, as the BMC sees it now
                "cd", lambda path: VirtualMedia(system._conn, path, redfish_version=system.redfish_version,
                                                registries=system.registries, root=system.root),
                lambda: _find_cd_drive(system))
        elif fresh:
            self._cd.refresh()
        return self._cd

    def power_state(self) -> str:
        """"On", "Off", "PoweringOn", ... as the BMC says."""
        return self._call(lambda system: str(system.power_state.value if system.power_state else "Unknown"))

    def power(self, action: PowerAction) -> str:
        """Asks for the action; returns the power state the BMC reports right after."""
        def do(system: Any) -> str:
            system.reset_system(RESET[action])
            state = self._reread().power_state
            return str(state.value if state else "Unknown")
        return self._call(do, fresh=False)

    def boot_override(self, device: BootDevice, *, once: bool = True) -> str:
        """Sets the boot source override. Some BMCs (sushy-tools' libvirt driver) keep it Continuous
        whatever is asked: callers that booted once from cd/pxe set hdd back themselves."""
        enabled = sushy.BootSourceOverrideEnabled.ONCE if once else sushy.BootSourceOverrideEnabled.CONTINUOUS

        def do(system: Any) -> str:
            system.set_system_boot_options(target=BOOT[device], enabled=enabled)
            target = self._reread().boot.target
            return str(target.value if target else "None")
        return self._call(do, fresh=False)

    def insert_media(self, image_url: str) -> None:
        """Inserts an ISO (fetched by the BMC from image_url) into the virtual CD drive."""
        self._call(lambda system: self._cached_cd_drive(system, fresh=False).insert_media(
            image_url, inserted=True, write_protected=True), fresh=False)

    def eject_media(self) -> None:
        def do(system: Any) -> None:
            drive = self._cached_cd_drive(system)
            if drive.inserted:
                drive.eject_media()
        self._call(do, fresh=False)

    def facts(self) -> dict[str, Any]:
        """What the BMC knows of the system: CPUs, memory, serial, MACs, identity."""
        return self._call(_facts)


def _find_cd_drive(system: Any) -> Any:
    """The system's virtual CD/DVD drive: under the system (Redfish 1.11+), else under a manager."""
    def cd_in(coll: Any) -> Any:
        for member in coll.get_members():
            kinds = {str(getattr(t, "value", t)) for t in (member.media_types or [])}
            if kinds & {"CD", "DVD"}:
                return member
        return None

    try:
        found = cd_in(system.virtual_media)
    except sx.MissingAttributeError:
        found = None
    if found is not None:
        return found
    for manager in system.managers:
        try:
            found = cd_in(manager.virtual_media)
        except sx.MissingAttributeError:
            continue
        if found is not None:
            return found
    raise sx.SushyError(message="the BMC offers no virtual CD/DVD drive")


def _facts(system: Any) -> dict[str, Any]:
    def attempt(fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except (sx.SushyError, AttributeError, TypeError, ValueError):
            return None
    cpus = attempt(lambda: system.processors.summary.count)
    arch = attempt(lambda: system.processors.summary.architecture)
    mem_gib = attempt(lambda: system.memory_summary.size_gib)
    macs = attempt(lambda: sorted(m.lower() for m in system.ethernet_interfaces.summary)) or []
    return {"source": "bmc", "system_id": system.identity, "uuid": system.uuid,
            "manufacturer": system.manufacturer, "model": system.model, "serial": system.serial_number,
            "cpus": cpus, "cpu_arch": str(getattr(arch, "value", arch)) if arch else None,
            "memory_mb": int(round(float(mem_gib) * 1024)) if mem_gib is not None else None,
            "macs": macs}


def _connection_words(exc: sx.ConnectionError) -> str:
    """What the network said ("Failed to establish a new connection: [Errno 111] Connection refused"),
    from the requests/urllib3 error sushy wrapped, without the pool's retry boilerplate."""
    inner: Any = exc.__context__
    reason = getattr(inner.args[0], "reason", None) if inner is not None and inner.args else None
    text = str(reason or inner or exc)
    # urllib3 prefixes the connection's repr: "HTTPSConnection(host='h', port=1): Failed to ..."
    if text.startswith("HTTP") and "): " in text:
        text = text.split("): ", 1)[1]
    return text if len(text) <= 300 else text[:297] + "..."
