"""Alert rules from a small TOML file, for teams that keep them out of the code.

    # alerts.toml
    webhook = "https://hooks.example.com/stagecrew"   # every alert's, unless it names its own
                                                      # (default: STAGECREW_ALERT_WEBHOOK)

    [alert.email-backlog]
    rule = "depth > 1000 for 5m"
    queue = "email"

    [alert.failing]
    rule = "error_rate > 5% for 10m"
    window = "10m"

    [alert.no-workers]
    rule = "no live workers"

`stagecrew worker --alerts alerts.toml` (or `STAGECREW_ALERTS=alerts.toml`) adds them to the
rules the app declares with `app.alert(...)`.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any

from ..durations import parse_duration
from ..errors import ConfigurationError
from .alerts import DEFAULT_WINDOW, AlertRule, parse_rule

ALERTS_VARIABLE = "STAGECREW_ALERTS"
"""Names a file of alert rules every worker process adds to its app's."""
KEYS = frozenset({"rule", "queue", "window", "webhook"})


def rules_from_file(path: str | Path) -> list[AlertRule]:
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigurationError(f"cannot read the alert rules in {path}: {exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{path} is not valid TOML: {exc}") from None
    default_hook = data.pop("webhook", None) or os.environ.get("STAGECREW_ALERT_WEBHOOK") or None
    alerts = data.pop("alert", {})
    if data:
        raise ConfigurationError(f"{path}: unknown settings {sorted(data)} (webhook, [alert.NAME])")
    if not isinstance(alerts, dict):
        raise ConfigurationError(f"{path}: alerts are tables: [alert.NAME] with rule = '...'")
    return [_rule(path, name, table, default_hook) for name, table in alerts.items()]


def _rule(path: str | Path, name: str, table: Any, default_hook: Any) -> AlertRule:
    where = f"{path}: alert {name!r}"
    if not isinstance(table, dict) or "rule" not in table:
        raise ConfigurationError(f"{where} needs a rule = '...'")
    unknown = set(table) - KEYS
    if unknown:
        raise ConfigurationError(f"{where}: unknown keys {sorted(unknown)} (one of {sorted(KEYS)})")
    window: Any = table.get("window", DEFAULT_WINDOW)
    if isinstance(window, str):
        try:
            window = parse_duration(window)
        except ValueError as exc:
            raise ConfigurationError(f"{where}: {exc}") from None
    try:
        return parse_rule(
            name,
            table["rule"],
            queue=table.get("queue"),
            window=window,
            webhook=table.get("webhook", default_hook),
        )
    except ConfigurationError as exc:
        raise ConfigurationError(f"{path}: {exc}") from None
