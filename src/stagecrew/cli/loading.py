"""Find the user's `App` from `module:attr`."""

from __future__ import annotations

import importlib
import os
import sys

from ..app import App
from ..errors import ConfigurationError


def load_app(ref: str | None) -> App:
    """Import `package.module:attr` (attr defaults to `app`) and return the App."""
    ref = ref or os.environ.get("STAGECREW_APP")
    if not ref:
        raise ConfigurationError(
            "no app given: pass --app module:attr (for example myapp.jobs:app) or set STAGECREW_APP"
        )
    module_name, _, attr = ref.partition(":")
    if os.getcwd() not in sys.path and "" not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ConfigurationError(
            f"cannot import {module_name!r} for the app {ref!r}: {type(exc).__name__}: {exc}"
        ) from exc
    try:
        app = getattr(module, attr or "app")
    except AttributeError:
        raise ConfigurationError(
            f"module {module_name!r} has no attribute {attr or 'app'!r}"
        ) from None
    if not isinstance(app, App):
        raise ConfigurationError(f"{ref!r} is a {type(app).__name__}, not a stagecrew App")
    return app
