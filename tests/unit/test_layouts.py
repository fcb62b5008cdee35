"""The layout record: format and parse, inference from directories, and what `run` refuses."""

from __future__ import annotations

import json
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver import layout, layouts
from archiver.config import KafkaSettings, RunSettings, TopicSettings
from archiver.errors import ConfigError, PreconditionFailed, TerminalError
from archiver.layouts import LayoutGuard, TopicLayout
from archiver.store import open_store
from archiver.writer.buffer import Rotation
from tests.unit.test_sink import Harness, messages

GUIDE = r" \(see README: changing a topic's layout\)"

values = st.lists(st.from_regex(r"[A-Za-z0-9_.-]{1,8}", fullmatch=True), min_size=1, max_size=5, unique=True)
layouts_st = st.one_of(
    st.builds(TopicLayout, st.sampled_from(["day", "hour", "minute"]), st.none() | st.just("event_time"),
              st.just("hash"), st.integers(1, 4096)),
    st.builds(lambda g, f, v: TopicLayout(g, f, "field", None, "country", tuple(sorted(v))),
              st.sampled_from(["day", "hour", "minute"]), st.none() | st.just("ts"), values),
    st.builds(lambda g: TopicLayout(g, None, "none", None), st.sampled_from(["day", "hour", "minute"])),
)


@given(layouts_st)
def test_a_record_parses_back_to_the_layout_it_was_written_from(topic_layout):
    data = topic_layout.to_json("orders")
    assert TopicLayout.from_json(data) == topic_layout
    assert json.loads(data)["format"] == layouts.FORMAT


def test_the_record_of_settings_keeps_only_what_decides_directories():
    settings = TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR", "DE"),
                             key_buckets=8, max_records=5)
    doc = json.loads(TopicLayout.of(settings).to_json("orders", now=0))
    assert doc == {"format": 1, "topic": "orders", "time": {"source": "timestamp"}, "granularity": "hour",
                   "key": {"partitioning": "field", "field": "country", "values": ["DE", "FR"]},
                   "recorded_at": "1970-01-01T00:00:00Z"}
    assert json.loads(TopicLayout.of(TopicSettings(time_field="ts")).to_json("t"))["time"] == \
        {"source": "field", "field": "ts"}


def test_a_newer_format_or_a_foreign_object_is_refused(tmp_path):
    newer = json.loads(TopicLayout().to_json("t")) | {"format": 2}
    with pytest.raises(TerminalError, match="format 2 is newer than this archiver reads"):
        TopicLayout.from_json(json.dumps(newer).encode())
    store = open_store(f"file://{tmp_path}")
    store.put(layout.layout_key("t"), b'{"hello": 1}')
    with pytest.raises(TerminalError, match=r"_layout/topic=t.json is not a layout record"):
        layouts.read(store, "t")
    assert layouts.read(store, "other") is None


@pytest.mark.parametrize("recorded, configured, message", [
    (TopicSettings(key_buckets=16), TopicSettings(key_buckets=8),
     'topics."orders".key_buckets: the archive of orders was written with 16, the configuration says 8'),
    (TopicSettings(), TopicSettings(time_granularity="day"),
     'topics."orders".time_granularity: the archive of orders was written with hour, the configuration says day'),
    (TopicSettings(time_field="event_time"), TopicSettings(),
     'topics."orders".time_field: the archive of orders was written with event_time, the configuration says '
     'unset (the record timestamp)'),
    (TopicSettings(), TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR",)),
     'topics."orders".key_partitioning: the archive of orders was written with hash, the configuration says field'),
    (TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR",)),
     TopicSettings(key_partitioning="field", key_field="region", key_field_values=("FR",)),
     'topics."orders".key_field: the archive of orders was written with country, the configuration says region'),
    (TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR", "DE")),
     TopicSettings(key_partitioning="field", key_field="country", key_field_values=("DE", "FR", "US")),
     'topics."orders".key_field_values: the archive of orders was written with ["DE", "FR"], the configuration '
     'says ["DE", "FR", "US"]'),
])
def test_run_refuses_each_setting_that_differs_from_the_record(tmp_path, recorded, configured, message):
    store = open_store(f"file://{tmp_path}")
    layouts.record(store, "orders", TopicLayout.of(recorded))
    with pytest.raises(ConfigError, match="^" + _escape(message) + GUIDE + "$"):
        guard(store, configured).check("orders")


def test_run_records_the_layout_once_and_accepts_the_same_one(tmp_path):
    store = open_store(f"file://{tmp_path}")
    settings = TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR", "DE"))
    guard(store, settings).check("orders")
    assert layouts.read(store, "orders") == TopicLayout.of(settings)
    reordered = TopicSettings(key_partitioning="field", key_field="country", key_field_values=("DE", "FR"),
                              max_records=10)  # not part of the layout
    guard(store, reordered).check("orders")
    with pytest.raises(PreconditionFailed):
        store.put(layout.layout_key("orders"), b"{}", if_absent=True)


