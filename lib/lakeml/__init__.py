"""lakeml: Spark + Delta Lake lakehouse jobs and MLlib models."""

__version__ = "0.1.0"
