"""Our block maps in bmaptool's XML: the real `bmaptool copy` writes an image with our bmap and
checks every range's sha256 on the way, and bmaptool's own bmaps read back into ours."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from provisioner.imaging.bmap import bmap_from_file
from provisioner.imaging.bmap_xml import BmapXmlError, from_bmaptool_xml, to_bmaptool_xml

BMAPTOOL = shutil.which("bmaptool") or "bmaptool (Debian's bmap-tools: scripts/install.sh installs it)"


def _sparse_image(path: Path, size: int) -> bytes:
    """A sparse image with data at odd places, and a size that is not a multiple of the block."""
    with open(path, "wb") as f:
        f.truncate(size)
        for off in (0, 4096 * 3, 1 << 20, 5 * (1 << 20) + 8192, size - 1000):
            f.seek(off)
            f.write(os.urandom(1000))
    return path.read_bytes()


def test_bmaptool_copy_accepts_our_bmap(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    data = _sparse_image(img, 8 * (1 << 20) + 512)
    ours = bmap_from_file(img)
    xml = tmp_path / "img.bmap"
    xml.write_text(to_bmaptool_xml(ours))
    target = tmp_path / "target.raw"
    target.write_bytes(bytes(len(data)))
    out = subprocess.run([BMAPTOOL, "copy", "--bmap", str(xml), str(img), str(target)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    written = target.read_bytes()
    for r in ours["ranges"]:  # every mapped range arrived, hashed by bmaptool against our sha256
        assert written[r["start"]:r["end"]] == data[r["start"]:r["end"]]
    assert from_bmaptool_xml(xml.read_text()) == ours | {"sha256": None}


def test_bmaptool_refuses_a_range_whose_hash_we_changed(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    _sparse_image(img, 4 * (1 << 20))
    ours = bmap_from_file(img)
    ours["ranges"][0]["sha256"] = hashlib.sha256(b"something else").hexdigest()
    xml = tmp_path / "img.bmap"
    xml.write_text(to_bmaptool_xml(ours))
    out = subprocess.run([BMAPTOOL, "copy", "--bmap", str(xml), str(img), str(tmp_path / "t.raw")],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "checksum mismatch" in out.stderr, out.stderr


def test_bmaptool_create_reads_into_ours(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    data = _sparse_image(img, 6 * (1 << 20))
    out = subprocess.run([BMAPTOOL, "create", str(img)], capture_output=True, text=True, timeout=120, check=True)
    theirs = from_bmaptool_xml(out.stdout)
    assert theirs["image_size"] == len(data) and theirs["ranges"]
    for r in theirs["ranges"]:
        assert hashlib.sha256(data[r["start"]:r["end"]]).hexdigest() == r["sha256"]
    # Every byte bmaptool maps, ours maps too (ours may merge small gaps into one range).
    ours = bmap_from_file(img)
    for r in theirs["ranges"]:
        assert any(o["start"] <= r["start"] and r["end"] <= o["end"] for o in ours["ranges"]), r


def test_tampered_bmap_file_is_refused(tmp_path: Path) -> None:
    img = tmp_path / "img.raw"
    _sparse_image(img, 2 * (1 << 20))
    text = to_bmaptool_xml(bmap_from_file(img))
    with pytest.raises(BmapXmlError, match="BmapFileChecksum"):
        from_bmaptool_xml(text.replace("<ImageSize> ", "<ImageSize> 1"))
    with pytest.raises(BmapXmlError, match="not XML"):
        from_bmaptool_xml("<bmap")
