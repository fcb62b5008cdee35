"""Choose a target partition the way Kafka producers do, for `archiver replay`.

`partition_for_key` is the Java producer's default for keyed records
(`BuiltInPartitioner.partitionForKey`: `toPositive(murmur2(key)) % partitions`). It also matches
librdkafka's `murmur2_random` partitioner for non-null keys, so a replayed record lands on the
partition any Java or `murmur2_random` producer would have chosen. `RoundRobin` serves
`--partitioning round-robin`.

No state between calls. Arithmetic is done on unsigned 32-bit values (every product
masked with 0xFFFFFFFF), which gives the same bits as Java's wrapping `int`; only `murmur2`'s
return value is converted to Java's signed reading.
"""

from __future__ import annotations

import struct

import numpy as np

from archiver.source.records import Blobs, blob_buffers, blob_list

__all__ = ["RoundRobin", "murmur2", "partition_for_key", "partitions_for_keys", "to_positive"]


def _murmur2_u32(data: bytes) -> int:
    """Kafka's murmur2 of `data` as an unsigned 32-bit value.

    Seed 0x9747b28c, m = 0x5bd1e995, r = 24; the constants are literals because they are
    faster than global lookups in this loop.
    """
    n = len(data)
    h = 0x9747B28C ^ n
    body = n & ~3
    for (k,) in struct.iter_unpack("<I", data[:body]):
        k = (k * 0x5BD1E995) & 0xFFFFFFFF
        # Java: k ^= k >>> 24; k *= m; h *= m; h ^= k. Masking once after the xor is enough:
        # the low 32 bits of an xor depend only on the low 32 bits of its operands.
        h = ((h * 0x5BD1E995) ^ ((k ^ (k >> 24)) * 0x5BD1E995)) & 0xFFFFFFFF
    tail = n & 3
    if tail:  # Java's switch falls through 3 -> 2 -> 1; only case 1 multiplies
        if tail == 3:
            h ^= data[body + 2] << 16
        if tail >= 2:
            h ^= data[body + 1] << 8
        h = ((h ^ data[body]) * 0x5BD1E995) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * 0x5BD1E995) & 0xFFFFFFFF
    return h ^ (h >> 15)


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 hash, exactly as `org.apache.kafka.common.utils.Utils.murmur2`.

    Args:
        data: The bytes to hash: `bytes`, `bytearray` or a memoryview of bytes.

    Returns:
        The hash as Java's signed 32-bit `int`, in [-2**31, 2**31).
    """
    h = _murmur2_u32(data)
    return h - 0x100000000 if h & 0x80000000 else h


def to_positive(n: int) -> int:
    """Kafka's `Utils.toPositive`: clear the sign bit of a 32-bit value (not `abs`)."""
    return n & 0x7FFFFFFF


def partition_for_key(key: bytes | None, partitions: int) -> int:
    """The partition the Java producer's default partitioner picks for a keyed record.

    Equals `BuiltInPartitioner.partitionForKey` (`toPositive(murmur2(key)) % partitions`) and
    librdkafka's `murmur2_random` for non-null keys.

    Args:
        key: The serialized record key; an empty key is a key (it hashes like any other).
        partitions: The number of partitions of the target topic, at least 1.

    Returns:
        A partition number in [0, partitions).

    Raises:
        ValueError: If `key` is None (null keys are spread by the caller's policy, e.g.
            `RoundRobin`, not hashed) or `partitions` is less than 1.
    """
    if key is None:
        raise ValueError("partition_for_key needs a key; a record with a null key is not hashed")
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    # Clearing the sign bit of the unsigned value is toPositive of the signed one.
    return (_murmur2_u32(key) & 0x7FFFFFFF) % partitions


class RoundRobin:
    """Partitions 0, 1, ..., partitions - 1, 0, 1, ... for `--partitioning round-robin`."""

    __slots__ = ("_next", "_partitions")

    def __init__(self, partitions: int) -> None:
        """Start at partition 0.

        Raises:
            ValueError: If `partitions` is less than 1.
        """
        if partitions < 1:
            raise ValueError(f"partitions must be at least 1, got {partitions}")
        self._partitions = partitions
        self._next = 0

    def next(self) -> int:
        """The partition for the next record."""
        p = self._next
        self._next = p + 1 if p + 1 < self._partitions else 0
        return p

    def take(self, count: int) -> np.ndarray:
        """The partitions of the next `count` records (as `count` calls of `next`), as int32."""
        start = self._next
        self._next = (start + count) % self._partitions
        return ((start + np.arange(count, dtype=np.int64)) % self._partitions).astype(np.int32)


def partitions_for_keys(keys: Blobs, partitions: int) -> np.ndarray:
    """`partition_for_key` of each key, as int32; -1 for a null key. In one native call where
    the archiver_native module is built."""
    if partitions < 1:
        raise ValueError(f"partitions must be at least 1, got {partitions}")
    try:
        from archiver_native import partitions_for_keys as native
    except ImportError:
        return np.array([-1 if k is None else partition_for_key(k, partitions) for k in blob_list(keys)],
                        dtype=np.int32)
    return np.frombuffer(native(blob_buffers(keys), partitions), np.int32).copy()
