"""The BMC client remembers where a BMC keeps its system and its virtual CD drive, against a real
sushy-emulator (fake driver): a later client (a deploy's next phase) goes straight there, counted in
the emulator's own request log, and a path that went away is looked up again instead of failing."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from provisioner.core.bmc_rules import cert_fingerprint
from provisioner.services import bmc_client
from provisioner.services.bmc_client import BmcCredentials, RedfishBmc
from tests.integration.sushy_emulator import SushyEmulator, available

pytestmark = pytest.mark.skipif(not available(), reason="no sushy-emulator: install the test extra")

REQUEST = re.compile(r'"(?:\x1b\[[0-9;]*m)?(GET|POST|PATCH|DELETE) (\S+) HTTP/1\.1')  # (errors in colour)


@pytest.fixture
def emulator(tmp_path: Path) -> Iterator[SushyEmulator]:
    emu = SushyEmulator(tmp_path / "sushy")
    yield emu
    emu.stop()


def creds_of(emu: SushyEmulator) -> BmcCredentials:
    return BmcCredentials(emu.url, emu.username, emu.password, cert_fingerprint(emu.cert.read_text()))


def requests(emu: SushyEmulator) -> list[str]:
    return [f"{m} {p}" for m, p in REQUEST.findall(emu.log.read_text())]


def phase(creds: BmcCredentials) -> str:
    """What a deploy phase asks of a fresh client: the power state, then the CD drive emptied."""
    bmc = RedfishBmc(creds)
    state = bmc.power_state()
    bmc.eject_media()
    return state


def test_a_later_client_goes_straight_to_the_system_and_its_cd_drive(emulator: SushyEmulator) -> None:
    creds = creds_of(emulator)
    start = len(requests(emulator))
    assert phase(creds) == "Off"
    first = requests(emulator)[start:]
    assert "GET /redfish/v1/Systems" in first  # found by walking the collections once
    assert any(r.endswith("/VirtualMedia") for r in first), first

    assert phase(creds) == "Off"
    later = requests(emulator)[start + len(first):]
    assert "GET /redfish/v1/Systems" not in later, later
    assert not any(r.endswith("/VirtualMedia") for r in later), later
    assert len(later) <= len(first) - 3, (first, later)
    # the same resources, read fresh
    system = next(r for r in first if re.fullmatch(r"GET /redfish/v1/Systems/[^/]+", r))
    assert system in later


def test_a_path_that_went_away_is_looked_up_again(emulator: SushyEmulator) -> None:
    creds = creds_of(emulator)
    phase(creds)
    key = (creds.url, creds.username, creds.cert_sha256)
    bmc_client._PATHS[key] = {"system": "/redfish/v1/Systems/gone", "cd": "/redfish/v1/Managers/x/VirtualMedia/gone"}
    start = len(requests(emulator))
    assert phase(creds) == "Off"  # no error: found again
    seen = requests(emulator)[start:]
    assert "GET /redfish/v1/Systems/gone" in seen and "GET /redfish/v1/Systems" in seen, seen
    assert bmc_client._PATHS[key]["system"] != "/redfish/v1/Systems/gone"
    assert not bmc_client._PATHS[key]["cd"].endswith("/gone")
