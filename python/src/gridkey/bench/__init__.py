"""Benchmark support: baseline group-key schemes GridKey is compared against (never used by the protocol)."""
