"""spark-submit entry: maintenance.build_features [--env E] [--run-date D] [--since D0] [--conf K=V]."""

from lakeml.cli import submit_entry

if __name__ == "__main__":
    raise SystemExit(submit_entry("maintenance.build_features"))
