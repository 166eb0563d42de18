"""Maintenance domain: machine telemetry and maintenance logs (ingest, features, failure predictor)."""
