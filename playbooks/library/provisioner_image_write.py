#!/usr/bin/python
"""Ansible module: stream a disk image from the provisioner service onto a block device.

Runs on the target host with the host's python3: stdlib only, plus ``zstandard`` when
``compression=zstd`` (imported lazily so raw images need nothing extra).

Design notes (why it is built this way):

* Integrity. The block map (bmap, see provisioner/imaging/bmap.py) lists the data ranges of the raw
  image with one sha256 each; every other byte of the image is zero. Every range is hashed while it
  streams in; on the zstd path every hole is also checked to decompress to zeros. Together with a
  bmap bound to the expected image (``sha256`` must equal ``bmap.sha256``) that is equivalent to
  checking the whole image's sha256, but it lets a corrupt range be named.
* Read-back (``verify``), without hashing twice. With O_DIRECT each chunk is read back from the
  device as soon as its write returns and compared byte for byte (memcmp) with the buffer it was
  written from, the very buffer that was fed to the range's sha256. A range counts as verified
  once its sha256 matched and all its chunks compared equal: the device then holds bytes whose
  sha256 is the bmap's, exactly what re-hashing the range would prove, for a memcmp instead of a
  second sha256 pass. Chunks written without O_DIRECT (a target refusing it) could be read back
  from the page cache, so their ranges are re-read after the final fsync and cache drop and
  re-hashed instead; so are the ranges in the first MiB, after the head is written.
* Never bootable when incomplete. The first MiB of the target (MBR, GPT header, boot loader) is
  zeroed before anything else is written and the image's first MiB is written only after every
  range hashed correctly, the rest was flushed and (with ``verify``) read back correctly.
* No stale data. Ranges without data are made to read as zeros: fallocate(PUNCH_HOLE) on regular
  files; BLKZEROOUT on block devices (offloaded when the device supports WRITE ZEROES, else the
  kernel writes the zeros), BLKDISCARD only when the device guarantees discarded blocks read as
  zeros; plain zero writes when all of that fails.
* Speed. Uncompressed images with Range support: only data ranges are fetched, by several workers
  in parallel (this is what beats dd on sparse images); each worker downloads, hashes, writes and
  reads back its range in its own thread with its own two page-aligned buffers (O_DIRECT-ready),
  so nothing is handed between threads and the workers overlap one another's network, CPU and
  device waits. A buffer holds a whole range of the service's bmaps (16 MiB, ``range_chunk_size``):
  one write and one read-back per range. With 4 MiB pieces the read-back cost +50-60 % on a dense
  image (loop device, bench/bench_writer.py), with 16 MiB +21-24 %; the device's reads are no
  faster than its writes, and larger reads are cheaper per byte. (A checker thread per worker,
  reading back one piece while the next one downloads, gained nothing measurable on top.) zstd images (and servers without Range): one HTTP stream
  decompressed in its own thread, then hashing, writer and checker threads joined by bounded
  queues of preallocated buffers. hashlib, zstd, socket and file I/O and the ctypes memcmp all
  release the GIL, so the stages really overlap.
* Durability. O_DIRECT writes leave no dirty pages: one fsync at the end (and one after the head)
  flushes the device's cache. Buffered writes get a periodic fsync (``fsync_interval``) that keeps
  dirty memory bounded. The fsyncs are part of the timings.
* Resume. Transport-level: a dropped or stalled connection is re-opened with a Range request for
  the exact next byte, and the bytes go on into the same sha256 / zstd decompressor state (the
  decompressor consumed exactly the compressed bytes received so far, so continuing the byte stream
  is sound). If the server answers 200 instead of 206, the prefix is read and discarded. Retries
  back off exponentially and give up once no byte arrived for ``retry_timeout`` seconds. Completed
  ranges are re-checked by the read-back verification.

Code layout: this file holds the interface (documentation, argument_spec, main); the work is done by
module_utils that Ansible ships with it (playbooks/module_utils/, found because it sits beside the
playbooks): prov_image_run (one write, parameters to result), prov_image_pipeline (the stages and
their threads), prov_image_http (Range downloads), prov_image_target (the device), prov_image_control
(errors, abort, timings) and prov_bmap (the bmap rules, a symlink to provisioner/core/bmap_rules.py,
shared with the service).
"""

from __future__ import annotations

import importlib.util
import os
import sys

from ansible.module_utils.basic import AnsibleModule

if importlib.util.find_spec("ansible.module_utils.prov_image_run") is None:
    # Run straight from a checkout (python3 playbooks/library/provisioner_image_write.py ARGS.json, as
    # the tests and bench/ do) rather than from Ansible's AnsiballZ payload, which bundles the
    # module_utils it imports: look in the playbook-adjacent module_utils/, as Ansible does.
    sys.modules["ansible.module_utils"].__path__.append(
        os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "module_utils")
    )

from ansible.module_utils.prov_image_control import MiB
from ansible.module_utils.prov_image_run import run

