"""One sub-package per business domain; each may define a ``jobs`` module that registers its jobs."""
