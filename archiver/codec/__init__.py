"""Avro decoding and encoding, the Confluent wire format and the Schema Registry client."""
