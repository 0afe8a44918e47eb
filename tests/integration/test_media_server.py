"""The boot ISO server (workers/media_server.py) over real HTTP on loopback: one file at one
unguessable path, GET/HEAD with byte ranges, 404 elsewhere, nothing listening after the block, the
token never logged."""

from __future__ import annotations

import http.client
import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from provisioner.core.bmc_rules import cert_fingerprint
from provisioner.services.bmc_client import BmcCredentials, RedfishBmc
from provisioner.store.config import Settings
from tests.integration import sushy_emulator
from workers.media_server import MediaServer, byte_range

SIZE = 100_000


@pytest.fixture
def iso(tmp_path: Path) -> Path:
    path = tmp_path / "boot.iso"
    path.write_bytes(os.urandom(SIZE))
    path.chmod(0o600)
    return path


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path)


def _request(url: str, method: str = "GET", path: str | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    u = urlsplit(url)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    try:
        conn.request(method, path if path is not None else u.path, headers=headers or {})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


@pytest.fixture
def served(iso: Path, settings: Settings) -> Iterator[str]:
    with MediaServer(iso, settings) as url:
        yield url


def test_the_url_is_unguessable_and_on_loopback(iso: Path, settings: Settings) -> None:
    with MediaServer(iso, settings) as a, MediaServer(iso, settings) as b:
        for url in (a, b):
            u = urlsplit(url)
            assert u.scheme == "http" and u.hostname == "127.0.0.1" and u.port
            _, media, token, name = u.path.split("/")
            assert (media, name) == ("media", "boot.iso")
            assert len(token) == 43 and token.replace("-", "").replace("_", "").isalnum()  # 32 bytes
        assert urlsplit(a).path != urlsplit(b).path and urlsplit(a).port != urlsplit(b).port


def test_get_sends_the_whole_file(served: str, iso: Path) -> None:
    status, headers, body = _request(served)
    assert status == 200 and body == iso.read_bytes()
    assert headers["content-length"] == str(SIZE) and headers["accept-ranges"] == "bytes"
    assert headers["content-type"] == "application/x-iso9660-image"


@pytest.mark.parametrize(("spec", "first", "last"), [
    ("bytes=0-0", 0, 0),
    ("bytes=10-19", 10, 19),
    ("bytes=99990-", 99990, SIZE - 1),
    ("bytes=99990-200000", 99990, SIZE - 1),  # an end past the file is the file's end
    ("bytes=-5", SIZE - 5, SIZE - 1),
    ("bytes=-200000", 0, SIZE - 1),
])
def test_a_range_is_a_206(served: str, iso: Path, spec: str, first: int, last: int) -> None:
    status, headers, body = _request(served, headers={"Range": spec})
    assert status == 206, spec
    assert headers["content-range"] == f"bytes {first}-{last}/{SIZE}"
    assert body == iso.read_bytes()[first:last + 1] and headers["content-length"] == str(last - first + 1)


@pytest.mark.parametrize("spec", [f"bytes={SIZE}-", f"bytes={SIZE + 5}-{SIZE + 9}", "bytes=-0"])
def test_an_unsatisfiable_range_is_a_416(served: str, spec: str) -> None:
    status, headers, body = _request(served, headers={"Range": spec})
    assert (status, headers["content-range"], body) == (416, f"bytes */{SIZE}", b""), spec


@pytest.mark.parametrize("spec", ["bytes=5-2", "items=0-1", "bytes=0-1,5-6", "bytes=x-y", "bytes=-"])
def test_a_range_it_does_not_serve_gets_the_whole_file(served: str, iso: Path, spec: str) -> None:
    status, _, body = _request(served, headers={"Range": spec})
    assert status == 200 and body == iso.read_bytes(), spec


def test_if_range_resumes_only_the_same_bytes(served: str, iso: Path) -> None:
    _, headers, _ = _request(served, "HEAD")
    status, _, body = _request(served, headers={"Range": "bytes=5-9", "If-Range": headers["etag"]})
    assert status == 206 and body == iso.read_bytes()[5:10]
    status, _, body = _request(served, headers={"Range": "bytes=5-9", "If-Range": '"other"'})
    assert status == 200 and len(body) == SIZE


def test_head_sends_headers_only(served: str) -> None:
    status, headers, body = _request(served, "HEAD")
    assert (status, body, headers["content-length"]) == (200, b"", str(SIZE))
    status, headers, body = _request(served, "HEAD", headers={"Range": "bytes=0-1023"})
    assert (status, body, headers["content-range"]) == (206, b"", f"bytes 0-1023/{SIZE}")


def test_every_other_path_is_a_404(served: str) -> None:
    path = urlsplit(served).path
    token = path.split("/")[2]
    wrong = token[:-1] + ("A" if token[-1] != "A" else "B")
    for other in (f"/media/{wrong}/boot.iso", f"/media/{token}/other.iso", f"/media/{token}/", f"/media/{token}",
                  f"{path}/", f"{path}x", "/", "/media/", f"/media/{token}/boot.iso/../boot.iso",
                  f"/media/{token.upper()}/boot.iso", "/boot.iso"):
        for method in ("GET", "HEAD"):
            status, _, body = _request(served, method, path=other)
            assert status == 404, (method, other)
            assert token.encode() not in body
    assert _request(served, path=path + "?x=1")[0] == 200  # a query string changes nothing
    assert _request(served, "POST")[0] == 501
    assert _request(served, "PUT")[0] == 501


def test_keep_alive_serves_several_ranges_on_one_connection(served: str, iso: Path) -> None:
    u = urlsplit(served)
    conn = http.client.HTTPConnection(u.hostname or "", u.port, timeout=10)
    data = iso.read_bytes()
    try:
        for first in range(0, SIZE, 30_000):
            conn.request("GET", u.path, headers={"Range": f"bytes={first}-{first + 29_999}"})
            resp = conn.getresponse()
            assert resp.status == 206 and resp.read() == data[first:first + 30_000]
    finally:
        conn.close()


def test_nothing_listens_after_the_block(iso: Path, settings: Settings) -> None:
    with MediaServer(iso, settings) as url:
        assert _request(url)[0] == 200
    with pytest.raises(ConnectionRefusedError):
        _request(url)


def test_a_download_in_flight_is_cut_at_exit(tmp_path: Path, settings: Settings) -> None:
    big = tmp_path / "big.iso"
    with open(big, "wb") as f:
        f.truncate(256 << 20)  # more than any socket buffer holds
    server = MediaServer(big, settings)
    url = server.__enter__()
    u = urlsplit(url)
    sock = socket.create_connection((u.hostname or "", u.port or 0), timeout=10)
    sock.sendall(f"GET {u.path} HTTP/1.1\r\nHost: x\r\n\r\n".encode())
    first = sock.recv(65536)
    assert first.startswith(b"HTTP/1.1 200"), first[:100]
    t = time.monotonic()
    server.__exit__(None, None, None)  # the client is reading nothing: the handler is blocked sending
    assert time.monotonic() - t < 5
    got = len(first)
    while chunk := sock.recv(1 << 20):
        got += len(chunk)
    sock.close()
    assert got < 256 << 20  # the connection ended before the file did


def test_the_token_is_never_logged(iso: Path, settings: Settings, caplog: pytest.LogCaptureFixture,
                                   capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    with MediaServer(iso, settings) as url:
        token = urlsplit(url).path.split("/")[2]
        _request(url)
        _request(url, path=f"/media/{token}/nope")
        _request(url, "BREW")
        with socket.create_connection((urlsplit(url).hostname or "", urlsplit(url).port or 0)) as s:
            s.sendall(f"GET /media/{token}/boot.iso HTTP/9.9 junk\r\n\r\n".encode())  # a 400
            s.recv(4096)
    out, err = capfd.readouterr()
    assert caplog.records, "the server logs something (the port), just not the token"
    assert token not in caplog.text + out + err


def test_many_clients_at_once(served: str, iso: Path) -> None:
    data, errors = iso.read_bytes(), []

    def fetch(i: int) -> None:
        status, _, body = _request(served, headers={"Range": f"bytes={i * 1000}-{i * 1000 + 999}"})
        if status != 206 or body != data[i * 1000:i * 1000 + 1000]:
            errors.append(i)

    threads = [threading.Thread(target=fetch, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def test_bind_and_host_come_from_the_settings(iso: Path, tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = Settings(data_dir=tmp_path, media_bind=f"127.0.0.1:{port}", media_host="bmc-facing.example")
    with MediaServer(iso, settings) as url:
        u = urlsplit(url)
        assert (u.hostname, u.port) == ("bmc-facing.example", port)
        assert _request(f"http://127.0.0.1:{port}{u.path}")[0] == 200


def test_ipv6_loopback(iso: Path, tmp_path: Path) -> None:
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        with socket.socket(socket.AF_INET6) as s:
            s.bind(("::1", 0))
    except OSError:
        pytest.skip("no ::1 on this machine")
    with MediaServer(iso, Settings(data_dir=tmp_path, media_bind="[::1]:0")) as url:
        assert url.startswith("http://[::1]:")
        assert _request(url)[0] == 200


@pytest.mark.parametrize(("bind", "host"), [("0.0.0.0:0", None), ("[::]:0", None), ("127.0.0.1", None),
                                           ("::1:0", None), ("127.0.0.1:70000", None)])
def test_bad_settings_are_refused_at_start(tmp_path: Path, bind: str, host: str | None) -> None:
    with pytest.raises(ValidationError, match="PROVISIONER_MEDIA_HOST|HOST:PORT"):
        Settings(data_dir=tmp_path, media_bind=bind, media_host=host)
    if bind.startswith(("0.0.0.0", "[::]")):  # a wildcard is fine once the URL's host is named
        assert Settings(data_dir=tmp_path, media_bind=bind, media_host="10.0.0.5").media_url_host == "10.0.0.5"


def test_a_missing_file_is_refused_before_listening(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(FileNotFoundError), MediaServer(tmp_path / "nope.iso", settings):
        pass


@pytest.mark.parametrize(("header", "size", "want"), [
    (None, 10, None), ("bytes=0-", 0, False), ("bytes=-1", 0, False), (" bytes=2-3 ", 10, (2, 3)),
    ("bytes=9-9", 10, (9, 9)), ("bytes=10-10", 10, False), ("Bytes=1-2", 10, (1, 2)),
])
def test_byte_range(header: str | None, size: int, want: object) -> None:
    assert byte_range(header, size) == want


def test_a_redfish_bmc_fetches_the_iso(iso: Path, settings: Settings, tmp_path: Path) -> None:
    """sushy-emulator (a real Redfish BMC implementation, fake driver) inserts the URL as virtual media:
    it downloads the file from the media server, byte for byte."""
    if not sushy_emulator.available():
        pytest.skip("no sushy-emulator (test extra or the lab's venv)")
    bmc_dir = tmp_path / "bmc"
    emulator = sushy_emulator.SushyEmulator(bmc_dir)
    try:
        creds = BmcCredentials(emulator.url, emulator.username, emulator.password,
                               cert_fingerprint(emulator.cert.read_text()))
        with MediaServer(iso, settings) as url:
            RedfishBmc(creds).insert_media(url)
        copies = [p for p in bmc_dir.rglob("boot.iso") if p.is_file()]
        assert len(copies) == 1 and copies[0].read_bytes() == iso.read_bytes()
        RedfishBmc(creds).eject_media()
    finally:
        emulator.stop()
