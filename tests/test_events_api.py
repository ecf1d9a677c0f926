"""`GET /mj/task/events`: the caller's task changes as server-sent events, over a real connection.

uvicorn serves the app in a thread; the worker runs on the test's threads, so each step of a task is
a change the test controls. The clock is injected: cursors are its milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from journeyd.api.app import create_app
from journeyd.clock import ManualClock
from journeyd.domain.errors import StorageUnavailable
from journeyd.domain.keys import ApiKey, hash_secret
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, Progress
from journeyd.engines.classic import ClassicEngine
from journeyd.feed import OVERLAP_MS
from journeyd.runtime import Runtime, build_runtime
from tests.conftest import make_settings
from tests.servers import serving

ALICE = "jd_alice-secret-0123456789abcdefghijklmnopqrstuv"
BOB = "jd_bob-secret-0123456789abcdefghijklmnopqrstuvwxy"
ORDER = {"SUBMITTED": 0, "IN_PROGRESS": 1, "SUCCESS": 2}


class SteppedEngine(ClassicEngine):
    """Classic pictures, with a hook after each step of an Imagine: the test waits there until the
    stream has shown the change that step made, so every change is seen on its own."""

    def __init__(self) -> None:
        super().__init__(base_size=64)
        self.after_step: Callable[[], None] = lambda: None

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
    ) -> list[Image]:
        def stepped(done: int, total: int, preview: Image | None = None) -> None:
            progress(done, total, preview)
            self.after_step()

        return super().generate(prompt, size, seeds, stepped, init_images)


@dataclass(frozen=True)
class Event:
    id: str
    name: str
    task: dict[str, Any]

    @property
    def key(self) -> tuple[str, str]:
        return self.task["id"], self.task["status"]


class Stream:
    """An open event stream, read one event at a time (a read that waits 10 s fails the test)."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.iter_lines()

    def next_frame(self) -> dict[str, str]:
        """The next event or comment, as its fields (a comment is {"comment": ...})."""
        fields: dict[str, str] = {}
        for line in self._lines:
            if not line:
                if fields:
                    return fields
                continue
            name, _, value = line.partition(":")
            fields[name or "comment"] = value.removeprefix(" ")
        raise AssertionError(f"the stream ended; last fields {fields}")

    def next(self) -> Event:
        frame = self.next_frame()
        while "comment" in frame:
            frame = self.next_frame()
        return Event(frame["id"], frame["event"], orjson.loads(frame["data"]))


class Live:
    def __init__(self, runtime: Runtime, engine: SteppedEngine, clock: ManualClock, url: str) -> None:
        self.runtime, self.engine, self.clock, self.url = runtime, engine, clock, url
        self.http = httpx.Client(base_url=url, timeout=10)

    def headers(self, secret: str) -> dict[str, str]:
        return {"mj-api-secret": secret}

    def imagine(self, secret: str, prompt: str = "a lighthouse at dusk") -> str:
        answer = self.http.post("/mj/submit/imagine", json={"prompt": prompt}, headers=self.headers(secret))
        assert answer.status_code == 200, answer.text
        return answer.json()["result"]

    def fetch(self, secret: str, number: str) -> dict[str, Any]:
        return self.http.get(f"/mj/task/{number}/fetch", headers=self.headers(secret)).json()

    @contextmanager
    def events(self, secret: str, **headers: str) -> Iterator[Stream]:
        with self.http.stream("GET", "/mj/task/events", headers={**self.headers(secret), **headers}) as response:
            assert response.status_code == 200, response.read()
            assert response.headers["content-type"].startswith("text/event-stream")
            yield Stream(response)


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Live]:
    clock, engine = ManualClock(), SteppedEngine()
    runtime = build_runtime(make_settings(tmp_path, events_poll_s=0.02), clock=clock, engine=engine, seed=5)
    runtime.store.create_key(ApiKey("ALICE", ALICE[:8], "alice", 0, 0), hash_secret(ALICE))
    runtime.store.create_key(ApiKey("BOB", BOB[:8], "bob", 0, 0), hash_secret(BOB))
    with serving(create_app(runtime, manage_runtime=False)) as url:
        live = Live(runtime, engine, clock, url)
        yield live
        live.http.close()
    runtime.store.close()


