"""The daemon's loop with a fake group member: assignments, rebalances, pauses and commits,
without a broker."""

import json

import pytest

from archiver import demo
from archiver.archive import Archive
from archiver.config import KafkaSettings, RunSettings, TopicSettings
from archiver.daemon import Daemon
from archiver.errors import TerminalError
from archiver.source.records import Batch, Record
from archiver.store import open_store

pytestmark = pytest.mark.unit

TOPIC = "t"


class FakeConsumer:
    """A consumer group member over in-memory partitions, with the daemon's GroupConsumer methods.

    Assigns every partition on the first `batches` call; `revoke_after` batches calls later it
    revokes partition 1 and assigns it again on the next call (a cooperative rebalance); each
    `batches` call hands out up to `step` records per partition."""

    kind = "fake"

    def __init__(self, log: dict[tuple[str, int], list[Record]], step: int = 37, revoke_after: int | None = None):
        self.log, self.step, self.revoke_after = log, step, revoke_after
        self.positions: dict[tuple[str, int], int] = {}
        self.commits: dict[tuple[str, int], int] = {}
        self.paused: set[tuple[str, int]] = set()
        self.calls = 0
        self.events: list[tuple[str, list]] = []
        self.to_assign: list[tuple[str, int]] = []
        self.refusing: str | None = None  # set: the broker refuses this member (no records come)
        self.accepts_again_after: int | None = None  # probes until the broker accepts it again
        self.probes = 0

    def topics(self):
        return {TOPIC: len(self.log)}

    def subscribe(self, topics, on_assign, on_revoke, on_lost):
        assert topics == [TOPIC]
        self.on_assign, self.on_revoke = on_assign, on_revoke
        self.to_assign = sorted(self.log)

    def batches(self, count, timeout):
        self.calls += 1
        if self.to_assign:
            parts, self.to_assign = self.to_assign, []
            self.events.append(("assign", parts))
            for tp, start in self.on_assign(parts).items():
                self.positions[tp] = 0 if start is None else start
            return []
        if self.revoke_after is not None and self.calls == self.revoke_after:
            moved = [(TOPIC, 1)]
            self.events.append(("revoke", moved))
            self.on_revoke(moved)
            for tp in moved:
                del self.positions[tp]
            self.to_assign = moved  # and back on the next call
            return []
        if self.refusing is not None:
            return []
        out = []
        for tp in sorted(self.positions):
            if tp in self.paused:
                continue
            records = self.log[tp][self.positions[tp]:self.positions[tp] + min(count, self.step)]
            if records:
                out.append(Batch.of(records))
                self.positions[tp] += len(records)
        return out

    def refusal(self):
        return self.refusing

    def reachable(self, topic, partition):
        self.probes += 1
        if self.accepts_again_after is not None and self.probes >= self.accepts_again_after:
            self.refusing = None
        return self.refusing is None

    def committed(self, partitions):
        return {tp: self.commits[tp] for tp in partitions if tp in self.commits}

    def commit(self, topic, partition, offset):
        self.commits[(topic, partition)] = offset

    def log_start(self, topic, partition):
        return 0

    def end(self, topic, partition):
        return len(self.log[(topic, partition)]) or -1

    def high_watermark(self, topic, partition):
        return len(self.log[(topic, partition)])

    def position(self, topic, partition):
        return self.positions.get((topic, partition))

    def seek(self, topic, partition, offset):
        self.positions[(topic, partition)] = 0 if offset is None else offset

    def pause(self, topic, partition):
        self.paused.add((topic, partition))

    def resume(self, topic, partition, offset):
        self.paused.discard((topic, partition))
        self.seek(topic, partition, offset)

    def close(self):
        self.on_revoke(sorted(self.positions))
        self.positions.clear()


def records(partitions: int = 3, per_partition: int = 400) -> dict[tuple[str, int], list[Record]]:
    events = list(demo.events(partitions * per_partition, 1_764_000_000_000, 2 * 3600_000))
    log = {}
    for p in range(partitions):
        log[(TOPIC, p)] = [Record(TOPIC, p, o, (1, e.timestamp_ms), e.key, demo.encode(e.value, 1)[5:], e.headers)
                           for o, e in enumerate(events[p::partitions])]
    return log


