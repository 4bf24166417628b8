"""Fairness, unique and concurrency keys are checked alike, each with its own limit and wording."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from stagecrew.backends.caps import check_concurrency_key
from stagecrew.backends.fairness import check_fairness_key
from stagecrew.backends.unique import check_unique_key

Check = Callable[[object, str], str | None]

CASES = [
    pytest.param(7, "{w} must be a str, not int 7", id="not-a-str"),
    pytest.param("", "{w} must not be empty (give None for no {what})", id="empty"),
    pytest.param("bad \udcff", "{w} must be valid UTF-8 text, got 'bad \\udcff'", id="not-utf8"),
    pytest.param(
        "é" * 300, "{w} is 600 bytes of UTF-8; at most {limit} are allowed", id="too-long"
    ),
    pytest.param("a\x00b", "{w} must not contain NUL characters, got 'a\\x00b'", id="nul"),
]


@pytest.mark.parametrize(
    ("check", "what", "limit"),
    [
        (check_fairness_key, "fairness key", 200),
        (check_unique_key, "unique key", 200),
        (check_concurrency_key, "concurrency key", 200),
    ],
)
@pytest.mark.parametrize(("key", "message"), CASES)
def test_a_bad_key_is_refused_with_a_message_that_says_why(
    check: Check, what: str, limit: int, key: object, message: str
) -> None:
    with pytest.raises(ValueError) as refused:
        check(key, "the key")
    assert str(refused.value) == message.format(w="the key", what=what, limit=limit)


@pytest.mark.parametrize("check", [check_fairness_key, check_unique_key, check_concurrency_key])
def test_a_usable_key_or_none_is_given_back(check: Check) -> None:
    assert check(None, "k") is None
    assert check("é" * 100, "k") == "é" * 100


def test_the_default_place_names_the_option() -> None:
    with pytest.raises(ValueError, match=r"^fairness_key must not be empty"):
        check_fairness_key("")
    with pytest.raises(ValueError, match=r"^unique_key must not be empty"):
        check_unique_key("")
