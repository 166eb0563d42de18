"""Banking domain: card transactions and chargebacks (ingest, features, fraud classifier)."""
