"""The S3 store against the real S3 server, including conditional writes."""

import pytest

from archiver.errors import NotFound, PreconditionFailed
from archiver.store import open_store
from tests.store_checks import conditional_put_race, delete_many_check


@pytest.fixture
def store(services, unique):
    return open_store(f"s3://{services.bucket}/smoke/{unique}")


def test_put_get_list_delete(store):
    store.put("topic=t/dt=2026-11-24/b.parquet", b"b" * 10)
    store.put("topic=t/dt=2026-11-24/a.parquet", b"a" * 10)
    store.put("_ledger/topic=t/partition=0/00000000000000000001.json", b"{}")
    assert store.get("topic=t/dt=2026-11-24/a.parquet") == b"a" * 10
    assert list(store.list("topic=t/")) == ["topic=t/dt=2026-11-24/a.parquet", "topic=t/dt=2026-11-24/b.parquet"]
    store.put("topic=t/dt=2026-11-24/b.parquet", b"b" * 7)
    assert list(store.list_sizes("topic=t/")) == [("topic=t/dt=2026-11-24/a.parquet", 10),
                                                  ("topic=t/dt=2026-11-24/b.parquet", 7)]
    store.delete("topic=t/dt=2026-11-24/a.parquet")
    with pytest.raises(NotFound):
        store.get("topic=t/dt=2026-11-24/a.parquet")


def test_conditional_put_fails_on_an_existing_key(store):
    store.put("_ledger/0001.json", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed, match="already exists"):
        store.put("_ledger/0001.json", b"second", if_absent=True)
    assert store.get("_ledger/0001.json") == b"first"


def test_concurrent_conditional_puts_have_one_winner(store):
    winners = conditional_put_race(store, "_ledger/race.json")
    assert len(winners) == 1
    assert store.get("_ledger/race.json") == str(winners[0]).encode()


def test_listings_of_more_than_a_page_and_after_a_key(store):
    import concurrent.futures

    from archiver import layout

    keys = [layout.ledger_key("t", 0, seq) for seq in range(1, 1206)]  # 2 pages, "=" in every key
    with concurrent.futures.ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda k: store.put(k, b"{}"), keys))
    prefix = layout.ledger_prefix("t", 0)
    assert list(store.list(prefix)) == keys
    assert list(store.list(prefix, start_after=keys[999])) == keys[1000:]
    assert list(store.list_sizes(prefix, start_after=keys[-2])) == [(keys[-1], 2)]
    assert list(store.list(prefix, start_after=keys[-1])) == []


def test_delete_many_deletes_in_batches(store):
    delete_many_check(store)


def test_puts_and_gets_go_through_obstore_not_boto3(store, monkeypatch):
    assert store._fast is not None, "obstore serves puts and gets"

    def boto3_called(**kwargs):
        raise AssertionError("boto3 was asked to do what obstore should have done")

    monkeypatch.setattr(store._client, "put_object", boto3_called)
    monkeypatch.setattr(store._client, "get_object", boto3_called)
    monkeypatch.setattr(store._client, "delete_object", boto3_called)
    store.put("_ledger/fast.json", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed, match="already exists"):
        store.put("_ledger/fast.json", b"second", if_absent=True)
    store.put("topic=t/fast.parquet", b"x" * 200_000)
    assert store.get("_ledger/fast.json") == b"first"
    assert store.get("topic=t/fast.parquet") == b"x" * 200_000
    with pytest.raises(NotFound):
        store.get("_ledger/missing.json")
    store.delete("topic=t/fast.parquet")
    store.delete("topic=t/never-there.parquet")  # deleting what is not there is not an error
    with pytest.raises(NotFound):
        store.get("topic=t/fast.parquet")


def test_what_obstore_cannot_do_is_done_by_boto3(store):
    from obstore.store import S3Store

    store._fast.store = S3Store("no-such-bucket-here", endpoint="http://127.0.0.1:9", region="us-east-1",
                                skip_signature=True, client_options={"allow_http": True})  # refused at once
    store.put("_ledger/slow.json", b"first", if_absent=True)
    with pytest.raises(PreconditionFailed):
        store.put("_ledger/slow.json", b"second", if_absent=True)
    assert store.get("_ledger/slow.json") == b"first"
