"""One image write from parameters to result: check the parameters, load and check the bmap, probe
the server, open the target, run the pipeline in the safe order (head wiped first, written last,
read back) and turn every failure into an error code.

Part of the provisioner_image_write module (playbooks/library); runs on the target host, stdlib only.
"""

from __future__ import annotations

import http.client
import time
import traceback

from ansible.module_utils.prov_bmap import validate_bmap
from ansible.module_utils.prov_image_control import Control, ImageCorrupt, MiB, WriterError, mbps
from ansible.module_utils.prov_image_http import Http, HttpClient, RangeReader, fetch_json
from ansible.module_utils.prov_image_pipeline import Job
from ansible.module_utils.prov_image_target import Target


def build_http(p: dict) -> Http:
    headers = {str(k): str(v) for k, v in (p.get("headers") or {}).items()}
    if p.get("token"):
        headers["Authorization"] = f"Bearer {p['token']}"
    headers.setdefault("User-Agent", "provisioner-image-write/1")
    return Http(p["url"], headers, p["timeout"], p["retry_timeout"], p["validate_certs"], p.get("ca_path"))


def load_bmap(p: dict, http_cfg: Http, ctl: Control) -> dict:
    bmap = p.get("bmap")
    if bmap is None:
        bmap = fetch_json(http_cfg.with_url(p["bmap_url"]), ctl)
    problems = validate_bmap(bmap)
    if problems:
        raise WriterError("invalid bmap: " + "; ".join(problems[:5]), "bmap_invalid")
    if p.get("sha256") and p["sha256"].lower() != bmap["sha256"].lower():
        raise WriterError(f"bmap is for image sha256 {bmap['sha256']}, expected {p['sha256']}", "bmap_invalid")
    return bmap


def probe(http_cfg: Http, ctl: Control) -> tuple[bool, int | None]:
    """One tiny request before touching the target: auth, existence, Range support, size."""
    client = HttpClient(http_cfg, ctl)
    reader = RangeReader(client, 0, None)
    try:
        while True:
            try:
                resp, total = client.open(0, 1)
                break
            except (OSError, http.client.HTTPException) as exc:
                reader._transient(exc)
        ranged = resp.status == 206
        if ranged:
            resp.read()
        client.close()  # a 200 would stream the whole image: just drop that connection
        return ranged, total
    finally:
        client.close()


def check_params(p: dict) -> None:
    for key in ("chunk_size", "range_chunk_size"):
        if p[key] < MiB or p[key] % MiB:
            raise WriterError(f"{key} must be a positive multiple of 1 MiB", "bad_params")
    for key in ("download_workers", "write_workers", "verify_workers", "queue_depth"):
        if p[key] < 1:
            raise WriterError(f"{key} must be >= 1", "bad_params")
    if p["queue_depth"] < 2:
        raise WriterError("queue_depth must be >= 2", "bad_params")


def run(p: dict, check_mode: bool = False) -> dict:
    t_start = time.monotonic()
    ctl = Control()
    result: dict = {"changed": False}
    try:
        check_params(p)
        http_cfg = build_http(p)
        bmap = load_bmap(p, http_cfg, ctl)
        ranged, total = probe(http_cfg, ctl)
        compressed = p["compression"] == "zstd"
        if not compressed and total is not None and total != bmap["image_size"]:
            raise ImageCorrupt(f"image corrupt: served content is {total} bytes, bmap says {bmap['image_size']}")
        target = Target(p["target"], p["direct_io"])
        try:
            if bmap["image_size"] > target.size:
                raise WriterError(
                    f"image ({bmap['image_size']} bytes) is larger than target {p['target']} ({target.size} bytes)",
                    "target_too_small",
                )
            mode = "zstd-stream" if compressed else ("ranges" if ranged else "raw-stream")
            result.update(
                image_size=bmap["image_size"],
                ranges=len(bmap["ranges"]),
                mode=mode,
                direct_io=target.direct,
                target_kind=target.kind,
            )
            if check_mode:
                result["changed"] = True
                return result
            job = Job(p, http_cfg, bmap, target, ctl)
            result["changed"] = True
            job.wipe_head()
            if mode == "ranges":
                job.run_ranges()
            else:
                job.run_stream(compressed)
            job.timed_sync()
            head_ranges = [i for i, r in enumerate(job.ranges) if r[0] < job.head_len]
            if p["verify"]:  # whatever was not read back early (buffered I/O: all of it)
                job.verify([i for i in range(len(job.ranges)) if i not in job.verified and i not in head_ranges])
            job.write_head()
            job.timed_sync()
            if p["verify"] and head_ranges:
                try:
                    job.check_head()
                    job.verify([i for i in head_ranges if i not in job.verified])
                except WriterError:
                    job.wipe_head()  # the disk must not boot a head whose read-back is wrong
                    raise
            warning = target.reread_partitions()
            if warning:
                result.setdefault("warnings", []).append(warning)
            result["zero_method"] = ",".join(sorted(job.zero_methods)) or target.zero_method
        finally:
            target.close()
    except WriterError as exc:
        result.update(failed=True, msg=str(exc), error=exc.code, image_corrupt=exc.code == "image_corrupt")
        result.update(exc.details)
    except OSError as exc:
        result.update(failed=True, msg=f"I/O error: {exc}", error="write_failed", image_corrupt=False)
    except Exception as exc:  # a bug: report it with its traceback instead of a bare module crash
        result.update(
            failed=True,
            msg=f"internal error: {exc!r}",
            error="internal_error",
            image_corrupt=False,
            exception=traceback.format_exc(),
        )
    finally:
        ctl.abort.set()  # stop any straggler thread
        total_s = time.monotonic() - t_start
        ctl.timings["total"] = total_s
        result["timings"] = {k: round(v, 3) for k, v in ctl.timings.items()}
        result.update(ctl.counters)
    if not result.get("failed"):
        result["throughput_mbps"] = mbps(result.get("image_size", 0), total_s)
        result["data_throughput_mbps"] = mbps(result.get("bytes_written", 0), total_s)
    return result