def test_of_two_daemons_racing_to_record_one_wins_and_the_other_is_refused(tmp_path):
    store = open_store(f"file://{tmp_path}")
    results: dict[int, str] = {}
    barrier = threading.Barrier(2)

    def race(buckets: int) -> None:
        barrier.wait()
        try:
            guard(store, TopicSettings(key_buckets=buckets)).check("orders")
            results[buckets] = "ok"
        except ConfigError as e:
            results[buckets] = str(e)

    threads = [threading.Thread(target=race, args=(n,)) for n in (8, 16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winner = layouts.read(store, "orders").key_buckets
    loser = 24 - winner
    assert results[winner] == "ok"
    assert results[loser].startswith(f'topics."orders".key_buckets: the archive of orders was written with '
                                     f'{winner}, the configuration says {loser}')


def test_the_message_names_defaults_when_the_topic_has_no_section(tmp_path):
    store = open_store(f"file://{tmp_path}")
    layouts.record(store, "orders", TopicLayout())
    settings = RunSettings(kafka=KafkaSettings(""), archive_url="", defaults=TopicSettings(key_buckets=4))
    with pytest.raises(ConfigError, match=r"^defaults\.key_buckets: the archive of orders was written with 16"):
        LayoutGuard(store, settings).check("orders")


# --- archives written before layouts were recorded -------------------------------------------


def old_archive(tmp_path, settings: TopicSettings):
    """An archive the sink wrote without recording its layout (as before records existed)."""
    store = open_store(f"file://{tmp_path}")
    h = Harness(store, settings)
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(200))
    h.sink.flush("t", 0, Rotation.END)
    assert layouts.read(store, "t") is None
    return store


def test_an_old_archive_consistent_with_the_settings_gets_its_record(tmp_path):
    settings = TopicSettings(time_granularity="day", key_buckets=4)
    store = old_archive(tmp_path, settings)
    guard(store, settings, "t").check("t")
    assert layouts.read(store, "t") == TopicLayout.of(settings)


@pytest.mark.parametrize("written, configured, message", [
    (TopicSettings(key_buckets=4), TopicSettings(time_granularity="day", key_buckets=4),
     "time_granularity: the archive of t was written with hour, the configuration says day"),
    (TopicSettings(key_buckets=4), TopicSettings(key_partitioning="field", key_field="country",
                                                 key_field_values=("FR",)),
     "key_partitioning: the archive of t was written with hash, the configuration says field"),
    (TopicSettings(key_buckets=16), TopicSettings(key_buckets=2),
     "key_buckets: the archive of t was written with a count that makes key_bucket="),
    (TopicSettings(key_buckets=4), TopicSettings(key_buckets=40),
     "key_buckets: the archive of t was written with a count that makes key_bucket="),  # 1 digit, not 2
    (TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR", "DE", "US")),
     TopicSettings(key_partitioning="field", key_field="country", key_field_values=("FR", "DE")),
     "key_field_values: the archive of t was written with values that include 'US', the configuration says "
     '["DE", "FR"]'),
])
def test_an_old_archive_inconsistent_with_the_settings_is_refused_and_gets_no_record(tmp_path, written,
                                                                                      configured, message):
    store = old_archive(tmp_path, written)
    with pytest.raises(ConfigError, match=r'^topics\."t"\.' + _escape(message)):
        guard(store, configured, "t").check("t")
    assert layouts.read(store, "t") is None


def test_readers_infer_the_layout_of_an_old_archive_from_its_directories(tmp_path):
    store = old_archive(tmp_path, TopicSettings(time_granularity="minute", key_partitioning="field",
                                                key_field="country", key_field_values=("FR", "DE", "XX")))
    from archiver.archive import Archive

    inferred = layouts.of_archive(Archive(store), "t")
    assert (inferred.time_granularity, inferred.key_partitioning, inferred.key_field, inferred.inferred) == \
        ("minute", "field", "country", True)
    assert set(inferred.key_field_values) <= {"FR", "DE"}  # XX never occurs; other countries are _other


@pytest.mark.parametrize("present, fewest", [({"0"}, 1), ({"3", "7"}, 8), ({"00", "07"}, 11), ({"15"}, 16),
                                             ({"099"}, 101)])
def test_the_inferred_bucket_count_is_the_fewest_that_makes_the_directories(present, fewest):
    keys = [layout.DataKey("t", 0, i, 0, f"dt=2025-01-01/key_bucket={b}").format() for i, b in enumerate(present)]
    assert layouts.infer("t", keys).key_buckets == fewest


def test_mixed_layouts_are_named():
    keys = [layout.DataKey("t", 0, 0, 0, "dt=2025-01-01/country=FR").format(),
            layout.DataKey("t", 0, 9, 0, "dt=2025-01-01/key_bucket=03").format()]
    with pytest.raises(ConfigError, match="topic 't' mixes layouts: files under dt/country and under "
                                          "dt/key_bucket directories"):
        layouts.infer("t", keys)


def test_verify_reports_files_outside_the_layout(tmp_path):
    from archiver import audit
    from archiver.archive import Archive

    store = old_archive(tmp_path, TopicSettings(key_buckets=4))
    assert audit.verify(Archive(store), quick=True).ok  # one layout, no record: nothing to report
    h = Harness(store, TopicSettings(time_granularity="day", key_buckets=4))  # a run with another layout
    h.sink.assign("t", 0)
    h.sink.ingest("t", 0, messages(300)[200:])
    h.sink.flush("t", 0, Rotation.END)
    problems = audit.verify(Archive(store), quick=True).problems
    assert problems and {p.kind for p in problems} == {"layout"}
    assert "under dt/key_bucket directories, where the topic's layout gives dt/hour/key_bucket" in str(problems[0])
    layouts.record(store, "t", TopicLayout(key_buckets=2))
    problems = audit.verify(Archive(store), quick=True).problems
    assert any("which the topic's recorded layout does not make" in str(p) for p in problems)


def guard(store, settings: TopicSettings, topic: str = "orders") -> LayoutGuard:
    return LayoutGuard(store, RunSettings(kafka=KafkaSettings(""), archive_url="", overrides={topic: settings}))


def _escape(text: str) -> str:
    import re

    return re.escape(text)
