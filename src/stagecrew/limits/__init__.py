"""Limits on shared resources, as the code declares them; the store enforces them at claim time."""

from .concurrency import Concurrency, ConcurrencyKey
from .rate import RateKey, RateLimit

__all__ = ["Concurrency", "ConcurrencyKey", "RateKey", "RateLimit"]
