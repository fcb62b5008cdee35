"""S3 (or any S3-compatible endpoint) object store.

The endpoint comes from the standard AWS configuration chain (AWS_ENDPOINT_URL, profiles,
credentials); nothing here is specific to one S3 implementation. Conditional creates use
`If-None-Match: *`, which AWS S3, LocalStack, SeaweedFS and MinIO honour.

PUTs, GETs and single DELETEs (files, ledger entries, intents) go through obstore (Rust's
object_store) first: about 0.2-0.3 ms of CPU per request where boto3 takes 1.1-1.3 ms. It gets
the endpoint, region and credentials of the boto3 client (the same AWS chain) and does not
retry: whatever it cannot do at the first attempt is done again by boto3, whose retries and
error answers stay the ones archiver relies on. Listings and batch deletes stay with boto3.

`S3Options` (`[archive]`) add to every request the expected bucket owner, and to every write the
server-side encryption (SSE-S3 or SSE-KMS with a key id), through both clients.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import timedelta
from urllib.parse import urlparse

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError
from botocore.handlers import set_list_objects_encoding_type_url

from archiver.errors import NotFound, PreconditionFailed, TerminalError, TransientError
from archiver.store import REQUESTS, S3Options

_TRANSIENT_CODES = {"SlowDown", "ServiceUnavailable", "InternalError", "RequestTimeout", "503", "500",
                    "ConditionalRequestConflict", "RequestTimeTooSkewed", "Throttling"}
_NOT_FOUND_CODES = {"NoSuchKey", "404", "NotFound"}

logger = logging.getLogger(__name__)


class _Fast:
    """PUT and GET through obstore, with the boto3 client's endpoint, region and credentials."""

    def __init__(self, bucket: str, client, options: S3Options):
        import obstore
        from obstore.auth.boto3 import Boto3CredentialProvider
        from obstore.exceptions import AlreadyExistsError, NotFoundError, PreconditionError
        from obstore.store import S3Store as ObjectStoreS3

        endpoint = client.meta.endpoint_url
        custom = not urlparse(endpoint).netloc.endswith(".amazonaws.com")  # e.g. AWS_ENDPOINT_URL
        encryption = {"server_side_encryption": options.sse} if options.sse else {}
        if options.sse_kms_key_id:
            encryption["sse_kms_key_id"] = options.sse_kms_key_id
        headers = ({"default_headers": {"x-amz-expected-bucket-owner": options.expected_bucket_owner}}
                   if options.expected_bucket_owner else {})
        self.store = ObjectStoreS3(
            bucket, region=client.meta.region_name or "us-east-1", endpoint=endpoint if custom else None,
            virtual_hosted_style_request=not custom, credential_provider=Boto3CredentialProvider(boto3.Session()),
            **encryption,
            client_options={"allow_http": endpoint.startswith("http://"), "connect_timeout": timedelta(seconds=10),
                            "timeout": timedelta(seconds=120), **headers},
            retry_config={"max_retries": 0, "retry_timeout": timedelta(seconds=120),
                          "backoff": {"init_backoff": timedelta(milliseconds=100), "max_backoff": timedelta(seconds=1),
                                      "base": 2}})
        self.obstore = obstore
        self.exists = (AlreadyExistsError, PreconditionError)
        self.missing = (NotFoundError, FileNotFoundError)  # obstore raises the latter for a 404

    @classmethod
    def of(cls, bucket: str, client, options: S3Options) -> _Fast | None:
        try:
            return cls(bucket, client, options)
        except Exception as e:  # noqa: BLE001 - not installed, or a configuration it cannot serve: boto3 does it all
            logger.info("S3 requests through boto3 only: %s", e)
            return None




