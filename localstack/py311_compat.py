"""Python 3.12 behaviour LocalStack 4.13 relies on, for its Python 3.11 virtualenv.

Loaded at start-up by `archiver_py311_compat.pth`, which `infra/services` installs into
LocalStack's own virtualenv (never into archiver's). LocalStack's KMS names key material with
`uuid.uuid5(namespace, key_bytes)`; a bytes name is accepted from Python 3.12 on, and 3.11 raises
"encoding without a string argument" for every CreateKey. This gives 3.11's uuid5 the 3.12
meaning for bytes names (the SHA-1 of the namespace and the bytes).
"""

import hashlib
import sys
import uuid

if sys.version_info < (3, 12):
    _uuid5 = uuid.uuid5

    def uuid5(namespace: uuid.UUID, name: str | bytes) -> uuid.UUID:
        if isinstance(name, bytes | bytearray):
            return uuid.UUID(bytes=hashlib.sha1(namespace.bytes + bytes(name), usedforsecurity=False).digest()[:16],
                             version=5)
        return _uuid5(namespace, name)

    uuid.uuid5 = uuid5
