"""The worker runtime: supervisor, runner, executor, completer."""

from .runner import Worker

__all__ = ["Worker"]
