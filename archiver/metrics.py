"""Prometheus /metrics, /healthz and /readyz for `archiver run`.

Metrics are read from the daemon's counters at scrape time (a custom collector), so the hot
path only increments plain integers. prometheus_client and http.server (~30 ms of CPU to import)
are imported where metrics are served: a run without run.metrics_address never needs them.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from archiver.store import REQUESTS

if TYPE_CHECKING:
    from http.server import ThreadingHTTPServer

    from prometheus_client.core import HistogramMetricFamily

UPLOAD_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Histogram:
    """Bucket counts for a latency, cheap to observe from the hot path."""

    def __init__(self, bounds: tuple[float, ...] = UPLOAD_BUCKETS):
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        for i, bound in enumerate(self.bounds):
            if value <= bound:
                self.counts[i] += 1
                break
        else:
            self.counts[-1] += 1
        self.sum += value

    def family(self, name: str, doc: str) -> HistogramMetricFamily:
        from prometheus_client.core import HistogramMetricFamily

        cumulative, buckets = 0, []
        for bound, count in zip([*map(str, self.bounds), "+Inf"], self.counts):
            cumulative += count
            buckets.append((bound, cumulative))
        return HistogramMetricFamily(name, doc, buckets=buckets, sum_value=self.sum)


class DaemonCollector:
    """Turns the daemon's counters into metric families."""

    def __init__(self, daemon, ready: Callable[[], bool] | None = None):
        self.daemon = daemon
        self.ready = ready

    def collect(self):
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        d = self.daemon
        s = d.sink.stats
        yield from self._build_info(getattr(getattr(self.daemon, "consumer", None), "kind", "python"))
        topics = dict(s.topics)
        for name, attr, doc in [
            ("archiver_records_in", "records_in", "Records consumed from Kafka"),
            ("archiver_bytes_in", "bytes_in", "Value bytes consumed from Kafka"),
            ("archiver_records_out", "records_out", "Records committed to the archive"),
            ("archiver_bytes_out", "bytes_out", "Parquet bytes committed to the archive"),
            ("archiver_files", "files", "Parquet files committed"),
            ("archiver_commits", "commits", "Ledger commits"),
            ("archiver_dead_lettered", "dead_lettered", "Records sent to the dead-letter topic"),
            ("archiver_records_lost", "lost", "Offsets Kafka deleted (retention) before they were archived"),
        ]:
            family = CounterMetricFamily(name, doc, labels=["topic"])
            for topic, counts in sorted(topics.items()):
                family.add_metric([topic], getattr(counts, attr))
            yield family
        yield CounterMetricFamily("archiver_rebalances", "Partition assignment changes", value=d.rebalances)
        requests = CounterMetricFamily("archiver_store_requests", "Object store (S3) requests, by operation",
                                       labels=["op"])
        for op, n in sorted(REQUESTS.snapshot().items()):
            requests.add_metric([op], n)
        yield requests
        outages = CounterMetricFamily("archiver_outages", "Outages of a dependency that paused a partition",
                                      labels=["dependency"])
        waiting = GaugeMetricFamily("archiver_waiting_partitions", "Partitions paused, by the dependency they wait for",
                                    labels=["dependency"])
        paused = d.waiting()
        for dependency in ("registry", "store", "dlq", "kafka"):
            outages.add_metric([dependency], d.outages_started.get(dependency, 0))
            waiting.add_metric([dependency], paused.get(dependency, 0))
        yield outages
        yield waiting
        rotations = CounterMetricFamily("archiver_rotations", "Buffer rotations by reason", labels=["reason"])
        for reason, count in sorted(s.rotations.items()):
            rotations.add_metric([reason], count)
        yield rotations
        yield s.upload_latency.family("archiver_upload_seconds", "Time to upload one commit's files")
        yield GaugeMetricFamily("archiver_buffered_bytes", "Bytes buffered in memory", value=d.sink.buffered_bytes())
        yield GaugeMetricFamily("archiver_last_commit_timestamp_seconds",
                                "When this process last committed to the archive (its start before the first)",
                                value=s.last_commit_at)
        if self.ready is not None:
            yield GaugeMetricFamily("archiver_ready", "1 when /readyz answers 200 (consuming, no dependency out), else 0",
                                    value=1 if self.ready() else 0)
        yield GaugeMetricFamily("archiver_paused_partitions", "Partitions paused while a dependency is out",
                                value=len(d.paused_partitions()))
        lag = GaugeMetricFamily("archiver_consumer_lag", "Records in Kafka not yet committed to the archive "
                                "(buffered ones included)",
                                labels=["topic", "partition"])
        for (topic, partition), value in d.lag().items():
            lag.add_metric([topic, str(partition)], value)
        yield lag
        if d.compaction is not None:
            totals, c = d.compaction.totals, d.compaction
            for name, doc, value in [
                ("archiver_compaction_runs", "Scheduled compaction runs finished", c.runs),
                ("archiver_compaction_failures", "Partition compactions that failed (retried next run)", c.failures),
                ("archiver_compaction_files_in", "Small files merged by compaction", totals["files_in"]),
                ("archiver_compaction_files_out", "Files compaction wrote", totals["files_out"]),
                ("archiver_compaction_bytes_in", "Bytes of the files compaction merged", totals["bytes_in"]),
                ("archiver_compaction_bytes_out", "Bytes of the files compaction wrote", totals["bytes_out"]),
                ("archiver_compaction_deleted_files", "Replaced files deleted after the grace period",
                 totals["deleted_files"]),
            ]:
                yield CounterMetricFamily(name, doc, value=value)
        if d.publishing is not None:
            pub = d.publishing
            yield CounterMetricFamily("archiver_table_commits", "Iceberg table commits made by publishing",
                                      value=pub.commits)
            yield CounterMetricFamily("archiver_table_publish_failures",
                                      "Publishing rounds of a topic that failed (retried next interval)",
                                      value=pub.failures)
            if pub.last_success is not None:
                yield GaugeMetricFamily("archiver_table_last_publish_timestamp_seconds",
                                        "When a topic's table was last brought up to date", value=pub.last_success)
                yield GaugeMetricFamily("archiver_table_publish_seconds", "Duration of the last publish of a topic",
                                        value=pub.last_seconds)


    @staticmethod
    def _build_info(kafka_client: str):
        import platform

        from prometheus_client.core import GaugeMetricFamily

        from archiver import __version__
        from archiver.source.kafka import librdkafka_version

        info = GaugeMetricFamily("archiver_build_info", "archiver's version and its main libraries; always 1",
                                 labels=["version", "python", "librdkafka", "kafka_client"])
        info.add_metric([__version__, platform.python_version(), librdkafka_version(kafka_client), kafka_client], 1)
        yield info


