"""Limits on shared resources, as the code declares them; the store enforces them at claim time."""

from .circuit import Circuit
from .concurrency import Concurrency, ConcurrencyKey
from .rate import RateKey, RateLimit

__all__ = ["Circuit", "Concurrency", "ConcurrencyKey", "RateKey", "RateLimit"]
