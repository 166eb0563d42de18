"""Synthetic source data for demos, tests and benchmarks (``lakeml generate``); nothing in production runs
imports it.

:mod:`~lakeml.synthetic.core` holds the shared draws, formats and file writing, one module per domain
builds that domain's feeds, and :mod:`~lakeml.synthetic.landing` runs them all into a landing zone.
"""
