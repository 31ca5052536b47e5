"""Adapters that plug negkit's losses into other training frameworks (e.g. sentence-transformers)."""
