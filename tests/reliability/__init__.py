"""Hostile input, faults and load: what the platform withstands (issue 7)."""
