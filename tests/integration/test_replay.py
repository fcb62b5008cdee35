"""`archiver replay`: archive with `archiver run`, replay, consume the target, compare bytes."""

from __future__ import annotations

import collections
import json
import signal
import subprocess
import time

import pytest
from confluent_kafka import Consumer, KafkaException, TopicPartition

from archiver import demo, layout
from archiver.source import kafka as source_kafka
from tests.integration.test_run import ARCHIVER, START_MS, run_archiver


def replay(env: dict, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    result = subprocess.run([ARCHIVER, "replay", *args], capture_output=True, text=True, env=env, timeout=300)
    if check and result.returncode != 0:
        raise AssertionError(f"archiver replay failed ({result.returncode}): {result.stderr[-3000:]}")
    return result


def messages(kafka, topic: str, committed_only: bool = False) -> list:
    if committed_only:
        consumer = Consumer(kafka.client_config() | {"group.id": "t", "isolation.level": "read_committed",
                                                     "enable.auto.commit": False})
        out = []
        try:
            meta = consumer.list_topics(topic, timeout=10).topics[topic]
            ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in meta.partitions}
            consumer.assign([TopicPartition(topic, p, 0) for p in ends])
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                m = consumer.poll(0.5)
                if m is not None and not m.error():
                    out.append(m)
                positions = consumer.position([TopicPartition(topic, p) for p in ends])
                if all(tp.offset >= ends[tp.partition] for tp in positions):
                    break
        finally:
            consumer.close()
        return out
    return list(source_kafka.read_to_end(kafka, topic))


def high_watermark(kafka, topic: str) -> int:
    consumer = Consumer(kafka.client_config() | {"group.id": "t"})
    try:
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in range(3))
    except KafkaException:  # a new topic's leaders may not be known yet
        return 0
    finally:
        consumer.close()


def fingerprint(m) -> tuple:
    return (m.partition(), m.key(), m.value(), tuple(m.headers() or ()), m.timestamp())


@pytest.fixture
def archived(services, kafka, registry, archive_env, unique):
    """A topic with demo events, tombstones and repeated headers, archived by `archiver run --once`."""
    topic = f"{unique}-src"
    demo.produce(kafka, registry, topic, 1500, partitions=3, start_ms=START_MS, span_ms=3 * 3600_000)
    producer = source_kafka.producer(kafka)
    producer.produce(topic, None, b"s-tombstone", partition=1, timestamp=START_MS + 3 * 3600_000,
                     headers=[("dup", b"1"), ("dup", b"2"), ("empty", b"")])
    source_kafka.flush(producer)
    run_archiver(archive_env, "--once", "--topics", topic)
    return topic


@pytest.mark.parametrize("client", ["native", "python"])  # run.kafka_client: both producers
def test_replay_is_byte_for_byte_faithful(kafka, archive_env, archived, unique, client):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    result = replay(archive_env | {"ARCHIVER_KAFKA_CLIENT": client}, "--topic", archived, "--to-topic", target)
    assert json.loads(result.stdout)["records"] == 1501

    source = sorted(fingerprint(m) + (m.offset(),) for m in messages(kafka, archived))
    replayed = sorted(fingerprint(m) + (m.offset(),) for m in messages(kafka, target))
    assert replayed == source  # same partition, offsets (hence order), key, value bytes, headers, timestamp


def test_time_range_and_key_selection(kafka, archive_env, archived, unique):
    source = messages(kafka, archived)
    key = source[10].key()
    start, end = START_MS + 3600_000, START_MS + 2 * 3600_000
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    replay(archive_env, "--topic", archived, "--to-topic", target, "--from", "2025-11-24T17:00:00Z",
           "--to", "2025-11-24T18:00:00+00:00", "--key", key.decode())

    expected = sorted(fingerprint(m) for m in source if m.key() == key and start <= m.timestamp()[1] < end)
    assert expected and sorted(fingerprint(m) for m in messages(kafka, target)) == expected


def test_where_predicate_and_keyed_repartitioning(kafka, archive_env, archived, unique):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 5)
    replay(archive_env, "--topic", archived, "--to-topic", target, "--where", "country = 'FR'",
           "--partitioning", "key")
    from archiver.partitioner import partition_for_key

    replayed = messages(kafka, target)
    fr = [e for e in demo.events(1500, START_MS, 3 * 3600_000) if e.value["country"] == "FR"]
    assert len(replayed) == len(fr) > 0
    assert all(m.partition() == partition_for_key(m.key(), 5) for m in replayed)
    by_key = collections.defaultdict(list)  # a key's records keep their original (offset = time) order
    for m in sorted(replayed, key=lambda m: (m.partition(), m.offset())):
        by_key[m.key()].append(m.timestamp()[1])
    assert all(stamps == sorted(stamps) for stamps in by_key.values())


