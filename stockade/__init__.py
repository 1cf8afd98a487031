"""stockade: run an autonomous AI agent in a rootless Linux sandbox behind a policy proxy."""

__version__ = "0.1.0"