@pytest.fixture
def settings(tmp_path) -> RunSettings:
    schema = tmp_path / "event.avsc"
    schema.write_text(json.dumps(demo.SCHEMA))
    return RunSettings(kafka=KafkaSettings("fake:9092"), archive_url=f"file://{tmp_path}/archive", topics=(TOPIC,),
                       defaults=TopicSettings(value_format="raw", value_schema_file=str(schema), max_records=150),
                       compact_interval_s=0, publish_interval_s=0, on_decode_error="fail")


def archived_offsets(settings: RunSettings, partition: int) -> list[int]:
    archive = Archive(open_store(settings.archive_url))
    return sorted(o for f in archive.files(TOPIC, partition) for o in archive.read(f)["_kafka_offset"].to_pylist())


def test_once_archives_every_record_once_and_commits_the_ends(settings):
    log = records()
    consumer = FakeConsumer(log)

    summary = Daemon(settings, once=True, consumer=consumer).run()

    assert summary.records_in == summary.records_out == 1200
    for p in range(3):
        assert archived_offsets(settings, p) == list(range(400))
        assert consumer.commits[(TOPIC, p)] == 400
    assert consumer.events[0] == ("assign", [(TOPIC, 0), (TOPIC, 1), (TOPIC, 2)])


def test_a_revoked_partition_flushes_and_resumes_after_what_the_archive_holds(settings):
    log = records()
    consumer = FakeConsumer(log, revoke_after=5)

    summary = Daemon(settings, once=True, consumer=consumer).run()

    assert [kind for kind, _ in consumer.events] == ["assign", "revoke", "assign"]
    assert summary.records_out == 1200
    for p in range(3):
        assert archived_offsets(settings, p) == list(range(400))  # none twice, none missing


def test_a_rerun_starts_after_the_archive_and_archives_nothing_again(settings):
    log = records()
    Daemon(settings, once=True, consumer=FakeConsumer(log)).run()
    more = records(per_partition=450)  # 50 new records per partition
    consumer = FakeConsumer(more)

    summary = Daemon(settings, once=True, consumer=consumer).run()

    assert summary.records_in == 150
    assert all(archived_offsets(settings, p) == list(range(450)) for p in range(3))


class RefusedAfter(FakeConsumer):
    """The broker refuses this member (revoked credentials) once `after` batches calls came."""

    def __init__(self, log, after: int, **kwargs):
        super().__init__(log, **kwargs)
        self.after = after
        self.seen_waiting: list = []
        self.daemon = None

    def batches(self, count, timeout):
        if self.calls == self.after:
            self.refusing = "sasl_ssl://b:9094/1: SASL authentication error: Authentication failed"
        if self.daemon is not None and self.daemon.refused is not None:
            self.seen_waiting.append(dict(self.daemon.waiting()))
        return super().batches(count, timeout)


def test_a_member_kafka_keeps_refusing_commits_what_it_buffered_and_stops_with_the_reason(settings, monkeypatch):
    monkeypatch.setattr("archiver.daemon.PROBE_S", 0.05)
    log = records(per_partition=1000)
    consumer = RefusedAfter(log, after=4, step=40)
    daemon = Daemon(_replace(settings, kafka_refused_timeout_s=1), consumer=consumer)
    consumer.daemon = daemon

    with pytest.raises(TerminalError, match=r"kafka at fake:9092 refused this member for 1s: .*SASL authentication"):
        daemon.run()

    assert consumer.seen_waiting and all(w == {"kafka": 3} for w in consumer.seen_waiting)
    assert consumer.probes >= 2  # it asked whether the broker accepts it again, in vain
    for p in range(3):  # what came before the refusal is archived and committed, nothing else
        taken = consumer.positions.get((TOPIC, p), archived_offsets(settings, p)[-1] + 1)
        assert archived_offsets(settings, p) == list(range(taken))
        assert 0 < taken < 1000


def test_a_member_kafka_accepts_again_carries_on(settings, monkeypatch):
    monkeypatch.setattr("archiver.daemon.PROBE_S", 0.05)
    log = records()
    consumer = RefusedAfter(log, after=3)
    consumer.accepts_again_after = 2
    daemon = Daemon(_replace(settings, kafka_refused_timeout_s=60), once=True, consumer=consumer)
    consumer.daemon = daemon

    summary = daemon.run()

    assert summary.records_out == 1200 and daemon.refused is None
    assert consumer.seen_waiting  # it waited while refused
    for p in range(3):
        assert archived_offsets(settings, p) == list(range(400))


def _replace(settings, **changes):
    import dataclasses

    return dataclasses.replace(settings, **changes)
