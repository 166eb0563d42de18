"""spark-submit entry: banking.train_fraud [--env E] [--run-date D] [--conf K=V]."""

from lakeml.cli import submit_entry

if __name__ == "__main__":
    raise SystemExit(submit_entry("banking.train_fraud"))
