"""Payload signing (`App(signing_key=...)`) on every engine: signed jobs run, forged ones never do.

A forged job is written with the backend's own `enqueue`, bypassing the producer, as
someone with write access to the store would. Each test gets its own store: a memory
store, a SQLite file, a PostgreSQL schema or a Redis key prefix.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from stagecrew import App, ErrorKind, JobState
from stagecrew.errors import ConfigurationError
from stagecrew.job import NewJob
from stagecrew.serialization import SIGNED_PREFIX, PayloadSigner
from stagecrew.worker.runner import Worker
from tests.support.stores import fresh_store

KEY = b"k" * 32
OLD_KEY = "an old key of at least 16 bytes"
OTHER_KEY = b"o" * 32

MakeApp = Callable[..., App]


@pytest.fixture(params=["memory", "sqlite", "postgres", "redis"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    with fresh_store(request.param, tmp_path) as url:
        yield url


@pytest.fixture
def ran() -> list[Any]:
    return []


@pytest.fixture
def make_app(store_url: str, ran: list[Any]) -> Iterator[MakeApp]:
    """Apps on one store (the memory store shared through the first app's backend)."""
    made: list[App] = []

    def make(**options: Any) -> App:
        app = App(store_url, **options)
        if made and store_url == "memory://":
            app.use_backend(made[0].backend)

        @app.task(max_attempts=5)
        def probe(token: str) -> str:
            ran.append(token)
            return token

        @app.task
        def other(token: str) -> str:
            ran.append(("other", token))
            return token

        made.append(app)
        return app

    yield make
    for app in reversed(made):
        if store_url != "memory://" or app is made[0]:
            app.close()


def drain(app: App) -> None:
    asyncio.run(asyncio.wait_for(Worker(app, concurrency=2).drain(), 30))


def assert_rejected(app: App, job_id: int) -> None:
    job = app.jobs.get(job_id)
    assert job.state is JobState.DEAD, (job.state, job.errors)
    assert job.attempt == 1 and len(job.errors) == 1
    assert job.errors[0].kind is ErrorKind.UNRUNNABLE
    assert "signature invalid" in job.errors[0].message, job.errors[0].message


def inject(app: App, task: str, payload: str) -> int:
    """Write a job straight into the store, past the producer and its key."""
    return app.backend.enqueue([NewJob(task=task, payload=payload)])[0].id


def test_signed_job_round_trips(make_app: MakeApp, ran: list[Any]) -> None:
    app = make_app(signing_key=KEY)
    handle = app.tasks["probe"].enqueue("hello")
    stored = handle.get()
    assert stored.payload.startswith(SIGNED_PREFIX)
    assert stored.args == ["hello"]  # inspection reads a signed payload
    drain(app)
    assert handle.get().state is JobState.SUCCEEDED
    assert ran == ["hello"]


def test_tampered_jobs_are_dead_lettered_unrun_and_good_ones_still_run(
    make_app: MakeApp, ran: list[Any]
) -> None:
    app = make_app(signing_key=KEY)
    genuine = app.tasks["probe"].enqueue("genuine")
    app.jobs.cancel(genuine.id)
    signed = genuine.get().payload
    header = len(SIGNED_PREFIX) + 65  # the prefix, 64 hex digits and ':'
    forged = signed[:header] + signed[header:].replace("genuine", "forged!")
    changed_args = inject(app, "probe", forged)
    flipped = "0" if signed[len(SIGNED_PREFIX)] != "0" else "1"
    changed_signature = inject(
        app, "probe", SIGNED_PREFIX + flipped + signed[len(SIGNED_PREFIX) + 1 :]
    )
    moved_task = inject(app, "other", signed)
    malformed = inject(app, "probe", SIGNED_PREFIX + "zz" + signed[len(SIGNED_PREFIX) + 2 :])
    good = app.tasks["probe"].enqueue("good")
    drain(app)
    for job_id in (changed_args, changed_signature, moved_task, malformed):
        assert_rejected(app, job_id)
    assert good.get().state is JobState.SUCCEEDED
    assert ran == ["good"]


def test_unsigned_job_is_rejected_when_a_key_is_set(make_app: MakeApp, ran: list[Any]) -> None:
    producer = make_app()  # no key
    worker = make_app(signing_key=KEY)
    plain = producer.tasks["probe"].enqueue("plain")
    assert not plain.get().payload.startswith(SIGNED_PREFIX)
    injected = inject(worker, "probe", '{"args":["injected"],"kwargs":{}}')
    drain(worker)
    assert_rejected(worker, plain.id)
    assert_rejected(worker, injected)
    assert "not signed" in worker.jobs.get(injected).errors[0].message
    assert ran == []


def test_job_signed_with_an_old_key_runs_after_rotation(make_app: MakeApp, ran: list[Any]) -> None:
    before = make_app(signing_key=OLD_KEY)
    after = make_app(signing_key=[KEY, OLD_KEY])  # the new key signs, both verify
    old = before.tasks["probe"].enqueue("signed before")
    new = after.tasks["probe"].enqueue("signed after")
    drain(after)
    assert old.get().state is JobState.SUCCEEDED
    assert new.get().state is JobState.SUCCEEDED
    assert sorted(ran) == ["signed after", "signed before"]
    # once the old key is dropped, only jobs signed with the new one verify
    only_new = make_app(signing_key=[KEY])
    again = after.tasks["probe"].enqueue("new key")
    stale = before.tasks["probe"].enqueue("old key")
    drain(only_new)
    assert again.get().state is JobState.SUCCEEDED
    assert_rejected(only_new, stale.id)


def test_job_signed_with_another_key_is_rejected(make_app: MakeApp, ran: list[Any]) -> None:
    producer = make_app(signing_key=OTHER_KEY)
    worker = make_app(signing_key=KEY)
    job = producer.tasks["probe"].enqueue("elsewhere")
    drain(worker)
    assert_rejected(worker, job.id)
    assert ran == []


def test_worker_without_a_key_runs_signed_jobs(make_app: MakeApp, ran: list[Any]) -> None:
    """A keyless app checks nothing, so it runs signed and unsigned jobs alike.

    That is what lets signing be switched on without dead-lettering anything:
    give producers the key first, then workers.
    """
    producer = make_app(signing_key=KEY)
    worker = make_app()
    job = producer.tasks["probe"].enqueue("signed")
    drain(worker)
    assert job.get().state is JobState.SUCCEEDED
    assert ran == ["signed"]


# -- configuration (no store needed) ------------------------------------------------------------
def test_keys_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STAGECREW_SIGNING_KEYS", f" {KEY.decode()} , {OLD_KEY},")
    from_env = App("memory://")
    assert repr(from_env._signer) == "<PayloadSigner keys=2>"
    explicit = App("memory://", signing_key=OTHER_KEY)  # an explicit key wins
    assert repr(explicit._signer) == "<PayloadSigner keys=1>"
    monkeypatch.setenv("STAGECREW_SIGNING_KEYS", "")
    assert App("memory://")._signer is None


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("short", "at least 16 bytes"),
        ([], "at least one signing key"),
        ([KEY, 42], "bytes or str, not int"),
    ],
)
def test_unusable_keys_are_refused(key: Any, message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        App("memory://", signing_key=key)


def test_signature_covers_the_task_name() -> None:
    signer = PayloadSigner([KEY])
    payload = '{"args":[],"kwargs":{}}'
    assert signer.verify("a", signer.sign("a", payload)) == payload
    # "a" + "1:..." and "a1" + ":..." must not collide: the name's length is signed too
    assert signer.sign("a", "1" + payload) != signer.sign("a1", payload)
    assert repr(signer) == "<PayloadSigner keys=1>"
    assert KEY.decode() not in repr(signer)