def test_dry_run_prints_the_plan_and_produces_nothing(kafka, archive_env, archived, unique):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    result = replay(archive_env, "--topic", archived, "--to-topic", target, "--dry-run", "--partitions", "1")
    plan = json.loads(result.stdout)
    assert set(plan["partitions"]) == {"1"} and plan["files"] > 0 and plan["target_topic"] == target
    assert messages(kafka, target) == []


def test_a_key_replay_reads_only_its_bucket_and_its_dry_run_is_an_estimate(kafka, archive_env, archived, unique):
    key = next(m.key() for m in messages(kafka, archived) if m.key())
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    everything = json.loads(replay(archive_env, "--topic", archived, "--to-topic", target, "--dry-run").stdout)
    dry = json.loads(replay(archive_env, "--topic", archived, "--to-topic", target, "--dry-run",
                            "--key", key.decode()).stdout)
    bucket = layout.key_bucket(key, 16)
    assert dry["estimate"]["key_buckets_read"] == [bucket] and dry["estimate"]["exact"] is False
    assert 0 < dry["files"] < everything["files"] and dry["estimate"]["records_upper_bound"] == dry["records_at_most"]
    assert "estimate" not in everything

    summary = json.loads(replay(archive_env, "--topic", archived, "--to-topic", target, "--key", key.decode()).stdout)
    assert summary["files_read"] == dry["files"]  # the key's bucket only, not every file of the topic
    assert summary["records"] == sum(1 for m in messages(kafka, archived) if m.key() == key) > 0


def test_a_checkpoint_reused_for_another_target_or_selection_is_refused(kafka, archive_env, archived, unique):
    for name in ("a", "b"):
        source_kafka.ensure_topic(kafka, f"{unique}-{name}", 3)
    args = ["--topic", archived, "--checkpoint", unique, "--partitions", "0"]
    replay(archive_env, *args, "--to-topic", f"{unique}-a")
    produced = high_watermark(kafka, f"{unique}-a")

    other_target = replay(archive_env, *args, "--to-topic", f"{unique}-b", check=False)
    assert other_target.returncode == 2 and other_target.stderr == (
        f"archiver: error: checkpoint {unique!r} belongs to a replay into '{unique}-a', not '{unique}-b'; "
        "use another --checkpoint name\n")
    other_partitions = replay(archive_env, "--topic", archived, "--checkpoint", unique, "--partitions", "0,1",
                              "--to-topic", f"{unique}-a", check=False)
    assert other_partitions.returncode == 2 and "--partitions ([0] then, [0, 1] now)" in other_partitions.stderr
    assert high_watermark(kafka, f"{unique}-b") == 0 and high_watermark(kafka, f"{unique}-a") == produced
    assert json.loads(replay(archive_env, *args, "--to-topic", f"{unique}-a").stdout)["records"] == 0  # resumed


