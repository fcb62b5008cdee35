"""Avro ↔ Arrow, the reference path: fastavro decodes each datum, Arrow builds the columns.

The type mapping is a contract (the native decoder is checked against it):

    null, boolean, int, long, float, double, bytes, string → null, bool, int32, int64, float32,
        float64, binary, string; record → struct; array → list; map → map<string, V>;
        enum → string (the symbol); fixed(n) → fixed_size_binary(n)
    ["null", T] (either order) → T, nullable. Several non-null branches → a struct with one
        nullable field per non-null branch, named "long", "array", "map" or a named type's
        simple name; exactly one field is set per non-null value
    timestamp-millis/-micros → timestamp(ms/us, UTC); local-timestamp-millis/-micros →
        timestamp(ms/us); date → date32; time-millis → time32(ms); time-micros → time64(us);
        decimal → decimal128(p, s) (decimal256 if p > 38); uuid, duration, others → underlying

`encode_rows` is the exact inverse: a datum fastavro wrote is re-encoded to the same bytes (replay
relies on it). For that, fastavro reads and writes with a rewritten schema of the same binary
encoding that keeps what Python values would lose:

* no logical types: times stay integers (no datetime rounding or year-9999 limit), decimals bytes;
* enums read as their int index, so a negative index (Python indexing would accept it) is caught;
* each branch of a union of several non-null branches wrapped in a one-field record, which adds
  nothing to the encoding, but fastavro tells which record it read and writes the one named in a
  (name, value) tuple: `int` vs `long` or `string` vs an enum keep the branch they were written on;
* named types renamed to generated dotted names, so namespaces cannot make references ambiguous.
"""

from __future__ import annotations

import dataclasses
import decimal
import io
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import fastavro
import pyarrow as pa
import pyarrow.compute as pc

from archiver.codec.wire import HEADER_SIZE
from archiver.errors import ConfigError, TerminalError

PRIMITIVES = {
    "null": pa.null(), "boolean": pa.bool_(), "int": pa.int32(), "long": pa.int64(),
    "float": pa.float32(), "double": pa.float64(), "bytes": pa.binary(), "string": pa.string(),
}

# (logical type, underlying type) → (Arrow type, integer type `encode_rows` reads it as).
TEMPORAL = {
    ("timestamp-millis", "long"): (pa.timestamp("ms", tz="UTC"), pa.int64()),
    ("timestamp-micros", "long"): (pa.timestamp("us", tz="UTC"), pa.int64()),
    ("local-timestamp-millis", "long"): (pa.timestamp("ms"), pa.int64()),
    ("local-timestamp-micros", "long"): (pa.timestamp("us"), pa.int64()),
    ("date", "int"): (pa.date32(), pa.int32()),
    ("time-millis", "int"): (pa.time32("ms"), pa.int32()),
    ("time-micros", "long"): (pa.time64("us"), pa.int64()),
}
MAX_DECIMAL_PRECISION = 76  # decimal256
_CACHE_LIMIT = 256
_ARROW_ERRORS = (pa.ArrowException, ValueError, TypeError, OverflowError)

Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class DecodedBatch:
    """The rows of a batch that decoded, and why the others did not.

    Attributes:
        table: One row per decoded message, in input order; schema is `arrow_schema(schema)`.
        rows: For each table row, the index of its message in the input.
        errors: (index in the input, one-line reason) for each message that failed to decode.
    """

    table: pa.Table
    rows: list[int]
    errors: list[tuple[int, str]]


def arrow_schema(schema: Any) -> pa.Schema:
    """The Arrow schema of the value columns of records written with an Avro schema.

    Args:
        schema: The Avro schema: JSON text, a dict/list as parsed from JSON, or fastavro-parsed.

    Returns:
        One field per Avro record field, in order, all nullable (a tombstone row is all null).

    Raises:
        ConfigError: the schema is invalid, not a record, or recursive.
    """
    return _codec(schema).schema


