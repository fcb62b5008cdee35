"""Kafka consumers, producers and admin clients: the only importers of confluent_kafka's client."""
