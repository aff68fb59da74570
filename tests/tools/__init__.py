"""Tests of the tools around the product: the harness's webhook receiver and
the bench's report (no Salt daemons; seconds)."""
