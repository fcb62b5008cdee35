"""`[archive]` encryption and bucket-owner settings: parsed, checked, and on the S3 requests."""

import io

import boto3
import pytest
from botocore.response import StreamingBody
from botocore.stub import ANY, Stubber

from archiver.config import load_run_settings
from archiver.errors import ConfigError
from archiver.store import S3Options, open_store
from archiver.store.s3 import S3Store

pytestmark = pytest.mark.unit

OWNER = "111122223333"


def settings(tmp_path, archive: str, env: dict | None = None):
    path = tmp_path / "archiver.toml"
    path.write_text(f'[archive]\nurl = "s3://bucket/p"\n{archive}\n')
    return load_run_settings(str(path), env or {}, needs=frozenset({"archive"}))


@pytest.mark.parametrize("given, sse", [("AES256", "AES256"), ("sse-s3", "AES256"), ("aws:kms", "aws:kms"),
                                        ("SSE-KMS", "aws:kms")])
def test_sse_takes_the_s3_names_and_the_usual_aliases(tmp_path, given, sse):
    s = settings(tmp_path, f'sse = "{given}"')
    assert s.s3_options == S3Options(sse=sse)
    assert s.masked()["archive"] == {"url": "s3://bucket/p", "sse": sse}


def test_the_environment_sets_them_too(tmp_path):
    s = settings(tmp_path, "", {"ARCHIVER_ARCHIVE_SSE": "aws:kms", "ARCHIVER_ARCHIVE_SSE_KMS_KEY_ID": "alias/archive",
                                "ARCHIVER_ARCHIVE_EXPECTED_BUCKET_OWNER": OWNER})
    assert s.s3_options == S3Options("aws:kms", "alias/archive", OWNER)


@pytest.mark.parametrize("archive, error", [
    ('sse = "DES"', r"archive.sse: expected AES256 \(SSE-S3\) or aws:kms \(SSE-KMS\), got 'DES'"),
    ('sse_kms_key_id = "k"', "archive.sse_kms_key_id is set but archive.sse is not aws:kms"),
    ('sse = "AES256"\nsse_kms_key_id = "k"', "archive.sse_kms_key_id is set but archive.sse is not aws:kms"),
    ('expected_bucket_owner = "me"', "archive.expected_bucket_owner: expected a 12-digit AWS account id, got 'me'"),
    ('encryption = "AES256"', "encryption"),
])
def test_bad_values_are_one_line_naming_the_key(tmp_path, archive, error):
    with pytest.raises(ConfigError, match=error):
        settings(tmp_path, archive)


def test_a_file_archive_refuses_s3_options(tmp_path):
    with pytest.raises(ConfigError, match="apply to s3:// archives only"):
        open_store(f"file://{tmp_path}", S3Options(sse="AES256"))
    open_store(f"file://{tmp_path}", S3Options())  # nothing asked: fine


def stubbed(options: S3Options) -> tuple[S3Store, Stubber]:
    client = boto3.client("s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b",
                          endpoint_url="http://127.0.0.1:1")
    return S3Store("bucket", "p", client=client, options=options), Stubber(client)


def test_every_request_names_the_owner_and_every_write_the_encryption():
    store, stub = stubbed(S3Options("aws:kms", "alias/archive", OWNER))
    owner = {"ExpectedBucketOwner": OWNER}
    stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": "p/k", "Body": ANY, "ServerSideEncryption": "aws:kms",
                                         "SSEKMSKeyId": "alias/archive", **owner})
    stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": "p/k", "Body": ANY, "IfNoneMatch": "*",
                                         "ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/archive", **owner})
    stub.add_response("get_object", {"Body": StreamingBody(io.BytesIO(b"x"), 1)}, {"Bucket": "bucket", "Key": "p/k", **owner})
    stub.add_response("list_objects_v2", {"Contents": [{"Key": "p/k", "Size": 1}]},
                      {"Bucket": "bucket", "Prefix": "p/", **owner})
    stub.add_response("delete_object", {}, {"Bucket": "bucket", "Key": "p/k", **owner})
    stub.add_response("delete_objects", {}, {"Bucket": "bucket", "Delete": ANY, **owner})
    with stub:
        store.put("k", b"x")
        store.put("k", b"x", if_absent=True)
        assert store.get("k") == b"x"
        assert list(store.list_sizes()) == [("k", 1)]
        store.delete("k")
        store.delete_many(["k"])
    stub.assert_no_pending_responses()


def test_without_options_requests_carry_none_of_them():
    store, stub = stubbed(S3Options())
    stub.add_response("put_object", {}, {"Bucket": "bucket", "Key": "p/k", "Body": ANY})
    stub.add_response("delete_object", {}, {"Bucket": "bucket", "Key": "p/k"})
    with stub:
        store.put("k", b"x")
        store.delete("k")
    stub.assert_no_pending_responses()


def test_a_wrong_owner_is_a_terminal_error_naming_the_request():
    from archiver.errors import TerminalError

    store, stub = stubbed(S3Options(expected_bucket_owner=OWNER))
    stub.add_client_error("put_object", "AccessDenied", "Access Denied", 403)
    with stub, pytest.raises(TerminalError, match=r"S3 error AccessDenied during put s3://bucket/p/k: Access Denied"):
        store.put("k", b"x")
