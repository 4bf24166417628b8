"""Limits on shared resources, as the code declares them; the store enforces them at claim time."""

from .concurrency import Concurrency, ConcurrencyKey

__all__ = ["Concurrency", "ConcurrencyKey"]