def decode_batch(messages: Sequence[bytes | None], schema: Any, *, header_size: int = HEADER_SIZE
                 ) -> DecodedBatch:
    """Decode wire-format messages into an Arrow table; report the ones that do not decode.

    Args:
        messages: Kafka message values: a `header_size`-byte header (not checked here) then one
            Avro datum written with `schema`; None is a tombstone and gives an all-null row.
        schema: The writer schema, as for `arrow_schema`.
        header_size: Bytes to skip before the datum.

    Returns:
        The decoded rows and the (index, reason) of each message that is truncated, has bytes
        after the datum, or holds a value the schema does not allow.

    Raises:
        ConfigError: the schema is unsupported (see `arrow_schema`).
    """
    codec = _codec(schema)
    values, rows, errors = [], [], []
    for index, message in enumerate(messages):
        try:
            values.append(None if message is None else codec.read(message, header_size))
        except Exception as exc:  # noqa: BLE001 - corrupt input raises anything; it is one bad message
            errors.append((index, _reason(exc)))
        else:
            rows.append(index)
    array, rows, bad = _build(values, rows, pa.struct(codec.schema))
    table = pa.Table.from_struct_array(array)
    return DecodedBatch(table, rows, sorted(errors + bad))


def encode_rows(table: pa.Table | pa.RecordBatch, schema: Any, *,
                tombstones: Sequence[bool] | None = None) -> list[bytes | None]:
    """Encode each row as an Avro datum (no wire-format header): the inverse of `decode_batch`.

    Args:
        table: Value columns named as the Avro record's fields; other columns are ignored.
        schema: The Avro schema to write with, as for `arrow_schema`.
        tombstones: Optional flag per row; rows flagged True give None instead of a datum.

    Returns:
        One datum (or None) per row. A datum decoded with the same schema is re-encoded to
        the bytes fastavro wrote.

    Raises:
        ConfigError: the schema is unsupported or the table does not have its columns.
        TerminalError: a row holds a value the schema cannot encode.
    """
    codec = _codec(schema)
    if tombstones is not None and len(tombstones) != table.num_rows:
        raise ConfigError(f"{len(tombstones)} tombstone flags for a table of {table.num_rows} rows")
    out: list[bytes | None] = []
    for index, row in enumerate(_storage_rows(table, codec)):
        if tombstones is not None and tombstones[index]:
            out.append(None)
            continue
        try:
            out.append(codec.write(row))
        except Exception as exc:
            raise TerminalError(f"row {index} cannot be written as Avro: {_reason(exc)}") from exc
    return out


# --- decoding and encoding one datum ---------------------------------------------------------


@dataclass(frozen=True)
class _Codec:
    """A compiled schema: the Arrow types and the fastavro schema and converters between them."""

    schema: pa.Schema
    storage: pa.Schema  # the value columns with times and dates as the integers Avro stores
    avro: Any  # the fastavro-parsed rewritten schema (see the module docstring)
    to_arrow: Converter | None
    to_avro: Converter | None

    def read(self, message: bytes, header_size: int) -> Any:
        """The value of one message's datum, ready for pa.array; raises if it is not exactly one datum."""
        if len(message) < header_size:
            raise ValueError(f"message of {len(message)} bytes is shorter than the {header_size}-byte header")
        stream = io.BytesIO(message)
        stream.seek(header_size)
        value = fastavro.schemaless_reader(stream, self.avro, None, return_record_name=True,
                                           return_record_name_override=True)
        if stream.tell() != len(message):
            raise ValueError(f"{len(message) - stream.tell()} trailing bytes after the Avro datum")
        return value if self.to_arrow is None else self.to_arrow(value)

    def write(self, row: dict) -> bytes:
        """The Avro datum of one row, as `_storage_rows` gives it."""
        stream = io.BytesIO()
        fastavro.schemaless_writer(stream, self.avro, row if self.to_avro is None else self.to_avro(row))
        return stream.getvalue()


def _build(values: list, rows: list[int], struct: pa.StructType
           ) -> tuple[pa.StructArray, list[int], list[tuple[int, str]]]:
    """Build the struct array of the decoded values; drop (and report) the rows Arrow refuses.

    fastavro does not check every range the Arrow type has (an `int` read from a varint larger
    than 32 bits), and pa.array fails the whole batch on one such value, so on failure each
    row is tried alone to find the culprits.
    """
    try:
        return pa.array(values, type=struct), rows, []
    except _ARROW_ERRORS:
        pass
    kept, bad = [], []
    for value, index in zip(values, rows):
        try:
            pa.array([value], type=struct)
            kept.append((value, index))
        except _ARROW_ERRORS as exc:
            bad.append((index, f"value out of range for its Arrow type: {_reason(exc)}"))
    return pa.array([value for value, _ in kept], type=struct), [index for _, index in kept], bad


