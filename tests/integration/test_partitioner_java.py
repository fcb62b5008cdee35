"""archiver.partitioner against the Kafka client's own murmur2 and default partitioner (Java).

PartitionFor.java is compiled against the kafka-clients jar infra/services downloaded; the
`services` fixture guarantees the jars are there.
"""

from __future__ import annotations

import os
import random
import subprocess
from pathlib import Path

import pytest

from archiver.partitioner import murmur2, partition_for_key
from tests.unit.test_partitioner import VECTORS

JAVA_SOURCE = Path(__file__).resolve().parent / "java" / "PartitionFor.java"


def _kafka_libs() -> Path:
    """Where infra/services keeps the Kafka jars (its Settings.cache, then kafka-<version>/libs)."""
    cache_home = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return Path(os.environ.get("ARCHIVER_CACHE_DIR", cache_home / "archiver")) / "kafka-4.1.2" / "libs"


def _keys() -> list[bytes]:
    rng = random.Random(20240611)
    keys = [b""]
    keys += [bytes([b]) for b in range(256)]  # every 1-byte key: tail length 1, every high bit
    for length in (2, 3):  # tail lengths 2 and 3, with the extremes of each byte
        keys += [bytes([b] * length) for b in (0x00, 0x7F, 0x80, 0xFF)]
        keys += [rng.randbytes(length) for _ in range(40)]
    keys += [f"s-{rng.getrandbits(64):016x}".encode() for _ in range(60)]  # session ids
    keys += [s.encode() for s in ("s-87ddaeb784b28054", "ключ", "clé-été", "日本語のキー", "emoji-🎉-🚀",
                                  "Ωμέγα", "naïve café", "😀")]
    keys += [bytes([fill]) * n for fill in (0x80, 0xFF) for n in range(13)]  # sign bits at every offset
    keys += [rng.randbytes(length) for length in range(65) for _ in range(3)]
    keys += list(VECTORS)
    return keys


KEYS = _keys()


@pytest.fixture(scope="module")
def partition_for(services, tmp_path_factory) -> Path:
    """A folder with PartitionFor.class, compiled against the Kafka client jars."""
    libs = _kafka_libs()
    assert (libs / "kafka-clients-4.1.2.jar").is_file(), f"no Kafka client jar under {libs}"
    classes = tmp_path_factory.mktemp("partition-for")
    subprocess.run(["javac", "-cp", f"{libs}/*", "-d", str(classes), str(JAVA_SOURCE)],
                   check=True, capture_output=True, text=True)
    return classes


def _java(classes: Path, keys: list[bytes], partitions: int) -> list[tuple[int, int, int]]:
    """(murmur2, toPositive(murmur2) % partitions, BuiltInPartitioner.partitionForKey) per key."""
    result = subprocess.run(["java", "-cp", f"{classes}{os.pathsep}{_kafka_libs()}/*", "PartitionFor",
                             str(partitions)], input="".join(k.hex() + "\n" for k in keys),
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    rows = [tuple(int(v) for v in line.split()) for line in result.stdout.splitlines()]
    assert len(rows) == len(keys), result.stderr
    return rows


def test_key_set_covers_what_it_claims():
    assert len(KEYS) >= 500
    assert b"" in KEYS and {len(k) % 4 for k in KEYS} == {0, 1, 2, 3}
    assert any(len(k) != len(k.decode("utf-8", "replace")) for k in KEYS)  # some multi-byte UTF-8


def test_kafka_vectors_hold_in_java(partition_for):
    hashes = [row[0] for row in _java(partition_for, list(VECTORS), 1)]
    assert hashes == list(VECTORS.values())


@pytest.mark.parametrize("partitions", [1, 3, 6, 7, 12, 100])
def test_python_matches_java_for_every_key(partition_for, partitions):
    java = _java(partition_for, KEYS, partitions)
    python = [(murmur2(k), p, p) for k in KEYS for p in [partition_for_key(k, partitions)]]
    mismatches = [(k.hex(), p, j) for k, p, j in zip(KEYS, python, java, strict=True) if p != j]
    assert not mismatches, f"{len(mismatches)} of {len(KEYS)} differ (hex, python, java): {mismatches[:5]}"
    assert all(j[1] == j[2] for j in java)  # Utils arithmetic is what BuiltInPartitioner does
