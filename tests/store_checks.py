"""Store helpers shared by tests: checks every ObjectStore must pass (local filesystem and real S3),
and a store wrapper that counts requests."""

import threading

from archiver.errors import PreconditionFailed


def conditional_put_race(store, key: str, writers: int = 8) -> list[int]:
    """Let `writers` threads create `key` with If-None-Match at once; returns the winners."""
    winners = []

    def attempt(i):
        try:
            store.put(key, str(i).encode(), if_absent=True)
            winners.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return winners


class Counting:
    """A store that counts its requests."""

    def __init__(self, store):
        self.store, self.gets, self.lists = store, 0, 0

    def get(self, key):
        self.gets += 1
        return self.store.get(key)

    def list(self, prefix="", start_after=""):
        self.lists += 1
        return self.store.list(prefix, start_after)

    def __getattr__(self, name):
        return getattr(self.store, name)


def delete_many_check(store, count: int = 1_005) -> None:
    """`delete_many` removes every key given, over more than one batch of S3's 1,000, ignores
    missing ones and leaves the others."""
    keys = [f"topic=t/many/{i:05d}.parquet" for i in range(count)]
    for key in keys + ["topic=t/keep.parquet"]:
        store.put(key, b"x")
    store.delete_many(keys + ["topic=t/never-written.parquet"])
    assert list(store.list("topic=t/")) == ["topic=t/keep.parquet"]
