"""Benchmark `archiver compact` on archives of many small files written by `archiver run --once`.

Produces N demo events (~160 B of Avro each, over 3 hours that have ended) into a fresh topic, archives them
with small rotations (`max_records`), so each hour and key bucket holds many small files, into
one fresh prefix per run; then compacts each prefix and prints medians of: input MB/s (Parquet
bytes read per wall second), records/s, CPU seconds, peak RSS, files in → out, and the archive
size over the raw Avro bytes before and after.

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/compact.py --records 300000 --runs 3
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from sink import produce

ARCHIVER = str(Path(sys.executable).parent / "archiver")


def timed(args: list[str], env: dict) -> tuple[str, float, float, float]:
    """(stdout, wall s, CPU s, peak RSS MB) of one archiver command."""
    started = time.monotonic()
    proc = subprocess.Popen([ARCHIVER, *args], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.monotonic() - started
    out, err = proc.stdout.read(), proc.stderr.read()
    if status != 0:
        raise SystemExit(f"archiver {args[0]} failed: {err[-2000:]}")
    return out, wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024


def one_run(topic: str, config: str, sort_by: str, raw: int, records: int) -> dict:
    bucket = os.environ["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_CATALOG_")} | {  # a new archive a run
        "ARCHIVER_ARCHIVE_URL": f"s3://{bucket}/bench-compact/{uuid.uuid4().hex[:8]}",
        "ARCHIVER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}", "ARCHIVER_CONFIG": config}
    timed(["run", "--once", "--topics", topic], env)
    out, wall, cpu, rss = timed(["compact", "--topics", topic, "--closed-after", "0", "--grace", "0",
                                 "--sort-by", sort_by], env)
    summary = json.loads(out.splitlines()[-1])
    return {"mb_per_s": summary["bytes_in"] / 1e6 / wall, "records_per_s": records / wall, "wall_s": wall,
            "cpu_s": cpu, "peak_rss_mb": rss, "files_in": summary["files_in"], "files_out": summary["files_out"],
            "ratio_before": summary["bytes_in"] / raw, "ratio_after": summary["bytes_out"] / raw}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-records", type=int, default=2_000, help="rotation of the archiving run")
    parser.add_argument("--key-buckets", type=int, default=16)
    args = parser.parse_args()

    topic = f"bench-compact-{uuid.uuid4().hex[:6]}"
    hour = 3_600_000
    now = int(time.time() * 1000)
    raw = produce(topic, args.records, 6, end_ms=now - now % hour - hour)  # 3 whole hours, all closed
    print(f"produced {args.records:,} records ({raw / 1e6:.1f} MB Avro) to {topic}")
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
        f.write(f"[defaults]\nkey_buckets = {args.key_buckets}\nmax_records = {args.max_records}\n")
        config = f.name
    results = {}
    for sort_by in ("offset", "key"):
        samples = [one_run(topic, config, sort_by, raw, args.records) for _ in range(args.runs)]
        results[sort_by] = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        print(f"sort by {sort_by:6}: " + ", ".join(f"{k}={v:,.3f}" for k, v in results[sort_by].items()))
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"compact-{int(time.time())}.json").write_text(json.dumps(
        {"records": args.records, "raw_bytes": raw, "max_records": args.max_records, "results": results}, indent=2))


if __name__ == "__main__":
    main()
