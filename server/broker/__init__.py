"""Broker backends that carry room events between instances (memory today; Redis later)."""
