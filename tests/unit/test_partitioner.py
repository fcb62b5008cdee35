import pyarrow as pa
import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver.partitioner import RoundRobin, murmur2, partition_for_key, partitions_for_keys, to_positive

# Kafka's UtilsTest.testMurmur2; tests/integration/test_partitioner_java.py checks them against Java.
VECTORS = {
    b"21": -973932308,
    b"foobar": -790332482,
    b"a-little-bit-long-string": -985981536,
    b"a-little-bit-longer-string": -1486304829,
    b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8": -58897971,
    bytes([ord("a"), ord("b"), ord("c")]): 479470107,
}


def _int32(x: int) -> int:
    x &= 0xFFFFFFFF
    return x - (1 << 32) if x & 0x80000000 else x


def _java_murmur2(data: bytes) -> int:
    """A line-by-line transcription of Utils.murmur2 on signed ints, to check the fast version."""
    length, m, r = len(data), _int32(0x5BD1E995), 24
    h = _int32(_int32(0x9747B28C) ^ length)

    def ushr(x: int, s: int) -> int:  # Java's >>>
        return (x & 0xFFFFFFFF) >> s

    for i in range(length // 4):
        b = [data[i * 4 + j] & 0xFF for j in range(4)]
        k = _int32(b[0] + (b[1] << 8) + (b[2] << 16) + (b[3] << 24))
        k = _int32(k * m)
        k = _int32(k ^ ushr(k, r))
        k = _int32(k * m)
        h = _int32(h * m)
        h = _int32(h ^ k)
    rest = length & ~3
    if length % 4 >= 3:
        h = _int32(h ^ ((data[rest + 2] & 0xFF) << 16))
    if length % 4 >= 2:
        h = _int32(h ^ ((data[rest + 1] & 0xFF) << 8))
    if length % 4 >= 1:
        h = _int32(h ^ (data[rest] & 0xFF))
        h = _int32(h * m)
    h = _int32(h ^ ushr(h, 13))
    h = _int32(h * m)
    return _int32(h ^ ushr(h, 15))


@pytest.mark.parametrize(("data", "expected"), VECTORS.items(), ids=[k.decode() for k in VECTORS])
def test_murmur2_matches_kafkas_vectors(data, expected):
    assert murmur2(data) == expected
    assert _java_murmur2(data) == expected


@given(st.binary(max_size=200))
def test_murmur2_equals_the_literal_transcription_of_java(data):
    assert murmur2(data) == _java_murmur2(data)


@given(st.binary(max_size=200))
def test_murmur2_is_a_java_int(data):
    assert -(2**31) <= murmur2(data) < 2**31


@given(st.binary(max_size=100))
def test_murmur2_accepts_bytearray_and_memoryview(data):
    assert murmur2(bytearray(data)) == murmur2(memoryview(data)) == murmur2(data)


@given(st.integers(-(2**31), 2**31 - 1))
def test_to_positive_clears_only_the_sign_bit(n):
    assert 0 <= to_positive(n) < 2**31
    assert to_positive(n) == (n if n >= 0 else n + 2**31)


@given(st.binary(max_size=100), st.integers(1, 10_000))
def test_partition_for_key_is_to_positive_murmur2_mod_partitions(key, partitions):
    p = partition_for_key(key, partitions)
    assert 0 <= p < partitions
    assert p == to_positive(murmur2(key)) % partitions


def test_partition_for_key_refuses_null_key_and_no_partitions():
    with pytest.raises(ValueError, match="null key"):
        partition_for_key(None, 3)
    with pytest.raises(ValueError, match="at least 1, got 0"):
        partition_for_key(b"k", 0)


@given(st.integers(1, 50), st.integers(0, 200))
def test_round_robin_cycles_through_every_partition_in_order(partitions, n):
    rr = RoundRobin(partitions)
    assert [rr.next() for _ in range(n)] == [i % partitions for i in range(n)]


def test_round_robin_refuses_no_partitions():
    with pytest.raises(ValueError, match="at least 1, got 0"):
        RoundRobin(0)


@given(st.lists(st.none() | st.binary(max_size=40), max_size=50), st.integers(1, 1000))
def test_partitions_for_keys_is_partition_for_key_of_each_and_minus_one_for_null(keys, partitions):
    expected = [-1 if k is None else partition_for_key(k, partitions) for k in keys]
    assert partitions_for_keys(keys, partitions).tolist() == expected


@given(st.lists(st.none() | st.binary(max_size=40), max_size=50), st.integers(1, 1000), st.data())
def test_keys_in_an_arrow_array_get_the_partitions_of_the_same_keys_in_a_list(keys, partitions, data):
    """Replay hands keys over as a slice of an Arrow column: its offset, nulls and offsets count."""
    begin = data.draw(st.integers(0, len(keys)))
    end = data.draw(st.integers(begin, len(keys)))
    column = pa.array(keys, pa.binary()).slice(begin, end - begin)
    assert partitions_for_keys(column, partitions).tolist() == partitions_for_keys(keys[begin:end], partitions).tolist()


@given(st.integers(1, 50), st.lists(st.integers(0, 120), max_size=6))
def test_round_robin_take_is_repeated_next(partitions, counts):
    one, many = RoundRobin(partitions), RoundRobin(partitions)
    for count in counts:
        assert many.take(count).tolist() == [one.next() for _ in range(count)]
