"""Supervised applications: the supervisor, one child's lifecycle, the line rules."""
