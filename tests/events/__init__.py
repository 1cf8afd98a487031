"""Tests of the observability and control layer (issue 6)."""
