"""archiver: a durable, queryable, replayable copy of Kafka topics in S3."""

__version__ = "0.1.0"
