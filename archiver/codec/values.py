"""Decode a run of message values of one partition into Arrow, grouped by writer schema.

Chooses, once per writer schema, the batch-native decoder (codec.native) when it supports the
schema and the fastavro reference decoder (codec.arrow) otherwise. Values are in Confluent wire
format (schema looked up in the registry) or, in raw mode, plain Avro written with a local schema.
"""

from __future__ import annotations

import json
import logging
import operator
from collections.abc import Sequence
from dataclasses import dataclass

import fastavro
import pyarrow as pa

from archiver.codec import arrow as reference
from archiver.codec import wire
from archiver.codec.registry import Registry
from archiver.errors import DecodeError, NotFound

logger = logging.getLogger(__name__)

try:  # the native decoder is optional: without it every batch takes the reference path
    from archiver.codec import native
except ImportError:  # pragma: no cover
    native = None

RAW_SCHEMA_ID = -1  # the schema id recorded for raw-mode values (no registry)


@dataclass(frozen=True)
class Run:
    """Rows of one writer schema: their positions in the input and their decoded columns."""

    schema_id: int | None  # None for tombstones
    rows: list[int]
    table: pa.Table | None  # None for tombstones


@dataclass(frozen=True)
class Decoded:
    runs: list[Run]  # in order of first appearance; each run's rows in input order
    errors: list[tuple[int, str]]  # (position, reason) of undecodable values


class ValueDecoder:
    """Per-topic value decoding with a cache of writer schemas and decoder choices."""

    def __init__(self, registry: Registry | None, raw_schema_file: str | None = None,
                 native_allowed: bool = True):
        self._registry = registry
        self._native_allowed = native_allowed
        self._schemas: dict[int, tuple[str, object, bool]] = {}
        if raw_schema_file:
            with open(raw_schema_file) as f:
                text = f.read()
            self._remember(RAW_SCHEMA_ID, text)
        self.raw = raw_schema_file is not None

    def schema_text(self, schema_id: int) -> str:
        return self._schemas[schema_id][0]

    def decode(self, values: Sequence[bytes | None]) -> Decoded:
        """Decode a batch; undecodable values are reported in `errors`, never raised.

        Raises:
            RegistryUnavailable: a writer schema could not be fetched now. Nothing of the batch
                is decoded: an outage is not bad data, so the caller waits and tries again.
        """
        if self.raw:
            return self._decode_raw(values)
        groups, errors = _by_schema_id(values)
        runs = []
        for schema_id, rows in groups.items():
            if schema_id is None:
                runs.append(Run(None, rows, None))
                continue
            try:
                self._ensure(schema_id)
            except DecodeError as e:
                errors.extend((i, str(e)) for i in rows)
                continue
            payloads = values if len(rows) == len(values) else [values[i] for i in rows]
            runs.extend(self._decode_group(schema_id, rows, payloads, wire.HEADER_SIZE, errors))
        return Decoded(runs, errors)

    def _decode_raw(self, values: Sequence[bytes | None]) -> Decoded:
        rows = [i for i, v in enumerate(values) if v is not None]
        tombstones = [i for i, v in enumerate(values) if v is None]
        errors: list[tuple[int, str]] = []
        runs = self._decode_group(RAW_SCHEMA_ID, rows, [values[i] for i in rows], 0, errors)
        if tombstones:
            runs.append(Run(None, tombstones, None))
        return Decoded(runs, errors)

    def _decode_group(self, schema_id, rows, payloads, header_size, errors) -> list[Run]:
        _, parsed, use_native = self._schemas[schema_id]
        decoder = native if use_native and len(payloads) >= NATIVE_MIN_RECORDS else reference
        batch = decoder.decode_batch(payloads, parsed, header_size=header_size)
        errors.extend((rows[i], f"schema id {schema_id}: {reason}") for i, reason in batch.errors)
        if not batch.rows:
            return []
        kept = rows if len(batch.rows) == len(rows) else [rows[i] for i in batch.rows]
        return [Run(schema_id, kept, batch.table)]

    def _ensure(self, schema_id: int) -> None:
        if schema_id in self._schemas:
            return
        if self._registry is None:
            raise DecodeError(f"schema id {schema_id}: no schema registry configured")
        try:
            text = self._registry.schema_text(schema_id)
        except NotFound:  # the reachable registry's own answer: this id will never decode
            raise DecodeError(f"unknown schema id {schema_id} (not in the schema registry)") from None
        self._remember(schema_id, text)

    def _remember(self, schema_id: int, text: str) -> None:
        parsed = fastavro.parse_schema(json.loads(text))
        use_native = self._native_allowed and native is not None and native.supports(parsed)
        logger.info("schema id %d: %s decoder", schema_id, "native" if use_native else "reference")
        self._schemas[schema_id] = (text, parsed, use_native)


# The batch decoder costs about 0.9 ms a call whatever the batch (building the block, the call,
# bringing the result to the reference's types), then 0.4 µs a record; fastavro costs 9 µs a
# demo record and more for nested ones (measured: equal at about 100 demo records). A quiet topic
# hands over a few records at a time, so small batches go to fastavro: both give the same table.
NATIVE_MIN_RECORDS = 64

_HEADER = operator.itemgetter(slice(0, wire.HEADER_SIZE))


def shared_header(values: Sequence[bytes | None]) -> bytes | None:
    """The wire-format header that every value starts with, if they all share one.

    The usual batch: one writer schema, no tombstones. Checked without a Python-level loop.
    """
    if not values or None in values:
        return None
    headers = set(map(_HEADER, values))
    if len(headers) != 1:
        return None
    header = headers.pop()
    return header if len(header) == wire.HEADER_SIZE and header[0] == wire.MAGIC else None


def _by_schema_id(values: Sequence[bytes | None]) -> tuple[dict[int | None, list[int]], list[tuple[int, str]]]:
    """Positions of the values per writer schema id (None: tombstones), and the unreadable ones."""
    header = shared_header(values)
    if header is not None:
        return {wire.schema_id_of(header): list(range(len(values)))}, []
    groups: dict[int | None, list[int]] = {}
    errors: list[tuple[int, str]] = []
    for i, value in enumerate(values):
        if value is None:
            groups.setdefault(None, []).append(i)
            continue
        try:
            groups.setdefault(wire.schema_id_of(value), []).append(i)
        except DecodeError as e:
            errors.append((i, str(e)))
    return groups, errors
