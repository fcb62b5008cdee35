import io
import json

import fastavro

from archiver.codec import wire
from archiver.codec.keys import KeyDecoder

KEY = {"type": "record", "name": "SessionKey", "fields": [{"name": "tenant", "type": "string"},
                                                           {"name": "session", "type": "long"}]}


class Registry:
    def schema_text(self, schema_id):
        return json.dumps(KEY)


def encode(datum) -> bytes:
    buf = io.BytesIO()
    fastavro.schemaless_writer(buf, fastavro.parse_schema(KEY), datum)
    return wire.frame(7, buf.getvalue())


def test_keys_decode_in_order_with_nulls_and_errors_reported():
    keys = [encode({"tenant": "a", "session": 1}), None, b"\x05bad-key", encode({"tenant": "b", "session": 2})]
    for native in (True, False):
        column, errors = KeyDecoder(Registry(), native_allowed=native).decode(keys)
        assert column.to_pylist() == [{"tenant": "a", "session": 1}, None, {"tenant": "b", "session": 2}]
        assert [i for i, _ in errors] == [2]
        assert errors[0][1].startswith("key: unknown magic byte 0x05")
