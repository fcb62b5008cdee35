import pytest

from archiver.errors import ConfigError, NotFound
from archiver.store import open_store
from tests.store_checks import conditional_put_race, delete_many_check


def test_put_get_list_delete(tmp_path):
    store = open_store(f"file://{tmp_path}")
    store.put("topic=t/b.parquet", b"2")
    store.put("topic=t/a.parquet", b"1")
    store.put("_ledger/x.json", b"{}")
    assert store.get("topic=t/a.parquet") == b"1"
    assert list(store.list("topic=t/")) == ["topic=t/a.parquet", "topic=t/b.parquet"]
    assert list(store.list_sizes("topic=t/")) == [("topic=t/a.parquet", 1), ("topic=t/b.parquet", 1)]
    store.delete("topic=t/a.parquet")
    store.delete("topic=t/a.parquet")
    with pytest.raises(NotFound):
        store.get("topic=t/a.parquet")


def test_conditional_put_has_exactly_one_winner(tmp_path):
    store = open_store(f"file://{tmp_path}")
    winners = conditional_put_race(store, "_ledger/0001.json", writers=16)
    assert len(winners) == 1
    assert store.get("_ledger/0001.json") == str(winners[0]).encode()
    assert [p.name for p in tmp_path.rglob("*") if p.name.startswith(".tmp-")] == []


def test_keys_cannot_escape_the_root(tmp_path):
    store = open_store(f"file://{tmp_path}/archive")
    with pytest.raises(ConfigError, match="escapes the archive root"):
        store.put("../outside", b"x")


def test_unknown_url_scheme_is_named():
    with pytest.raises(ConfigError, match="expected s3://bucket/prefix or file:///path"):
        open_store("gs://bucket/x")


def test_delete_many_deletes_every_key_given(tmp_path):
    delete_many_check(open_store(f"file://{tmp_path}"), count=20)
