"""Records per second of the native and the reference Avro decoders on demo events.

Run: .venv/bin/python bench/decode.py [--count 200000] [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import time

from archiver import demo
from archiver.codec import arrow, native

SCHEMA_ID = 1


def measure(decode, messages: list[bytes], runs: int) -> float:
    """Median records/s of `runs` calls of `decode(messages, demo.SCHEMA)` (after one warm-up on a slice)."""
    decode(messages[:1000], demo.SCHEMA)  # compile and cache the schema outside the timing
    seconds = []
    for _ in range(runs):
        start = time.perf_counter()
        batch = decode(messages, demo.SCHEMA)
        seconds.append(time.perf_counter() - start)
        assert batch.table.num_rows == len(messages) and not batch.errors
    return len(messages) / statistics.median(seconds)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    events = demo.events(args.count, start_ms=1_700_000_000_000, span_ms=3_600_000)
    messages = [demo.encode(event.value, SCHEMA_ID) for event in events]
    if not native.supports(demo.SCHEMA):
        raise SystemExit("the native decoder does not support the demo schema")
    fast = measure(native.decode_batch, messages, args.runs)
    slow = measure(arrow.decode_batch, messages, args.runs)
    print(f"{args.count} demo events, median of {args.runs} runs")
    print(f"native    {fast:12,.0f} records/s")
    print(f"reference {slow:12,.0f} records/s")
    print(f"speed-up  {fast / slow:12.1f}x")


if __name__ == "__main__":
    main()
