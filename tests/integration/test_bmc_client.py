"""The BMC client's transport against a real TLS server on loopback (no emulator needed): the pinned
fingerprint is the only trust, a server that is not Redfish is refused in its own words, a closed port
fails at once. The Redfish side is tests/integration/test_bmc_api.py (sushy-emulator) and
tests/e2e/test_bmc.py (lab VMs)."""

from __future__ import annotations

import http.server
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.core.bmc_rules import cert_fingerprint
from provisioner.core.errors import DeviceFailed
from provisioner.services.bmc_client import BmcCredentials, RedfishBmc
from tests.integration.procs import free_port
from tests.integration.sushy_emulator import make_cert


class Quiet(http.server.BaseHTTPRequestHandler):
    seen: list[str] = []

    def do_GET(self) -> None:  # noqa: N802  (http.server's name)
        Quiet.seen.append(self.path)
        body = b"<html>not a BMC</html>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    cert, key = make_cert(tmp_path, "server")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), Quiet)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    server.socket = ctx.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    Quiet.seen.clear()
    yield f"https://127.0.0.1:{server.server_address[1]}", cert
    server.shutdown()
    server.server_close()


def fails(creds: BmcCredentials) -> DeviceFailed:
    with pytest.raises(DeviceFailed) as exc:
        RedfishBmc(creds).power_state()
    return exc.value


def test_only_the_pinned_certificate_is_trusted(tls_server: tuple[str, Path], tmp_path: Path) -> None:
    url, cert = tls_server
    other, _ = make_cert(tmp_path, "other")
    err = fails(BmcCredentials(url, "admin", "pw", cert_fingerprint(other.read_text())))
    assert err.code == "bmc.cert_mismatch" and Quiet.seen == [], err.detail  # no request was sent
    # The pinned one: the server is reached (and refused as not Redfish, in its own words).
    err = fails(BmcCredentials(url, "admin", "pw", cert_fingerprint(cert.read_text())))
    assert err.code == "bmc.refused" and "not a Redfish answer" in err.detail, err.detail
    assert Quiet.seen == ["/redfish/v1/"]


def test_a_closed_port_fails_at_once(tmp_path: Path) -> None:
    cert, _ = make_cert(tmp_path, "c")
    t = time.monotonic()
    err = fails(BmcCredentials(f"https://127.0.0.1:{free_port()}", "admin", "pw", cert_fingerprint(cert.read_text())))
    assert err.code == "bmc.unreachable" and "Connection refused" in err.detail, err.detail
    assert time.monotonic() - t < 5


def test_credentials_never_print() -> None:
    creds = BmcCredentials("https://127.0.0.1:1", "admin", "hunter2-secret", "AB" * 32)
    assert "hunter2-secret" not in repr(creds) and "hunter2-secret" not in str(creds)