def nullable_schema(schema: pa.Schema) -> pa.Schema:
    """`schema` with every field, nested ones included, nullable.

    Archived files use it: a tombstone (or a null optional record) nulls a whole struct, and
    Parquet then hands back null children even where the Avro type has none.
    """
    return pa.schema([_nullable_field(f) for f in schema], metadata=schema.metadata)


def _nullable_field(f: pa.Field) -> pa.Field:
    return f.with_type(_nullable_type(f.type)).with_nullable(True)


def _nullable_type(t: pa.DataType) -> pa.DataType:
    if pa.types.is_struct(t):
        return pa.struct([_nullable_field(t.field(i)) for i in range(t.num_fields)])
    if pa.types.is_map(t):
        return pa.map_(t.key_field, _nullable_field(t.item_field))
    if pa.types.is_list(t):
        return pa.list_(_nullable_field(t.value_field))
    return t


def _storage_rows(table: pa.Table | pa.RecordBatch, codec: _Codec) -> list[dict]:
    """The rows of `table` as dicts, with times and dates as integers (exact, no datetime)."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    if not codec.schema:  # a record without fields: its datum is empty, and so are the rows
        return [{} for _ in range(table.num_rows)]
    missing = [name for name in codec.schema.names if name not in table.column_names]
    if missing:
        raise ConfigError(f"the table has no column for the Avro field(s) {', '.join(missing)}")
    columns = []
    target, storage_schema = nullable_schema(codec.schema), nullable_schema(codec.storage)
    for field, storage in zip(target, storage_schema):
        column = table.column(field.name)
        try:  # only what differs: pyarrow 26 corrupts a list<null> cast even to its own type
            column = column if _nullable_type(column.type) == field.type else column.cast(field.type)
        except (pa.ArrowException, ValueError) as exc:
            raise ConfigError(f"column {field.name!r} does not fit the Avro schema: {_reason(exc)}") from exc
        columns.append(pa.chunked_array([_as_storage(chunk, storage.type) for chunk in column.chunks],
                                        type=storage.type))
    return pa.Table.from_arrays(columns, schema=storage_schema).to_pylist()


def _as_storage(array: pa.Array, storage: pa.DataType) -> pa.Array:
    """`array` with its times and dates as integers, rebuilt level by level down to what changes.

    One cast of the whole column would do, but pyarrow 26 corrupts list<null> children when it
    casts or views a nested array, so only the leaves that change are cast.
    """
    if array.type == storage:
        return array
    mask = array.is_null() if array.null_count else None
    if pa.types.is_struct(storage):
        children = [_as_storage(child, field.type) for child, field in zip(array.flatten(), storage)]
        return pa.StructArray.from_arrays(children, fields=list(storage), mask=mask)
    if pa.types.is_map(storage) or pa.types.is_list(storage):
        # from_arrays refuses a mask with offsets that do not start at 0, as in a slice.
        start, end = array.offsets[0].as_py(), array.offsets[-1].as_py()
        offsets, values = pc.subtract(array.offsets, start), array.values.slice(start, end - start)
        if pa.types.is_list(storage):
            return pa.ListArray.from_arrays(offsets, _as_storage(values, storage.value_type),
                                            type=storage, mask=mask)
        keys, items = values.flatten()
        return pa.MapArray.from_arrays(offsets, keys, _as_storage(items, storage.item_type),
                                       type=storage, mask=mask)
    return array.cast(storage)


def _reason(exc: BaseException) -> str:
    """A one-line reason naming what was wrong with a message."""
    detail = " ".join(str(exc).split())
    if isinstance(exc, EOFError):
        return f"truncated Avro datum ({detail})" if detail else "truncated Avro datum"
    if isinstance(exc, UnicodeDecodeError):
        return f"invalid UTF-8 in a string: {detail}"
    if isinstance(exc, IndexError):  # fastavro indexes the union branches with the index read
        return f"union branch index out of range ({detail})"
    return f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__


# --- compiling a schema ----------------------------------------------------------------------

_codecs: dict[str, _Codec] = {}


def _codec(schema: Any) -> _Codec:
    """The compiled codec of `schema`, cached by its JSON text (callers pass the same few schemas)."""
    key = schema if isinstance(schema, str) else json.dumps(schema, sort_keys=True, default=repr)
    if key not in _codecs:
        if len(_codecs) >= _CACHE_LIMIT:
            _codecs.clear()
        _codecs[key] = _compile(schema)
    return _codecs[key]


def _compile(schema: Any) -> _Codec:
    try:
        if isinstance(schema, str) and schema.lstrip()[:1] in ("{", "[", '"'):
            schema = json.loads(schema)  # JSON text, as the registry returns it (else a name: "string")
        parsed = fastavro.parse_schema(schema)
    except Exception as exc:
        raise ConfigError(f"invalid Avro schema: {_reason(exc)}") from exc
    if not isinstance(parsed, dict) or parsed.get("type") != "record":
        kind = parsed.get("type") if isinstance(parsed, dict) else parsed
        raise ConfigError(f"the Avro schema must be a record at the top level, not {json.dumps(kind)}")
    node = _Compiler(parsed.get("__named_schemas", {})).node(parsed)
    # A tombstone row has every value column null, so the top level is nullable whatever Avro says.
    fields = [field.with_nullable(True) for field in node.arrow]
    storage = pa.schema([field.with_nullable(True) for field in node.storage])
    return _Codec(pa.schema(fields), storage, fastavro.parse_schema(node.avro), node.to_arrow, node.to_avro)


@dataclass(frozen=True)
class _Node:
    """How one Avro type maps. Converters are never called with None; containers check."""

    arrow: pa.DataType
    storage: pa.DataType  # `arrow` with times and dates as integers, what encode_rows reads
    avro: Any  # the rewritten schema fastavro reads and writes
    nullable: bool = False
    to_arrow: Converter | None = None  # fastavro value → Python value for pa.array(type=arrow)
    to_avro: Converter | None = None  # Python value from to_pylist() of `storage` → fastavro value

    def field(self, name: str, storage: bool = False) -> pa.Field:
        return pa.field(name, self.storage if storage else self.arrow, nullable=self.nullable)


class _Compiler:
    """Walks a fastavro-parsed schema once, building the _Node of each type."""

    def __init__(self, named: dict[str, Any]):
        self._named = named
        self._done: dict[str, _Node] = {}  # by full name, with `avro` set to the reference
        self._open: set[str] = set()  # named types being compiled: meeting one again is recursion
        self._ids = 0

    def _new_name(self, prefix: str) -> str:
        self._ids += 1
        return f"_archiver.{prefix}{self._ids}"

    def node(self, schema: Any) -> _Node:
        if isinstance(schema, list):
            return self._union(schema)
        if isinstance(schema, str):
            return _primitive(schema) if schema in PRIMITIVES else self._reference(schema)
        kind = schema["type"]
        if kind in PRIMITIVES:
            return _logical(schema, _primitive(kind))
        if kind in ("record", "enum", "fixed"):
            return self._named_type(schema)
        if kind == "array":
            return _array(self.node(schema["items"]))
        if kind == "map":
            return _map(self.node(schema["values"]))
        if isinstance(kind, (dict, list)) or kind in self._named:
            return self.node(kind)
        raise ConfigError(f"unsupported Avro type {json.dumps(kind)}")

    def _reference(self, name: str) -> _Node:
        if name not in self._named:
            raise ConfigError(f"unknown Avro type {name!r}")
        return self._named_type(self._named[name])

    def _named_type(self, schema: dict) -> _Node:
        name = schema["name"]
        if name in self._done:
            return self._done[name]
        if name in self._open:
            raise ConfigError(f"recursive Avro schema: {name} contains itself, which Arrow columns cannot")
        self._open.add(name)
        kind, alias = schema["type"], self._new_name("t")
        if kind == "record":
            node = self._record(schema, alias)
        elif kind == "enum":
            node = _enum(schema["symbols"])
        else:
            fixed = {"type": "fixed", "name": alias, "size": schema["size"]}
            node = _logical(schema, _Node(pa.binary(schema["size"]), pa.binary(schema["size"]), fixed))
        self._open.discard(name)
        # Later references name the definition; an enum is read as its int index everywhere.
        self._done[name] = dataclasses.replace(node, avro="int" if kind == "enum" else alias)
        return node

    def _record(self, schema: dict, alias: str) -> _Node:
        names = [field["name"] for field in schema["fields"]]
        nodes = [self.node(field["type"]) for field in schema["fields"]]
        avro = {"type": "record", "name": alias,
                "fields": [{"name": n, "type": node.avro} for n, node in zip(names, nodes)]}
        return _Node(pa.struct([node.field(n) for n, node in zip(names, nodes)]),
                     pa.struct([node.field(n, storage=True) for n, node in zip(names, nodes)]), avro,
                     to_arrow=_fields_converter(names, [node.to_arrow for node in nodes]),
                     to_avro=_fields_converter(names, [node.to_avro for node in nodes]))

    def _union(self, branches: list) -> _Node:
        nodes = [self.node(branch) for branch in branches]
        values = [i for i, node in enumerate(nodes) if not pa.types.is_null(node.arrow)]
        if not values:
            return dataclasses.replace(_primitive("null"), avro=[n.avro for n in nodes])
        nullable = len(values) < len(nodes)
        if len(values) == 1:
            node = nodes[values[0]]
            return dataclasses.replace(node, avro=[n.avro for n in nodes], nullable=nullable or node.nullable)
        names = _branch_names([branches[i] for i in values])
        return self._multi_union(nodes, dict(zip(values, names)), nullable)

    def _multi_union(self, nodes: list[_Node], names: dict[int, str], nullable: bool) -> _Node:
        """A union of several non-null branches (`names`: struct field name by branch index)."""
        branches = [(self._new_name("u"), names[i], nodes[i]) for i in names]
        wrappers = iter(branches)
        avro = [n.avro if i not in names else
                {"type": "record", "name": next(wrappers)[0], "fields": [{"name": "v", "type": n.avro}]}
                for i, n in enumerate(nodes)]
        return _Node(pa.struct([pa.field(name, node.arrow) for _, name, node in branches]),
                     pa.struct([pa.field(name, node.storage) for _, name, node in branches]), avro,
                     nullable=nullable, to_arrow=_union_to_arrow(branches), to_avro=_union_to_avro(branches))


def _branch_names(branches: list) -> list[str]:
    """Struct field names for union branches: the type name, a named type's simple name if unique."""
    def full_name(branch: Any) -> str:  # parsed schemas name named types in full
        if isinstance(branch, str):
            return branch
        return branch["name"] if branch["type"] in ("record", "enum", "fixed") else full_name(branch["type"])

    full = [full_name(branch) for branch in branches]
    simple = [name.rsplit(".", 1)[-1] for name in full]
    names = [s if simple.count(s) == 1 else f for s, f in zip(simple, full)]
    if len(set(names)) != len(names):
        raise ConfigError(f"Avro union has two branches of the same type: {', '.join(full)}")
    return names


