"""Whether a job's boot ISO may still be in the BMC's virtual CD when the job ends, read from its
phase records (workers/bare_metal.media_may_be_in): the job's end ejects it only then."""

from __future__ import annotations

import pytest

from workers.bare_metal import media_may_be_in


def phases(**status: str) -> list[dict[str, str]]:
    return [{"name": name.replace("_", "-"), "status": s} for name, s in status.items()]


@pytest.mark.parametrize(("records", "expected"), [
    (phases(ramdisk_boot="pending", ramdisk_wait="pending", disk_boot="pending"), False),  # never started
    (phases(ramdisk_boot="failed", ramdisk_wait="pending"), True),  # the insert may have happened
    (phases(ramdisk_boot="succeeded", ramdisk_wait="failed", disk_boot="pending"), True),  # boot.timeout
    (phases(ramdisk_boot="succeeded", ramdisk_wait="succeeded", inspect="cancelled"), True),
    (phases(ramdisk_boot="succeeded", disk_boot="succeeded", os_wait="failed"), False),  # disk-boot ejected it
    (phases(ramdisk_boot="succeeded", disk_boot="failed"), True),  # failed before or at the eject
    (phases(ramdisk_boot="succeeded", ramdisk_wait="succeeded", clean="succeeded", power_off="succeeded"), False),
    (phases(ramdisk_boot="succeeded", clean="failed", power_off="pending"), True),  # cleaning failed
    (phases(wipe="failed", raid="pending"), False),  # a host reached over SSH: no ISO
    ([], False),
])
def test_media_may_be_in(records: list[dict[str, str]], expected: bool) -> None:
    assert media_may_be_in(records) is expected
