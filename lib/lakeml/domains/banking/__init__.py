"""Banking domain: card transactions and chargebacks (generator, ingest, features, fraud classifier)."""