# --- nodes of each kind ----------------------------------------------------------------------


def _primitive(name: str) -> _Node:
    return _Node(PRIMITIVES[name], PRIMITIVES[name], name, nullable=name == "null")


def _array(item: _Node) -> _Node:
    to_arrow, to_avro = _each(item.to_arrow), _each(item.to_avro)
    return _Node(pa.list_(item.field("item")), pa.list_(item.field("item", storage=True)),
                 {"type": "array", "items": item.avro}, to_arrow=to_arrow, to_avro=to_avro)


def _map(value: _Node) -> _Node:
    """pa.array takes a dict for a map (in its order); to_pylist gives pairs, fastavro wants a dict."""
    inner_in, inner_out = value.to_arrow, value.to_avro

    def to_arrow(mapping: dict) -> list:
        return [(k, None if v is None else inner_in(v)) for k, v in mapping.items()]

    def to_avro(pairs: list) -> dict:
        return {k: None if v is None else inner_out(v) for k, v in pairs}

    return _Node(pa.map_(pa.string(), value.field("value")), pa.map_(pa.string(), value.field("value", True)),
                 {"type": "map", "values": value.avro},
                 to_arrow=to_arrow if inner_in else None, to_avro=to_avro if inner_out else dict)


def _enum(symbols: list[str]) -> _Node:
    index = {symbol: i for i, symbol in enumerate(symbols)}

    def to_arrow(i: int) -> str:
        if 0 <= i < len(symbols):
            return symbols[i]
        raise ValueError(f"enum index {i} out of range for {len(symbols)} symbols")

    def to_avro(symbol: str) -> int:
        if symbol not in index:
            raise ValueError(f"{symbol!r} is not a symbol of the enum")
        return index[symbol]

    return _Node(pa.string(), pa.string(), "int", to_arrow=to_arrow, to_avro=to_avro)


