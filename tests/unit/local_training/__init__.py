"""Unit tests for the local training provider (need the `train` extra)."""