def serve(address: str, daemon, healthy: Callable[[], bool], ready: Callable[[], bool]) -> ThreadingHTTPServer:
    """Serve the endpoints on `address` ("host:port") in a background thread."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest

    registry = CollectorRegistry(auto_describe=False)
    registry.register(DaemonCollector(daemon, ready))
    ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes, ...
    host, _, port = address.rpartition(":")

    class Handler(BaseHTTPRequestHandler):
        def do_HEAD(self):
            self.head_only = True
            self.do_GET()

        def do_GET(self):
            if self.path == "/metrics":
                self._reply(200, generate_latest(registry), "text/plain; version=0.0.4")
            elif self.path == "/healthz":
                ok = healthy()
                self._reply(200 if ok else 503, b"ok\n" if ok else b"stalled\n")
            elif self.path == "/readyz":
                ok = ready()
                self._reply(200 if ok else 503, b"ready\n" if ok else b"not ready\n")
            else:
                self._reply(404, b"not found\n")

        def _reply(self, code: int, body: bytes, ctype: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if not getattr(self, "head_only", False):
                self.wfile.write(body)

        def log_message(self, *args) -> None:  # scrapes are not worth a log line
            pass

    server = ThreadingHTTPServer((host or "0.0.0.0", int(port)), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


class Heartbeat:
    """The main loop beats; /healthz fails when it has not for `stale_after` seconds."""

    def __init__(self, stale_after: float = 120.0):
        self.stale_after = stale_after
        self.last = time.monotonic()

    def beat(self) -> None:
        self.last = time.monotonic()

    def healthy(self) -> bool:
        return time.monotonic() - self.last < self.stale_after