def _logical(schema: dict, base: _Node) -> _Node:
    """Overlay a logical type on the node of its underlying type; unknown or invalid ones are ignored."""
    logical, kind = schema.get("logicalType"), schema["type"]
    if (logical, kind) in TEMPORAL:
        arrow, storage = TEMPORAL[logical, kind]
        return dataclasses.replace(base, arrow=arrow, storage=storage)
    if logical == "decimal" and kind in ("bytes", "fixed"):
        return _decimal(schema, base)
    return base  # uuid stays the string as written, duration its 12 bytes


def _decimal(schema: dict, base: _Node) -> _Node:
    precision, scale, size = schema.get("precision"), schema.get("scale", 0), schema.get("size")
    if not (isinstance(precision, int) and isinstance(scale, int)
            and 0 <= scale <= precision and 0 < precision <= MAX_DECIMAL_PRECISION):
        return base
    arrow = pa.decimal128(precision, scale) if precision <= 38 else pa.decimal256(precision, scale)
    limit = 10**precision
    context = decimal.Context(prec=precision)  # exact: a value that fits has at most `precision` digits

    def to_arrow(raw: bytes) -> decimal.Decimal:  # Avro: big-endian two's complement of the unscaled value
        unscaled = int.from_bytes(raw, "big", signed=True)
        if not -limit < unscaled < limit:
            raise ValueError(f"decimal {unscaled}E-{scale} has more than {precision} digits")
        return context.create_decimal(unscaled).scaleb(-scale, context)

    def to_avro(value: decimal.Decimal) -> bytes:
        unscaled = int(value.scaleb(scale, context))
        # fastavro's width on bytes: one more than the magnitude needs (so -128 is ff80, not 80).
        length = size or (abs(unscaled).bit_length() + 8) // 8
        return unscaled.to_bytes(length, "big", signed=True)

    return dataclasses.replace(base, arrow=arrow, storage=arrow, to_arrow=to_arrow, to_avro=to_avro)


