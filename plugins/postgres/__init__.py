"""The PostgreSQL protocol plugin: codec, SCRAM client, adapter, events."""
