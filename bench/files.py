"""Benchmark file economics: files and requests per million records, archive size, CPU per file,
compaction throughput, before and after compaction, side by side with Kafka Connect's S3 sink.

Two topics of demo events (~160 B of Avro each), in hours that have ended:
- demo: timestamps in order over 3 hours (what `make demo` archives);
- late: timestamps drawn at random from 72 hours (late and early data in every batch).

For each topic and run (fresh archive prefix and consumer group): `archiver run --once` with the
given layout, then `archiver compact --closed-after 0s --grace 0s`. Medians of the runs are
printed: data files and PUT requests per million records, files per hour of data, archive bytes
over raw Avro, archiver CPU-seconds, compaction MB/s (Parquet in per wall second). CPU per file
is the slope between the default run and one rotating every `--small-files-records` records.

With `--peer`, the same topics are archived by Kafka Connect 4.1.2 with Aiven's S3 sink 3.4.2
(Parquet, zstd, hourly; ../shared/peers/kafka-connect/, assembled once with its assemble.sh).

    infra/services up && eval "$(infra/services env)"
    .venv/bin/python bench/files.py --records 600000 --runs 3 [--peer]
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

from archiver import query
from archiver.archive import Archive
from archiver.store import open_store

ARCHIVER = str(Path(sys.executable).parent / "archiver")
PEER = Path(__file__).resolve().parents[2] / "shared" / "peers" / "kafka-connect"
HOUR = 3_600_000
SCENARIOS = {"demo": (3 * HOUR, False), "late": (72 * HOUR, True)}


def timed(args: list[str], env: dict) -> tuple[str, float, float]:
    """(stdout, wall s, CPU s) of one archiver command."""
    before = _children_cpu()
    started = time.monotonic()
    result = subprocess.run([ARCHIVER, *args], env=env, capture_output=True, text=True, check=False)
    wall = time.monotonic() - started
    if result.returncode != 0:
        raise SystemExit(f"archiver {args[0]} failed: {result.stderr[-2000:]}")
    return result.stdout, wall, _children_cpu() - before


def _children_cpu() -> float:
    """CPU-seconds of every child this process reaped so far."""
    times = os.times()
    return times.children_user + times.children_system


def objects(url: str, topic: str) -> tuple[int, int]:
    """(distinct data files, their bytes) the ledger names."""
    archive = Archive(open_store(url))
    files, _ = query.distinct_files((p, f) for p in archive.partitions(topic) for f in archive.files(topic, p))
    return len(files), sum(f.bytes for f in files)


def one_run(topic: str, config: str, raw: int, records: int, compact: bool = True) -> dict:
    bucket = os.environ["ARCHIVER_ARCHIVE_URL"].removeprefix("s3://").split("/")[0]
    url = f"s3://{bucket}/bench-files/{uuid.uuid4().hex[:8]}"
    # no Iceberg catalog: each run is a new archive of the same topic, and the peer publishes no table
    env = {k: v for k, v in os.environ.items() if not k.startswith("ARCHIVER_CATALOG_")} | {
        "ARCHIVER_ARCHIVE_URL": url, "ARCHIVER_GROUP_ID": f"bench-{uuid.uuid4().hex[:8]}", "ARCHIVER_CONFIG": config}
    out, wall, cpu = timed(["run", "--once", "--topics", topic, "--format", "json"], env)
    summary = json.loads(out.splitlines()[-1])
    files, size = objects(url, topic)
    result = {"files": files, "puts": summary["requests"].get("put", 0), "requests": sum(summary["requests"].values()),
              "ratio": size / raw, "run_cpu_s": cpu, "run_wall_s": wall, "records_per_cpu_s": records / cpu}
    if compact:
        out, wall, cpu = timed(["compact", "--topics", topic, "--closed-after", "0", "--grace", "0"], env)
        totals = json.loads(out.splitlines()[-1])
        files_after, size_after = objects(url, topic)
        result |= {"files_after": files_after, "ratio_after": size_after / raw, "compact_cpu_s": cpu,
                   "compact_mb_per_s": totals["bytes_in"] / 1e6 / wall if wall else 0.0}
    return result


def peer(topic: str, records: int) -> dict:
    """Kafka Connect + Aiven's S3 sink on the same topic: its run.sh prints one JSON line."""
    result = subprocess.run([str(PEER / "run.sh"), topic, str(records)], capture_output=True, text=True,
                            timeout=3600, cwd=PEER.parent.parent, check=False,
                            env=os.environ | {"PY": os.environ.get("PEER_PY", sys.executable)})
    if result.returncode != 0:
        return {"error": (result.stderr or result.stdout)[-500:]}
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=600_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--scenarios", default="demo,late")
    parser.add_argument("--config", default="", help="TOML lines for [defaults], e.g. 'key_buckets = 4'")
    parser.add_argument("--small-files-records", type=int, default=1_000,
                        help="rotation of the run that measures CPU per file (0: skip)")
    parser.add_argument("--peer", action="store_true", help="also run Kafka Connect + Aiven's S3 sink")
    args = parser.parse_args()

    now = int(time.time() * 1000)
    end = now - now % HOUR - HOUR  # whole hours, all closed
    report: dict = {"records": args.records, "partitions": args.partitions, "config": args.config, "scenarios": {}}
    for name in args.scenarios.split(","):
        span, shuffled = SCENARIOS[name]
        topic = f"bench-files-{name}-{uuid.uuid4().hex[:6]}"
        raw = produce(topic, args.records, args.partitions, end_ms=end, span_ms=span, shuffled=shuffled)
        print(f"{name}: produced {args.records:,} records ({raw / 1e6:.1f} MB Avro) to {topic}", flush=True)
        with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
            f.write(f"[defaults]\n{args.config}\n")
            config = f.name
        samples = [one_run(topic, config, raw, args.records) for _ in range(args.runs)]
        med = {k: statistics.median(s[k] for s in samples) for k in samples[0]}
        per_m = 1e6 / args.records
        row = med | {"files_per_m": med["files"] * per_m, "puts_per_m": med["puts"] * per_m,
                     "files_after_per_m": med["files_after"] * per_m, "files_per_hour": med["files"] / (span / HOUR),
                     "files_after_per_hour": med["files_after"] / (span / HOUR)}
        if args.small_files_records:
            with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as f:
                f.write(f"[defaults]\n{args.config}\nmax_records = {args.small_files_records}\n")
                small_config = f.name
            small = [one_run(topic, small_config, raw, args.records, compact=False) for _ in range(args.runs)]
            files = statistics.median(s["files"] for s in small)
            cpu = statistics.median(s["run_cpu_s"] for s in small)
            if files > med["files"]:
                row["cpu_ms_per_file"] = (cpu - med["run_cpu_s"]) / (files - med["files"]) * 1000
        if args.peer:
            row["peer"] = peer(topic, args.records)
        report["scenarios"][name] = row
        print(f"{name}: " + ", ".join(f"{k}={v:,.3f}" if isinstance(v, float) else f"{k}={v}"
                                      for k, v in row.items()), flush=True)
    out = Path(__file__).parent / "results"
    out.mkdir(exist_ok=True)
    (out / f"files-{int(time.time())}.json").write_text(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
