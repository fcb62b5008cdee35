"""Checks every ObjectStore must pass, shared by the local-filesystem and the real-S3 tests."""

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
