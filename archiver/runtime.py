"""Process-wide tuning shared by the long-running commands."""

from __future__ import annotations

import gc


def tune_gc() -> None:
    """Collect cycles rarely: archiving and replaying allocate millions of short-lived, acyclic
    objects (messages, header tuples, records), and each default collection rescans every object
    the imports made (pyarrow, polars): that was 6–15% of the CPU. Those long-lived objects are
    frozen out of collections."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(100_000, 20, 10)
