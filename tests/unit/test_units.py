"""Sizes, durations and times: one parser for every command and the configuration."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from archiver import units
from archiver.errors import ConfigError

NOW = 1_764_000_000_000


@pytest.mark.parametrize("text, size", [
    ("128MB", 128_000_000), ("128MiB", 128 * 2**20), ("128mb", 128_000_000), ("128 MiB", 128 * 2**20),
    ("1kB", 1000), ("1KiB", 1024), ("1.5kb", 1500), ("2GB", 2 * 10**9), ("2GiB", 2 * 2**30),
    ("1TB", 10**12), ("1TiB", 2**40), ("1000", 1000), ("1000b", 1000), ("0", 0), (4096, 4096),
])
def test_size_table(text, size):
    assert units.parse_size(text, "x") == size


@pytest.mark.parametrize("text, message", [
    ("128m", "'128m' is ambiguous: write 128MiB (powers of 1024) or 128MB (powers of 1000)"),
    ("64k", "'64k' is ambiguous: write 64KiB"),
    ("1g", "'1g' is ambiguous"),
    ("lots", "expected a size such as 128MB or 64MiB, got 'lots'"),
    ("-1MB", "expected a size"),
    ("12 parsecs", "expected a size"),
    (True, "expected a size"),
    (-5, "non-negative"),
])
def test_bad_sizes_name_the_option(text, message):
    with pytest.raises(ConfigError, match="^--target-size: .*" + message.replace("(", r"\(").replace(")", r"\)")):
        units.parse_size(text, "--target-size")


@pytest.mark.parametrize("text, seconds", [
    ("90", 90), ("30s", 30), ("15m", 900), ("1h", 3600), ("2d", 172_800), ("1w", 604_800), ("500ms", 0.5),
    ("1.5h", 5400), (" 2 m ", 120), (60, 60), (0.25, 0.25),
])
def test_duration_table(text, seconds):
    assert units.parse_duration(text, "x") == seconds


def test_a_bare_number_takes_the_unit_of_the_setting():
    assert units.parse_duration("45000", "x", bare_unit="ms") == 45
    assert units.parse_duration("45s", "x", bare_unit="ms") == 45


@pytest.mark.parametrize("text", ["", "-1h", "1y", "soon", "1h30m", True])
def test_bad_durations_name_the_option(text):
    with pytest.raises(ConfigError, match="--grace: "):
        units.parse_duration(text, "--grace")


@pytest.mark.parametrize("text, ms", [
    ("now", NOW), ("-2h", NOW - 7_200_000), ("-30m", NOW - 1_800_000), ("-1d", NOW - 86_400_000),
    ("-90s", NOW - 90_000), ("2025-11-24T16:00:00Z", 1_764_000_000_000), ("2025-11-24T16:00:00", 1_764_000_000_000),
    ("2025-11-24T17:00:00+01:00", 1_764_000_000_000), ("2025-11-24", 1_763_942_400_000),
])
def test_time_table(text, ms):
    assert units.parse_time(text, NOW, "--from") == ms


@pytest.mark.parametrize("text", ["yesterday", "-2x", "2025-13-01", ""])
def test_bad_times_name_the_option(text):
    with pytest.raises(ConfigError, match="--from: .* is not an ISO-8601 time, 'now' or a relative time"):
        units.parse_time(text, NOW, "--from")


@given(st.integers(0, 2**50))
def test_sizes_round_trip_through_their_shortest_spelling(n):
    assert units.parse_size(units.format_size(n), "x") == n


@given(st.integers(0, 10**7))
def test_durations_round_trip_through_their_shortest_spelling(n):
    assert units.parse_duration(units.format_duration(n), "x") == n


def test_spellings():
    assert [units.format_size(n) for n in (128 * 2**20, 128 * 10**6, 1001, 0)] == ["128MiB", "128MB", "1001", "0"]
    assert [units.format_duration(s) for s in (3600, 900, 90, 1.5, 0)] == ["1h", "15m", "90s", "1.5s", "0s"]


def test_replay_rates_use_the_same_sizes():
    from archiver.replay import parse_rate

    assert parse_rate("10MB") == (0.0, 10_000_000.0)
    assert parse_rate("10MiB/s") == (0.0, float(10 * 2**20))
    assert parse_rate("5000") == (5000.0, 0.0)
    with pytest.raises(ConfigError, match="--rate"):
        parse_rate("10m")