def test_a_task_streams_from_submit_through_progress_to_success_in_order(live: Live) -> None:
    with live.events(ALICE) as stream:
        number = live.imagine(ALICE)
        seen = [stream.next()]
        task_id = live.runtime.store.get_task_by_number(int(number)).id  # type: ignore[union-attr]

        def caught_up() -> None:  # the worker waits after each step until the stream shows the row as it is
            live.clock.advance(0.25)  # a step's time: the worker writes progress at most every quarter second
            version = live.runtime.store.get_task(task_id).version  # type: ignore[union-attr]
            deadline = time.monotonic() + 10
            while seen[-1].task["properties"]["version"] < version and time.monotonic() < deadline:
                time.sleep(0.002)

        live.engine.after_step = caught_up
        worker = threading.Thread(target=live.runtime.run_pending)
        worker.start()
        while seen[-1].task["status"] != "SUCCESS":
            seen.append(stream.next())
        worker.join(30)
    assert {event.task["id"] for event in seen} == {number} and {event.name for event in seen} == {"task"}
    statuses = [event.task["status"] for event in seen]
    assert statuses[0] == "SUBMITTED" and statuses[-1] == "SUCCESS"
    assert [ORDER[s] for s in statuses] == sorted(ORDER[s] for s in statuses)
    running = [int(event.task["progress"].rstrip("%")) for event in seen if event.task["status"] == "IN_PROGRESS"]
    assert len([p for p in running if p > 0]) >= 3 and running == sorted(set(running)), running  # each step once
    versions = [event.task["properties"]["version"] for event in seen]
    assert versions == sorted(set(versions))  # one event per change, none repeated
    assert [int(event.id) for event in seen] == sorted(int(event.id) for event in seen)
    assert seen[-1].task == live.fetch(ALICE, number)  # the task exactly as fetch shows it


def test_a_reconnect_with_the_last_event_id_gets_every_change_it_missed(live: Live) -> None:
    with live.events(ALICE) as stream:
        first = live.imagine(ALICE, "a red boat")
        submitted = stream.next()
        assert submitted.key == (first, "SUBMITTED")
    live.clock.advance(2 * OVERLAP_MS / 1000)  # well past the overlap: only the cursor can find what follows
    live.runtime.run_pending()  # the first task runs and succeeds while nobody listens
    second = live.imagine(ALICE, "a blue boat")
    missed = {(first, "SUCCESS"), (second, "SUBMITTED")}
    with live.events(ALICE, **{"Last-Event-ID": submitted.id}) as stream:
        resumed = [stream.next(), stream.next()]
    assert {event.key for event in resumed} == missed
    response = live.http.stream("GET", f"/mj/task/events?since={submitted.id}", headers=live.headers(ALICE))
    with response as answer:
        stream = Stream(answer)
        assert {stream.next().key, stream.next().key} == missed  # the query parameter resumes alike
    live.clock.advance(0.001)  # a change in the millisecond a stream starts may be news to it: sent
    with live.events(ALICE) as stream:  # no cursor: no backlog, the next change is the first event
        third = live.imagine(ALICE, "a green boat")
        assert stream.next().key == (third, "SUBMITTED")


def test_another_keys_tasks_never_appear(live: Live) -> None:
    with live.events(ALICE) as alices, live.events(BOB) as bobs:
        bobs_task = live.imagine(BOB)
        live.runtime.run_pending()  # submitted, running, progressing, done: all on Bob's stream
        live.clock.advance(0.001)
        alices_task = live.imagine(ALICE)
        assert alices.next().key == (alices_task, "SUBMITTED")  # Bob's changes came first, and were not sent
        bob_seen = [bobs.next()]
        while bob_seen[-1].task["status"] != "SUCCESS":
            bob_seen.append(bobs.next())
    assert {event.task["id"] for event in bob_seen} == {bobs_task}


def test_bad_cursors_and_keys_are_refused_before_any_stream(live: Live) -> None:
    for headers, params in (({"Last-Event-ID": "abc"}, {}), ({}, {"since": "-5"}), ({}, {"since": "9" * 30})):
        answer = live.http.get("/mj/task/events", headers={**live.headers(ALICE), **headers}, params=params)
        assert answer.status_code == 400 and answer.headers["content-type"] == "application/json"
        assert answer.json()["code"] == 4 and "id of an event" in answer.json()["description"], answer.text
    answer = live.http.get("/mj/task/events", headers=live.headers("jd_not-a-key"))
    assert answer.status_code == 401 and answer.json()["code"] == 4 and answer.json()["result"] is None


def test_a_quiet_stream_is_pinged_and_ends_when_the_client_goes(
    live: Live, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr("fastapi.routing._PING_INTERVAL", 0.05)  # 15 s in production
    caplog.set_level("INFO", logger="journeyd.http")
    with live.events(ALICE) as stream:
        assert stream.next_frame() == {"comment": "ping"}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and "GET /mj/task/events 200" not in caplog.text:
        time.sleep(0.01)
    assert "GET /mj/task/events 200" in caplog.text  # the server noticed, and the request ended
    assert live.http.get("/healthz").status_code == 200


def test_a_stream_whose_database_is_gone_ends_so_the_client_reconnects(
    live: Live, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def unreachable(*args: object, **kwargs: object) -> list:
        raise StorageUnavailable(
            "postgresql://db/journeyd", "the database is unreachable", "it reconnects", doing="reach"
        )

    with live.events(ALICE) as stream:
        monkeypatch.setattr(live.runtime.store, "changed_tasks", unreachable)
        monkeypatch.setattr(live.runtime.store, "change_count", lambda: None)  # its listener dropped too
        with pytest.raises(AssertionError, match="the stream ended"):
            stream.next()
    assert "the database is unreachable; it reconnects; the stream ends" in caplog.text
    assert "Traceback" not in caplog.text
