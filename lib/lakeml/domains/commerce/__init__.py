"""Commerce domain: shop clickstream (generator, ingest, features, ALS recommender)."""
