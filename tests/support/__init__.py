"""Helpers shared by the tests: time zones, ..."""
