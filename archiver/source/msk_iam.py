"""OAUTHBEARER tokens for Amazon MSK's IAM access control (`[kafka] oauthbearer_provider = "aws_msk_iam"`).

librdkafka asks for a token through `oauth_cb` when it connects and again before the token
expires; the token is a SigV4-presigned `kafka-cluster:Connect` request, signed locally with the
credentials of the standard AWS chain (environment, profile, web identity / IRSA, instance role)
by AWS's `aws-msk-iam-sasl-signer-python` (the optional extra `archiver[msk-iam]`). Nothing is
sent to AWS to make it.
"""

from __future__ import annotations

from collections.abc import Callable

from archiver.errors import ConfigError


def token_callback(region: str | None) -> Callable[[str], tuple[str, float]]:
    """librdkafka's `oauth_cb`: (token, expiry in epoch seconds) for MSK in `region` (None: the
    AWS chain's region).

    Raises:
        ConfigError: the signer is not installed, or no region is configured anywhere.
    """
    try:
        from aws_msk_iam_sasl_signer import MSKAuthTokenProvider
    except ImportError:
        raise ConfigError("kafka.oauthbearer_provider = aws_msk_iam needs the msk-iam extra "
                          "(pip install 'archiver[msk-iam]')") from None
    if not region:
        import boto3

        region = boto3.Session().region_name
    if not region:
        raise ConfigError("kafka.oauthbearer_provider = aws_msk_iam: no AWS region (set kafka.aws_region or "
                          "AWS_REGION)")

    def callback(_config: str) -> tuple[str, float]:
        token, expiry_ms = MSKAuthTokenProvider.generate_auth_token(region)
        return token, expiry_ms / 1000

    return callback