DOCUMENTATION = r"""
module: provisioner_image_write
short_description: Write a raw or zstd-compressed disk image from an HTTP(S) URL to a block device
description:
  - Streams the image, checks the sha256 of every data range of its block map, skips holes (making
    them read as zeros on the target), writes the first MiB last and verifies by reading back.
  - Runs with stdlib only; C(compression=zstd) needs the python3 zstandard package.
options:
  url:
    description: URL of the image content (raw or .raw.zst). The server should support Range.
    type: str
    required: true
  token:
    description: Bearer token sent as C(Authorization) header.
    type: str
  headers:
    description: Extra HTTP headers (may carry secrets, never logged).
    type: dict
  bmap:
    description: Block map dict (version, block_size, image_size, sha256, ranges).
    type: dict
  bmap_url:
    description: URL of the block map JSON, fetched with the same headers/token.
    type: str
  compression:
    description: Encoding of the content at I(url).
    type: str
    choices: [none, zstd]
    default: none
  sha256:
    description: Expected sha256 of the full raw image; must match the block map.
    type: str
  target:
    description: Block device (or, for tests, an existing regular file) to write.
    type: path
    required: true
  verify:
    description: >-
      Read every written byte back from the device: with O_DIRECT each chunk is compared with the
      buffer it was written from (that buffer was hashed), otherwise each range is re-read after
      the final fsync and its sha256 compared.
    type: bool
    default: true
  download_workers:
    description: >-
      Parallel range workers (uncompressed images with Range support), each downloading, hashing,
      writing and reading back its own ranges, I(range_chunk_size) at a time.
    type: int
    default: 4
  write_workers:
    description: Threads issuing writes (stream path; range workers write themselves).
    type: int
    default: 2
  verify_workers:
    description: Threads reading back for verification (stream path, and the re-hash after the final fsync).
    type: int
    default: 4
  queue_depth:
    description: >-
      Number of in-flight chunk buffers on the stream path (memory is queue_depth * chunk_size);
      range workers use two buffers each.
    type: int
    default: 8
  chunk_size:
    description: Bytes per read/write on the stream path, multiple of 1 MiB.
    type: int
    default: 4194304
  range_chunk_size:
    description: >-
      Bytes per read, write and read-back of a range worker, multiple of 1 MiB. The default holds a
      whole range of a bmap made by the service (ranges stop at every 16 MiB): one write and one
      read-back per range, which halves the read-back's cost on a disk whose reads are not faster
      than its writes. Memory is 2 * download_workers * range_chunk_size.
    type: int
    default: 16777216
  fsync_interval:
    description: Bytes written without O_DIRECT between periodic fsyncs.
    type: int
    default: 67108864
  direct_io:
    description: Use O_DIRECT; C(auto) uses it when the target accepts it.
    type: str
    choices: [auto, 'yes', 'no']
    default: auto
  timeout:
    description: Socket timeout in seconds (a stall longer than this counts as a dropped connection).
    type: float
    default: 30
  retry_timeout:
    description: Give up once no byte could be downloaded for this many seconds.
    type: float
    default: 300
  validate_certs:
    description: Verify the server's TLS certificate.
    type: bool
    default: true
  ca_path:
    description: CA bundle for the service's certificate.
    type: path
"""

EXAMPLES = r"""
- name: Write the image
  provisioner_image_write:
    url: "https://prov.example/images/42/content.raw.zst"
    bmap_url: "https://prov.example/images/42/bmap"
    compression: zstd
    sha256: "{{ image_sha256 }}"
    token: "{{ image_token }}"
    target: /dev/sda
"""

RETURN = r"""
mode:
  description: C(ranges) (only data ranges fetched, in parallel), C(zstd-stream) or C(raw-stream).
  type: str
  returned: success
bytes_written:
  description: Data bytes written (holes excluded).
  type: int
  returned: always
bytes_zeroed:
  description: Hole bytes made to read as zeros.
  type: int
  returned: always
bytes_downloaded:
  description: HTTP body bytes received.
  type: int
  returned: always
retries:
  description: Connection retries (resumed downloads).
  type: int
  returned: always
ranges:
  description: Number of data ranges in the block map.
  type: int
  returned: success
timings:
  description: >-
    Seconds. C(total) is wall time; the others are busy time of each stage summed over its threads
    (stages overlap, so they can add up to more than total).
  type: dict
  returned: always
throughput_mbps:
  description: Image size divided by total time, in MB/s.
  type: float
  returned: success
error:
  description: >-
    Failure code. C(image_corrupt) means the served image does not match its block map (flag the
    image); others are auth_failed, not_found, download_failed, bmap_invalid, bad_params,
    target_too_small, target_invalid, target_busy, write_failed, verify_failed, internal_error.
  type: str
  returned: failure
image_corrupt:
  description: True when the failure is the image's fault.
  type: bool
  returned: failure
bad_range:
  description: The range (start, end, and for hash mismatches expected/actual sha256) that failed.
  type: dict
  returned: failure
"""


ARGUMENT_SPEC = dict(
    url=dict(type="str", required=True),
    token=dict(type="str", no_log=True),
    headers=dict(type="dict", no_log=True),
    bmap=dict(type="dict"),
    bmap_url=dict(type="str"),
    compression=dict(type="str", default="none", choices=["none", "zstd"]),
    sha256=dict(type="str"),
    target=dict(type="path", required=True),
    verify=dict(type="bool", default=True),
    download_workers=dict(type="int", default=4),
    write_workers=dict(type="int", default=2),
    verify_workers=dict(type="int", default=4),
    queue_depth=dict(type="int", default=8),
    chunk_size=dict(type="int", default=4 * MiB),
    range_chunk_size=dict(type="int", default=16 * MiB),
    fsync_interval=dict(type="int", default=64 * MiB),
    direct_io=dict(type="str", default="auto", choices=["auto", "yes", "no"]),
    timeout=dict(type="float", default=30.0),
    retry_timeout=dict(type="float", default=300.0),
    validate_certs=dict(type="bool", default=True),
    ca_path=dict(type="path"),
)


def main() -> None:
    module = AnsibleModule(
        argument_spec=ARGUMENT_SPEC,
        required_one_of=[("bmap", "bmap_url")],
        mutually_exclusive=[("bmap", "bmap_url")],
        supports_check_mode=True,
    )
    result = run(module.params, check_mode=module.check_mode)
    if result.pop("failed", False):
        module.fail_json(**result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
