"""The store announces each status change it commits, once, with where the task came from and since when.

Metrics and task logs are built on these announcements, so a move raced for by several callers
must be heard once, and a move that rolled back never.
"""

from __future__ import annotations

import itertools
import threading
from pathlib import Path

import pytest

from journeyd.domain.errors import PaymentRequired
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.prompt import parse_prompt
from journeyd.domain.task import Task
from journeyd.store.base import Transition
from journeyd.store.sqlite import SqliteStore

T0 = 1_767_225_600_000
_numbers = itertools.count(1)


class Heard(list[Transition]):
    def moves(self) -> list[tuple[str, str | None, str, int | None, str | None]]:
        return [(m.task.id, m.source.value if m.source else None, m.task.status.value, m.since, m.worker) for m in self]


@pytest.fixture
def heard() -> Heard:
    return Heard()


@pytest.fixture
def store(tmp_path: Path, heard: Heard) -> SqliteStore:
    return SqliteStore(tmp_path / "db.sqlite3", on_transition=heard.append)


def task(task_id: str, now: int, *, status: Status = Status.SUBMITTED) -> Task:
    return Task(
        id=task_id,
        owner=None,
        action=Action.INPAINT if status is Status.MODAL else Action.IMAGINE,
        op=Op.VARY_REGION if status is Status.MODAL else Op.GENERATE,
        status=status,
        prompt="a pond",
        spec=parse_prompt("a pond"),
        speed=Speed.FAST,
        seed=1,
        price_name="imagine",
        created_at=now,
        updated_at=now,
        number=next(_numbers),
        modal_deadline=now + 60_000 if status is Status.MODAL else None,
    )


def test_a_task_is_heard_from_creation_to_its_end(store: SqliteStore, heard: Heard) -> None:
    store.insert_task(task("A", T0))
    claimed = store.claim_next("w1", T0 + 4_000, 60_000)
    assert claimed is not None
    store.finish("A", "w1", Status.SUCCESS, T0 + 9_000)
    assert heard.moves() == [
        ("A", None, "submitted", None, None),
        ("A", "submitted", "in_progress", T0, "w1"),
        ("A", "in_progress", "success", T0 + 4_000, "w1"),
    ]
    assert heard[-1].task.updated_at == T0 + 9_000 and heard[-1].task.finished_at == T0 + 9_000


def test_a_requeued_task_waits_from_its_requeue(store: SqliteStore, heard: Heard) -> None:
    store.insert_task(task("A", T0))
    store.claim_next("dead", T0 + 1_000, 10_000)
    assert store.reclaim(T0 + 20_000, max_attempts=3).requeued == ["A"]
    store.claim_batch("w2", T0 + 25_000, 10_000, limit=4, key=lambda t: "same")
    store.finish("A", "w2", Status.FAILURE, T0 + 26_000, fail_reason="boom")
    assert heard.moves()[1:] == [
        ("A", "submitted", "in_progress", T0, "dead"),
        ("A", "in_progress", "submitted", T0 + 1_000, "dead"),
        ("A", "submitted", "in_progress", T0 + 20_000, "w2"),
        ("A", "in_progress", "failure", None, "w2"),  # a second run's own start is not kept
    ]


def test_modal_tasks_are_heard_when_submitted_or_when_their_window_closes(store: SqliteStore, heard: Heard) -> None:
    store.insert_task(task("M1", T0, status=Status.MODAL))
    store.insert_task(task("M2", T0 + 1, status=Status.MODAL))
    spec = parse_prompt("a lily")
    assert store.submit_modal("M1", T0 + 30_000, prompt="a lily", spec=spec, args={}, charge=None) is not None
    assert store.submit_modal("M1", T0 + 31_000, prompt="a lily", spec=spec, args={}, charge=None) is None
    assert store.expire_modals(T0 + 120_000, "closed") == ["M2"]
    assert heard.moves()[2:] == [
        ("M1", "modal", "submitted", T0, None),
        ("M2", "modal", "cancelled", T0 + 1, None),
    ]


def test_a_cancel_is_heard_once_however_many_callers_race_for_it(store: SqliteStore, heard: Heard) -> None:
    store.insert_task(task("A", T0))
    start = threading.Barrier(8)

    def cancel() -> None:
        start.wait()
        store.cancel("A", T0 + 2_000, "cancelled by request")

    threads = [threading.Thread(target=cancel) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert heard.moves()[1:] == [("A", "submitted", "cancelled", T0, None)]


def test_a_running_task_asked_to_cancel_is_heard_when_its_worker_stops(store: SqliteStore, heard: Heard) -> None:
    store.insert_task(task("A", T0))
    store.claim_next("w", T0 + 1_000, 60_000)
    assert store.cancel("A", T0 + 2_000, "cancelled by request").status is Status.IN_PROGRESS  # type: ignore[union-attr]
    assert len(heard) == 2
    store.finish("A", "w", Status.CANCELLED, T0 + 3_000)
    assert heard.moves()[-1] == ("A", "in_progress", "cancelled", T0 + 1_000, "w")


def test_a_refused_insert_is_never_heard(store: SqliteStore, heard: Heard) -> None:
    store.create_key(ApiKey("k", "jd_abcde", "", 1, T0), "hash")
    with pytest.raises(PaymentRequired):
        store.insert_task(task("A", T0), [Charge("k", "submit", "midjourney@imagine", 5)])
    assert heard == [] and store.get_task("A") is None


def test_moves_of_a_transaction_that_fails_halfway_are_never_heard(
    store: SqliteStore, heard: Heard, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.insert_task(task("M1", T0, status=Status.MODAL))
    store.insert_task(task("M2", T0, status=Status.MODAL))
    heard.clear()
    emitted = []

    def disk_fills(conn: object, task_id: str, now: int) -> None:  # the second task's write fails
        emitted.append(task_id)
        if len(emitted) == 2:
            raise OSError(28, "No space left on device")

    monkeypatch.setattr(store, "_emit", disk_fills)
    with pytest.raises(OSError):
        store.expire_modals(T0 + 120_000, "closed")
    assert heard == []  # the first task's move was noted, then rolled back with the rest
    assert {store.get_task(i).status for i in ("M1", "M2")} == {Status.MODAL}  # type: ignore[union-attr]


def test_an_observer_that_fails_does_not_undo_the_move(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    def broken(move: Transition) -> None:
        raise RuntimeError("observer down")

    store = SqliteStore(tmp_path / "db.sqlite3", on_transition=broken)
    store.insert_task(task("A", T0))
    assert store.claim_next("w", T0, 60_000) is not None
    assert store.get_task("A").status is Status.IN_PROGRESS  # type: ignore[union-attr]
    assert "observer down" in caplog.text
