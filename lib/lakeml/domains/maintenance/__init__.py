"""Maintenance domain: machine telemetry and maintenance logs (generator, ingest, features, failure predictor)."""
