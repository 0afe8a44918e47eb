"""Our block maps in bmaptool's XML format (version 2.0), both ways.

`bmaptool copy --bmap FILE image target` (and `bmaptool verify`-style checks through copy) can then
check our images with a tool nobody here wrote, and bmaps made by `bmaptool create` can be read.
The formats carry the same facts: data ranges with a sha256 each. Ours has byte offsets (end
exclusive) and the whole image's sha256; bmaptool's has inclusive block numbers and a checksum of
the bmap file itself (`BmapFileChecksum`, computed with that field's value set to all "0").
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from typing import Any

CHECKSUM_LEN = 64  # sha256 hex


class BmapXmlError(ValueError):
    pass


def to_bmaptool_xml(bmap: dict[str, Any]) -> str:
    """bmaptool's XML for one of our bmaps (ranges must start on block boundaries; the last one may
    end at the image's size, as bmaptool reads a partial last block)."""
    bs = int(bmap["block_size"])
    size = int(bmap["image_size"])
    blocks = (size + bs - 1) // bs
    lines = []
    mapped = 0
    for r in bmap["ranges"]:
        start, end = int(r["start"]), int(r["end"])
        if start % bs or (end % bs and end != size):
            raise BmapXmlError(f"range [{start}, {end}) is not aligned to the {bs}-byte block size")
        first, last = start // bs, (end + bs - 1) // bs - 1
        mapped += last - first + 1
        span = f"{first}" if first == last else f"{first}-{last}"
        lines.append(f'        <Range chksum="{r["sha256"]}"> {span} </Range>')
    body = "\n".join([
        '<?xml version="1.0" ?>',
        f"<!-- made by provisioner from the catalogue's block map; image sha256 {bmap.get('sha256', '')} -->",
        '<bmap version="2.0">',
        f"    <ImageSize> {size} </ImageSize>",
        f"    <BlockSize> {bs} </BlockSize>",
        f"    <BlocksCount> {blocks} </BlocksCount>",
        f"    <MappedBlocksCount> {mapped} </MappedBlocksCount>",
        "    <ChecksumType> sha256 </ChecksumType>",
        f"    <BmapFileChecksum> {'0' * CHECKSUM_LEN} </BmapFileChecksum>",
        "    <BlockMap>",
        *lines,
        "    </BlockMap>",
        "</bmap>",
        "",
    ])
    digest = hashlib.sha256(body.encode()).hexdigest()
    return body.replace("0" * CHECKSUM_LEN, digest, 1)


def from_bmaptool_xml(text: str | bytes) -> dict[str, Any]:
    """One of our bmaps from bmaptool's XML (version 2.0 with sha256 range checksums). The whole
    image's sha256 is not in that format: it is None."""
    raw = text.encode() if isinstance(text, str) else text
    try:
        root = ET.fromstring(raw)
    except ET.ParseError as exc:
        raise BmapXmlError(f"not XML: {exc}") from None

    def field(name: str) -> str:
        el = root.find(name)
        if el is None or el.text is None:
            raise BmapXmlError(f"<{name}> is missing")
        return el.text.strip()

    if root.tag != "bmap" or root.get("version", "").split(".")[0] != "2":
        raise BmapXmlError(f"expected <bmap version=\"2.x\">, got <{root.tag} version={root.get('version')!r}>")
    if field("ChecksumType") != "sha256":
        raise BmapXmlError(f"checksum type {field('ChecksumType')!r} is not sha256")
    claimed = field("BmapFileChecksum")
    zeroed = raw.replace(claimed.encode(), b"0" * len(claimed), 1)
    if hashlib.sha256(zeroed).hexdigest() != claimed:
        raise BmapXmlError("BmapFileChecksum does not match the file")
    bs, size = int(field("BlockSize")), int(field("ImageSize"))
    ranges = []
    block_map = root.find("BlockMap")
    for el in block_map if block_map is not None else []:
        span = (el.text or "").strip()
        first_s, _, last_s = span.partition("-")
        first, last = int(first_s), int(last_s or first_s)
        chksum = el.get("chksum")
        if not chksum:
            raise BmapXmlError(f"range {span} has no chksum")
        ranges.append({"start": first * bs, "end": min((last + 1) * bs, size), "sha256": chksum})
    return {"version": 1, "block_size": bs, "image_size": size, "sha256": None, "ranges": ranges}
