"""Rows per second of the native and the reference Avro encoders on archived demo events.

The events are written by fastavro (as the producer does), decoded by the reference decoder and
made all-nullable (as the archive stores them); each encoder must give back the original bytes.

Run: .venv/bin/python bench/encode.py [--count 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

import pyarrow as pa

from archiver import demo
from archiver.codec import arrow, native_encode, wire


def archived(datums: list[bytes]) -> pa.Table:
    """The value columns the archive holds for these datums."""
    table = arrow.decode_batch(datums, demo.SCHEMA, header_size=0).table
    return table.cast(arrow.nullable_schema(table.schema))


def measure(encode, table: pa.Table, expected: list[bytes], runs: int) -> float:
    """Median rows/s of `runs` calls of `encode(table, demo.SCHEMA)` (after one warm-up on a slice)."""
    encode(table.slice(0, 1000), demo.SCHEMA)  # compile and cache the schema outside the timing
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        datums = encode(table, demo.SCHEMA)
        seconds.append(time.perf_counter() - start)
        if datums != expected:
            raise SystemExit(f"{encode.__module__}.encode_rows did not give back the original datums")
    return table.num_rows / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = demo.events(args.count, start_ms=1_700_000_000_000, span_ms=3_600_000)
    datums = [demo.encode(event.value, 1)[wire.HEADER_SIZE:] for event in events]
    table = archived(datums)
    if not native_encode.supports(demo.SCHEMA):
        raise SystemExit("the native encoder does not support the demo schema")
    fast = measure(native_encode.encode_rows, table, datums, args.runs)
    slow = measure(arrow.encode_rows, table, datums, args.runs)
    print(f"{args.count} demo events, median of {args.runs} runs")
    print(f"native    {fast:12,.0f} rows/s")
    print(f"reference {slow:12,.0f} rows/s")
    print(f"speed-up  {fast / slow:12.1f}x")


if __name__ == "__main__":
    main()