class S3Store:
    """Objects under `s3://bucket/prefix/`."""

    def __init__(self, bucket: str, prefix: str = "", client=None, options: S3Options | None = None):
        self.bucket = bucket
        options = options or S3Options()
        # on every request: the owner check; on every write: the encryption
        self._owner = {"ExpectedBucketOwner": options.expected_bucket_owner} if options.expected_bucket_owner else {}
        self._encryption = {"ServerSideEncryption": options.sse} if options.sse else {}
        if options.sse_kms_key_id:
            self._encryption["SSEKMSKeyId"] = options.sse_kms_key_id
        self.prefix = f"{prefix.strip('/')}/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}"
        self._client = client or boto3.client(
            "s3", config=Config(retries={"mode": "standard", "max_attempts": 5}, max_pool_connections=32)
        )
        # botocore asks for URL-encoded keys in listings unless told otherwise; LocalStack 4.13
        # then compares the encoded keys with StartAfter and continuation tokens and, for keys
        # holding "=" (all of ours), answers every page after the first, and every StartAfter
        # listing, with nothing. Archive keys are plain printable ASCII, which XML carries as it is.
        self._client.meta.events.unregister("before-parameter-build.s3.ListObjectsV2",
                                            set_list_objects_encoding_type_url)
        self._fast = _Fast.of(bucket, self._client, options) if client is None else None  # tests' clients: boto3 only

    def put(self, key: str, data: bytes, *, if_absent: bool = False) -> None:
        if self._fast is not None:
            REQUESTS.add("put")
            try:
                self._fast.obstore.put(self._fast.store, self.prefix + key, data, mode="create" if if_absent else "overwrite")
                return
            except self._fast.exists:
                raise PreconditionFailed(f"put {self.url}{key}: object already exists") from None
            except Exception as e:  # noqa: BLE001 - boto3 retries it and says what went wrong
                logger.debug("put %s%s through obstore failed, again through boto3: %s", self.url, key, e)
        extra = {"IfNoneMatch": "*"} if if_absent else {}
        self._call("put", key, self._client.put_object, Bucket=self.bucket, Key=self.prefix + key,
                   Body=data, **extra, **self._encryption, **self._owner)

    def get(self, key: str) -> bytes:
        if self._fast is not None:
            REQUESTS.add("get")
            try:
                return bytes(self._fast.obstore.get(self._fast.store, self.prefix + key).bytes())
            except self._fast.missing:
                raise NotFound(f"get {self.url}{key}: no such object") from None
            except Exception as e:  # noqa: BLE001 - boto3 retries it and says what went wrong
                logger.debug("get %s%s through obstore failed, again through boto3: %s", self.url, key, e)
        response = self._call("get", key, self._client.get_object, Bucket=self.bucket, Key=self.prefix + key,
                              **self._owner)
        return response["Body"].read()

    def list(self, prefix: str = "", start_after: str = "") -> Iterator[str]:
        for key, _ in self.list_sizes(prefix, start_after):
            yield key

    def list_sizes(self, prefix: str = "", start_after: str = "") -> Iterator[tuple[str, int]]:
        """(key, bytes) of every object under `prefix`, in key order (the listing carries sizes)."""
        paginator = self._client.get_paginator("list_objects_v2")
        after = {"StartAfter": self.prefix + start_after} if start_after else {}
        pages = paginator.paginate(Bucket=self.bucket, Prefix=self.prefix + prefix, **after, **self._owner)
        start = len(self.prefix)
        try:
            for page in pages:
                REQUESTS.add("list")
                for obj in page.get("Contents", ()):
                    yield obj["Key"][start:], obj["Size"]
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, "list", prefix, self.url) from e

    def delete(self, key: str) -> None:
        if self._fast is not None:  # an intent after each commit: as hot as the puts
            REQUESTS.add("delete")
            try:
                self._fast.obstore.delete(self._fast.store, self.prefix + key)
                return
            except Exception as e:  # noqa: BLE001 - boto3 retries it and says what went wrong
                logger.debug("delete %s%s through obstore failed, again through boto3: %s", self.url, key, e)
        self._call("delete", key, self._client.delete_object, Bucket=self.bucket, Key=self.prefix + key,
                   **self._owner)

    def delete_many(self, keys: list[str]) -> None:
        """DeleteObjects, 1,000 keys a request (one request instead of one per file)."""
        for i in range(0, len(keys), 1000):
            batch = keys[i:i + 1000]
            response = self._call("delete_many", batch[0], self._client.delete_objects, Bucket=self.bucket,
                                  Delete={"Objects": [{"Key": self.prefix + k} for k in batch], "Quiet": True},
                                  **self._owner)
            errors = [e for e in response.get("Errors", ()) if e.get("Code") not in _NOT_FOUND_CODES]
            if errors:
                first = errors[0]
                message = (f"delete {self.url}{first.get('Key', '')[len(self.prefix):]}: {first.get('Code')} "
                           f"{first.get('Message', '')} ({len(errors)} of {len(batch)} keys not deleted)")
                if first.get("Code") in _TRANSIENT_CODES:
                    raise TransientError(message)
                raise TerminalError(message)

    def _call(self, op: str, key: str, fn, **kwargs):
        REQUESTS.add(op)
        try:
            return fn(**kwargs)
        except (ClientError, BotoCoreError) as e:
            raise _translate(e, op, key, self.url) from e


def _translate(error: Exception, op: str, key: str, url: str) -> Exception:
    where = f"{op} {url}{key}"
    if isinstance(error, BotoCoreError):  # connection refused, timeouts, DNS
        return TransientError(f"S3 unreachable during {where}: {error}")
    code = error.response.get("Error", {}).get("Code", "")
    status = error.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code == "PreconditionFailed" or status == 412:
        return PreconditionFailed(f"{where}: object already exists")
    if code in _NOT_FOUND_CODES:
        return NotFound(f"{where}: no such object")
    if code in _TRANSIENT_CODES or (status or 0) >= 500:
        return TransientError(f"S3 error {code} during {where}")
    return TerminalError(f"S3 error {code} during {where}: {error.response.get('Error', {}).get('Message', '')}")
