"""Fixtures of the integration tier: clients and an archive prefix on the real services."""

import os

import pytest

from archiver.codec.registry import Registry
from archiver.config import KafkaSettings, RegistrySettings


@pytest.fixture
def kafka(services) -> KafkaSettings:
    return KafkaSettings.from_env(services.env)


@pytest.fixture
def registry(services):
    with Registry(RegistrySettings.from_env(services.env)) as registry:
        yield registry


@pytest.fixture
def archive_env(services, unique) -> dict:
    """Environment for `archiver run` archiving into a fresh prefix of the real bucket."""
    return os.environ | services.env | {"ARCHIVER_ARCHIVE_URL": f"s3://{services.bucket}/{unique}",
                                        "ARCHIVER_GROUP_ID": f"archiver-{unique}"}