# --- converters ------------------------------------------------------------------------------


def _fields_converter(names: list[str], converters: list[Converter | None]) -> Converter | None:
    """Convert the fields that need it, in place; None when no field does (the common fast path)."""
    pairs = [(name, conv) for name, conv in zip(names, converters) if conv is not None]
    if not pairs:
        return None

    def convert(record: dict) -> dict:
        for name, conv in pairs:
            value = record[name]
            if value is not None:
                record[name] = conv(value)
        return record

    return convert


def _each(conv: Converter | None) -> Converter | None:
    if conv is None:
        return None
    return lambda items: [None if item is None else conv(item) for item in items]


def _union_to_arrow(branches: list[tuple[str, str, _Node]]) -> Converter:
    by_wrapper = {wrapper: (name, node.to_arrow) for wrapper, name, node in branches}

    def convert(value: tuple[str, dict]) -> dict:
        wrapper, record = value  # fastavro returns (record name, record) for the wrapper read
        name, conv = by_wrapper[wrapper]
        inner = record["v"]
        return {name: inner if conv is None else conv(inner)}

    return convert


def _union_to_avro(branches: list[tuple[str, str, _Node]]) -> Converter:
    def convert(value: dict) -> tuple[str, dict]:
        chosen = [(wrapper, name, node) for wrapper, name, node in branches if value.get(name) is not None]
        if len(chosen) != 1:
            raise ValueError(f"a union value must set exactly one of {[n for _, n, _ in branches]}, "
                             f"not {len(chosen)}")
        wrapper, name, node = chosen[0]
        inner = value[name]
        # The (name, record) tuple makes fastavro write this branch's index, not the first that fits.
        return wrapper, {"v": inner if node.to_avro is None else node.to_avro(inner)}

    return convert
