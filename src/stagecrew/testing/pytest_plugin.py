"""pytest fixtures, registered automatically when stagecrew is installed.

`stagecrew_kit` needs to know your app: override the `stagecrew_app` fixture
in your conftest.py (`return myapp.jobs.app`), or set STAGECREW_APP.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from ..app import App
from ..cli.loading import load_app
from ..clock import FakeClock
from ..errors import ConfigurationError
from .kit import TestKit


@pytest.fixture
def stagecrew_app() -> App:
    """The app under test: STAGECREW_APP's, unless a conftest.py overrides this fixture."""
    if not os.environ.get("STAGECREW_APP"):
        raise ConfigurationError(
            "the stagecrew_kit fixture needs your app: define a `stagecrew_app` fixture in "
            "your conftest.py that returns it (`return myapp.jobs.app`), or set STAGECREW_APP "
            "to module:attr"
        )
    return load_app(None)


@pytest.fixture
def fake_clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def stagecrew_kit(stagecrew_app: App, fake_clock: FakeClock) -> Iterator[TestKit]:
    with TestKit(stagecrew_app, clock=fake_clock) as kit:
        yield kit