def test_ctrl_c_stops_a_replay_with_exit_130_and_no_traceback(kafka, archive_env, archived, unique):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    proc = subprocess.Popen([ARCHIVER, "replay", "--topic", archived, "--to-topic", target, "--rate", "50",
                             "--checkpoint-every", "10"], env=archive_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and high_watermark(kafka, target) < 10:  # replaying at 50 records/s
            time.sleep(0.2)
        assert proc.poll() is None, "the replay ended before it was interrupted"
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130  # not 1, the code of a failed replay
    assert err.decode() == "archiver: interrupted\n" and out == b""


@pytest.mark.parametrize("args,message", [
    (["--topic", "nope", "--to-topic", "x"], "topic 'nope' is not in the archive"),
    (["--topic", "{src}"], "name the target: --to-topic T, or --to-original"),
    (["--topic", "{src}", "--to-topic", "missing-target-topic"], "target topic 'missing-target-topic' does not exist"),
    (["--topic", "{src}", "--to-topic", "missing-target-topic", "--dry-run"],
     "target topic 'missing-target-topic' does not exist"),
    (["--topic", "{src}", "--to-topic", "x", "--from", "yesterday"], "--from: 'yesterday' is not an ISO-8601 time"),
    (["--topic", "{src}", "--to-topic", "x", "--from", "-1h", "--to", "-2h"], "is not before --to"),
    (["--topic", "{src}", "--to-topic", "x", "--key", "no-such-key", "--partitions", "9"], "matches no archived"),
])
def test_bad_input_is_one_line_with_exit_2(archive_env, archived, args, message):
    result = replay(archive_env, *[a.format(src=archived) for a in args], check=False)
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("archiver: error: ") and message in result.stderr
    assert result.stderr.count("\n") == 1


@pytest.mark.parametrize("exactly_once", [False, True])
def test_resume_after_kill_9_mid_replay(kafka, archive_env, archived, unique, exactly_once):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    args = ["--topic", archived, "--to-topic", target, "--checkpoint", unique, "--checkpoint-every", "100"]
    args += ["--exactly-once"] if exactly_once else []
    proc = subprocess.Popen([ARCHIVER, "replay", *args, "--rate", "400"], env=archive_env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and high_watermark(kafka, target) < 300:
            time.sleep(0.2)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert 300 <= high_watermark(kafka, target) < 1501  # killed mid-replay
    replay(archive_env, *args)

    source = collections.Counter(fingerprint(m) for m in messages(kafka, archived))
    replayed = collections.Counter(fingerprint(m) for m in messages(kafka, target, committed_only=exactly_once))
    assert set(replayed) == set(source)
    duplicates = sum(replayed.values()) - sum(source.values())
    if exactly_once:
        assert duplicates == 0
    else:
        assert 0 <= duplicates <= 100  # at most one unsaved batch (--checkpoint-every) is sent again


@pytest.mark.parametrize("client", ["native", "python"])
def test_lineage_headers_and_target_registry(services, kafka, registry, archive_env, archived, unique, client):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    replay(archive_env | {"ARCHIVER_KAFKA_CLIENT": client}, "--topic", archived, "--to-topic", target, "--partitions", "2", "--add-lineage-headers",
           "--target-schema-registry-url", services.registry_url)
    target_id = registry.register(f"{target}-value", demo.SCHEMA)  # already there: the id replay used
    source = {(m.partition(), m.offset()): m for m in messages(kafka, archived) if m.partition() == 2}
    replayed = messages(kafka, target)
    assert len(replayed) == len(source) > 0
    for m in replayed:
        headers = m.headers()
        lineage = dict(headers[-3:])
        original = source[(int(lineage["archiver.source.partition"]), int(lineage["archiver.source.offset"]))]
        assert lineage["archiver.source.topic"] == archived.encode()
        assert headers[:-3] == (original.headers() or [])
        if original.value() is not None:
            assert m.value()[5:] == original.value()[5:]
            assert int.from_bytes(m.value()[1:5], "big") == target_id


def test_a_schema_the_target_registry_rejects_is_bad_input_and_nothing_is_produced(services, kafka, archive_env,
                                                                                    archived, unique):
    import urllib.request

    def call(method: str, path: str, body: dict) -> None:
        request = urllib.request.Request(f"{services.registry_url}{path}", json.dumps(body).encode(), method=method,
                                         headers={"Content-Type": "application/vnd.schemaregistry.v1+json"})
        urllib.request.urlopen(request, timeout=10).close()  # raises on an HTTP error

    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    call("PUT", f"/config/{target}-value", {"compatibility": "BACKWARD"})
    incompatible = {"type": "record", "name": "PageEvent", "fields": [{"name": "only", "type": "int"}]}
    call("POST", f"/subjects/{target}-value/versions", {"schema": json.dumps(incompatible)})

    result = replay(archive_env, "--topic", archived, "--to-topic", target, "--target-schema-registry-url",
                    services.registry_url, check=False)

    assert result.returncode == 2
    assert result.stderr.startswith("archiver: error: target schema registry rejected schema id ")
    assert f"for subject {target}-value" in result.stderr and len(result.stderr.splitlines()) == 1
    assert high_watermark(kafka, target) == 0


def test_a_progress_line_on_a_tty_and_a_json_summary_on_stdout(kafka, archive_env, archived, unique):
    from tests.terminal import on_a_terminal

    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3)
    code, out, text = on_a_terminal([ARCHIVER, "replay", "--topic", archived, "--to-topic", target], archive_env)
    assert code == 0
    assert json.loads(out)["records"] == 1501
    assert "\rreplayed " in text and "/1,501 records" in text and " MB, ETA " in text
    assert "replayed 1,501/1,501 records" in text  # the last update shows completion


def allow_large_messages(kafka, topic: str) -> None:
    from confluent_kafka.admin import AlterConfigOpType, ConfigEntry, ConfigResource

    resource = ConfigResource("topic", topic, incremental_configs=[
        ConfigEntry("max.message.bytes", "1048588", incremental_operation=AlterConfigOpType.SET)])
    client = source_kafka.admin(kafka)  # must outlive the future
    client.incremental_alter_configs([resource])[resource].result(30)


def test_records_the_target_refuses_fail_the_replay_and_are_not_checkpointed(kafka, archive_env, archived, unique):
    target = f"{unique}-dst"
    source_kafka.ensure_topic(kafka, target, 3, config={"max.message.bytes": "100"})  # every batch is larger
    args = ["--topic", archived, "--to-topic", target, "--checkpoint", unique, "--checkpoint-every", "100"]

    result = replay(archive_env, *args, check=False)
    assert result.returncode == 1
    error = result.stderr.strip().splitlines()[-1]
    assert error.startswith("archiver: error: ") and " not delivered, the first to " in error
    assert "too large" in error
    assert high_watermark(kafka, target) == 0

    allow_large_messages(kafka, target)  # the operator fixes the topic and runs the same replay again
    replay(archive_env, *args)
    source = sorted(fingerprint(m) for m in messages(kafka, archived))
    assert sorted(fingerprint(m) for m in messages(kafka, target)) == source  # nothing was skipped as done
