"""Commerce domain: shop clickstream (ingest, features, ALS recommender)."""
