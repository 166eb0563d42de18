"""spark-submit entry: commerce.train_recommender [--env E] [--run-date D] [--conf K=V]."""

from lakeml.cli import submit_entry

if __name__ == "__main__":
    raise SystemExit(submit_entry("commerce.train_recommender"))
