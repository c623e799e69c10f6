"""The blackboard: events on a JetStream stream, a DuckDB projection, and the service that decides."""
