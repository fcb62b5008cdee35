"""LocalStack ready hook: create the archive bucket named by ARCHIVER_BUCKET (default "archiver").

infra/services copies this folder into LocalStack's FILESYSTEM_ROOT; LocalStack runs it in its
own interpreter once S3 answers, and reports it under /_localstack/init/ready.
"""

import os

import boto3

bucket = os.environ.get("ARCHIVER_BUCKET", "archiver")
port = os.environ["ARCHIVER_S3_PORT"]
s3 = boto3.client(
    "s3",
    endpoint_url=f"http://127.0.0.1:{port}",
    aws_access_key_id="test",
    aws_secret_access_key="test",
    region_name="us-east-1",
)
try:
    s3.create_bucket(Bucket=bucket)
except s3.exceptions.BucketAlreadyOwnedByYou:
    pass
