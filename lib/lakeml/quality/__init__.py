"""Data quality: the ops tables (quarantine, job runs, check results) and declarative checks."""
