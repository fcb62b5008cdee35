import string

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver import layout
from archiver.errors import ConfigError
from archiver.layout import DataKey, Granularity

topics = st.text(string.ascii_letters + string.digits + "._-", min_size=1, max_size=40).filter(
    lambda t: t not in (".", ".."))
offsets = st.integers(min_value=0, max_value=2**63 - 1)
timestamps = st.integers(min_value=0, max_value=253402300799999)  # up to 9999-12-31


@given(topics, st.integers(0, 100_000), offsets, st.integers(0, 2**31), timestamps,
       st.sampled_from(list(Granularity)), st.integers(0, 10**6), st.integers(1, 1000))
def test_data_key_format_and_parse_are_inverses(topic, partition, first, epoch, ts, granularity, raw, buckets):
    dirs = layout.time_path(layout.time_bucket(ts, granularity), granularity) + "/" + \
        layout.bucket_path(raw % buckets, buckets)
    key = DataKey(topic, partition, first, epoch, dirs)
    assert layout.parse_data_key(key.format()) == key


@given(timestamps, st.sampled_from(list(Granularity)))
def test_time_path_names_the_utc_bucket_of_the_timestamp(ts, granularity):
    bucket = layout.time_bucket(ts, granularity)
    assert bucket <= ts < bucket + granularity.millis
    parts = dict(p.split("=") for p in layout.time_path(bucket, granularity).split("/"))
    assert set(parts) == {"day": {"dt"}, "hour": {"dt", "hour"}, "minute": {"dt", "hour", "minute"}}[granularity.value]


@given(st.one_of(st.none(), st.binary()), st.integers(1, 4096))
def test_key_buckets_stay_within_the_configured_count(key, buckets):
    bucket = layout.key_bucket(key, buckets)
    assert 0 <= bucket < buckets
    assert layout.bucket_path(bucket, buckets).startswith("key_bucket=")
    assert len(layout.bucket_path(bucket, buckets)) == len(layout.bucket_path(buckets - 1, buckets))


@given(st.one_of(st.none(), st.text(), st.integers()))
def test_field_values_cannot_escape_or_multiply_directories(value):
    allowed = frozenset({"FR", "US", "de-DE"})
    path = layout.field_value_path("country", value, allowed)
    assert "/" not in path.removeprefix("country=") and ".." != path.removeprefix("country=")
    assert path.removeprefix("country=") in allowed | {"_other", "_null"}


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 250, "t?"])
def test_invalid_topic_names_are_rejected(bad):
    with pytest.raises(ConfigError, match="not a valid Kafka topic name"):
        layout.check_topic(bad)


@given(topics, st.integers(0, 10**5), st.integers(0, 10**12), st.integers(0, 10**9))
def test_ledger_and_intent_keys_round_trip(topic, partition, seq, epoch):
    assert layout.parse_ledger_key(layout.ledger_key(topic, partition, seq)) == (topic, partition, seq)
    assert layout.parse_intent_key(layout.intent_key(topic, partition, seq, epoch)) == (topic, partition, seq, epoch, "commit")
    assert layout.parse_intent_key(layout.intent_key(topic, partition, seq, epoch, "compaction"))[-1] == "compaction"
    assert layout.ledger_key(topic, partition, seq).startswith(layout.ledger_prefix(topic, partition))


def test_keys_sort_by_offset_and_sequence():
    keys = [DataKey("t", 0, o, 1, "dt=2026-01-01").format() for o in (5, 50, 500)]
    assert keys == sorted(keys)
    assert sorted(layout.ledger_key("t", 0, s) for s in (10, 9, 100)) == [layout.ledger_key("t", 0, s) for s in (9, 10, 100)]
