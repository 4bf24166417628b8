"""Seeing the machine: the worker registry, process titles, metrics."""
