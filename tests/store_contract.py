"""The store's promises, as one suite every adapter runs (SQLite today; PostgreSQL must pass it too).

The classes here have no `Test` prefix, so pytest collects them only where an adapter's test module
combines them with a `store` fixture (see tests/test_store_sqlite.py). Races are real: threads
released together by a barrier, each on its own connection, as two API nodes or workers would be.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from journeyd.domain.idempotency import TTL_MS, Idempotency
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.prompt import parse_prompt
from journeyd.domain.task import Task
from journeyd.store.base import IdempotencyKeyTaken, QueueFull, TaskStore

NOW = 1_767_225_600_000
KEY = "KEY1"


def make_task(
    number: int, *, owner: str | None = KEY, status: Status = Status.SUBMITTED, now: int = NOW, **fields: Any
) -> Task:
    """A task row with the id and number `number` (26 characters of ULID alphabet)."""
    return Task(
        id=f"{number:026d}",
        number=NOW * 1000 + number,
        owner=owner,
        action=Action.IMAGINE,
        op=Op.GENERATE,
        status=status,
        prompt="a lighthouse",
        spec=parse_prompt("a lighthouse"),
        speed=Speed.FAST,
        seed=number,
        price_name="imagine",
        created_at=now,
        updated_at=now,
        modal_deadline=now + 60_000 if status is Status.MODAL else None,
        **fields,
    )


def race(count: int, attempt: Callable[[int], Any]) -> list[Any]:
    """Run `attempt(i)` on `count` threads released at once; each one's result, or the exception it raised."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = attempt(i)
        except Exception as error:
            results[i] = error

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


def balance(store: TaskStore) -> int:
    key = store.get_key(KEY)
    assert key is not None
    return key.balance


class StoreContract:
    """Override `store` with a fresh, empty store of the adapter under test."""

    @pytest.fixture
    def store(self) -> Iterator[TaskStore]:
        raise NotImplementedError

    @pytest.fixture
    def keyed(self, store: TaskStore) -> TaskStore:
        store.create_key(ApiKey(KEY, "jd_aaaaa", "test", 100, NOW), "hash-of-key-1")
        return store

    # --- the per-key queue cap ---------------------------------------------------------------------
    def test_concurrent_submits_never_overrun_the_queue_cap(self, keyed: TaskStore) -> None:
        charge = Charge(KEY, "submit", "midjourney@imagine", 2)
        results = race(40, lambda i: keyed.insert_task(make_task(i + 1), [charge], max_queued=5))
        admitted = [r for r in results if r is None]
        refused = [r for r in results if isinstance(r, QueueFull)]
        assert len(admitted) == 5 and len(refused) == 35, results
        assert keyed.queued_count(KEY) == 5
        assert balance(keyed) == 100 - 5 * 2  # a refused submit leaves no charge
        assert len([e for e in keyed.ledger(key_id=KEY) if e.kind == "charge"]) == 5

    def test_the_cap_counts_running_tasks_and_ignores_modal_ones(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1), max_queued=2)
        assert keyed.claim_next("w1", NOW, 60_000) is not None  # running still counts
        keyed.insert_task(make_task(2, status=Status.MODAL), max_queued=2)  # waiting for a mask: not queued
        keyed.insert_task(make_task(3), max_queued=2)
        with pytest.raises(QueueFull):
            keyed.insert_task(make_task(4), max_queued=2)
        assert keyed.get_task(f"{4:026d}") is None
        with pytest.raises(QueueFull):  # a modal would queue the MODAL task: capped too, and it stays MODAL
            keyed.submit_modal(f"{2:026d}", NOW, prompt="p", spec=parse_prompt("p"), args={}, charge=None, max_queued=2)
        assert keyed.get_task(f"{2:026d}").status is Status.MODAL  # type: ignore[union-attr]

    # --- modal ---------------------------------------------------------------------------------------
    def test_concurrent_modals_on_one_task_have_exactly_one_winner(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1, status=Status.MODAL))
        charge = Charge(KEY, "modal", "midjourney@modal", 3)
        results = race(
            8,
            lambda i: keyed.submit_modal(
                f"{1:026d}", NOW + 1, prompt=f"p{i}", spec=parse_prompt(f"p{i}"), args={"mask": f"m{i}"}, charge=charge
            ),
        )
        winners = [r for r in results if isinstance(r, Task)]
        assert len(winners) == 1 and results.count(None) == 7, results
        stored = keyed.get_task(f"{1:026d}")
        assert stored is not None and stored.status is Status.SUBMITTED
        assert stored.args == winners[0].args and stored.prompt == winners[0].prompt  # the winner's mask, not a loser's
        assert balance(keyed) == 100 - 3

    def test_a_modal_after_the_window_closed_loses(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1, status=Status.MODAL))
        late = NOW + 60_000
        assert keyed.submit_modal(f"{1:026d}", late, prompt="p", spec=parse_prompt("p"), args={}, charge=None) is None

    # --- claims --------------------------------------------------------------------------------------
    def test_concurrent_workers_never_claim_one_task_twice(self, store: TaskStore) -> None:
        for i in range(30):
            store.insert_task(make_task(i + 1, owner=None))

        def drain(worker: int) -> list[str]:
            claimed = []
            while (task := store.claim_next(f"w{worker}", NOW, 60_000)) is not None:
                claimed.append(task.id)
            return claimed

        results = race(8, drain)
        claimed = [task_id for result in results for task_id in result]
        assert sorted(claimed) == sorted(f"{i + 1:026d}" for i in range(30))
        assert all(store.get_task(task_id).attempts == 1 for task_id in claimed)  # type: ignore[union-attr]

    def test_get_tasks_finds_many_by_id_and_number_in_one_call(self, store: TaskStore) -> None:
        for i in range(1200):
            store.insert_task(make_task(i + 1, owner=None))
        ids = [f"{i:026d}" for i in range(1, 1200, 2)]
        numbers = [NOW * 1000 + i for i in range(2, 1201, 2)] + [1, 2**62]  # two unknown ones
        found = store.get_tasks(ids=[*ids, "X" * 26], numbers=numbers)
        assert sorted(task.id for task in found) == [f"{i:026d}" for i in range(1, 1201)]

    # --- idempotency keys ----------------------------------------------------------------------------
    def test_an_idempotency_key_is_written_with_its_submit_or_not_at_all(self, keyed: TaskStore) -> None:
        first = Idempotency("retry-1", "fp-a")
        charge = Charge(KEY, "submit", "midjourney@imagine", 2)
        keyed.insert_task(make_task(1), [charge], idempotency=first)
        with pytest.raises(IdempotencyKeyTaken):
            keyed.insert_task(make_task(2), [charge], idempotency=Idempotency("retry-1", "fp-a"))
        assert keyed.get_task(f"{2:026d}") is None and balance(keyed) == 98  # the loser wrote nothing
        submit = keyed.idempotent_submit(KEY, "retry-1", NOW + 1)
        assert submit is not None and (submit.task_id, submit.fingerprint) == (f"{1:026d}", "fp-a")
        assert keyed.idempotent_submit(None, "retry-1", NOW + 1) is None  # another caller's key space
        assert keyed.idempotent_submit(KEY, "retry-2", NOW + 1) is None

    def test_concurrent_twins_make_one_task(self, keyed: TaskStore) -> None:
        key = Idempotency("twin", "fp")
        results = race(8, lambda i: keyed.insert_task(make_task(i + 1), idempotency=key))
        assert results.count(None) == 1 and all(isinstance(r, IdempotencyKeyTaken) for r in results if r), results
        assert keyed.queued_count(KEY) == 1

    def test_a_key_lives_24_hours_then_may_be_used_again(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1), idempotency=Idempotency("daily", "fp-a"))
        later = NOW + TTL_MS
        assert keyed.idempotent_submit(KEY, "daily", later - 1) is not None
        assert keyed.idempotent_submit(KEY, "daily", later) is None
        keyed.insert_task(make_task(2, now=later), idempotency=Idempotency("daily", "fp-b"))
        assert keyed.idempotent_submit(KEY, "daily", later + 1).task_id == f"{2:026d}"  # type: ignore[union-attr]
        assert keyed.forget_idempotency_keys(later + TTL_MS) == 1

    def test_a_modal_keeps_its_idempotency_key(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1, status=Status.MODAL))
        key = Idempotency("modal-1", "fp")
        spec = parse_prompt("p")
        assert keyed.submit_modal(f"{1:026d}", NOW, prompt="p", spec=spec, args={}, charge=None, idempotency=key)
        assert keyed.idempotent_submit(KEY, "modal-1", NOW).task_id == f"{1:026d}"  # type: ignore[union-attr]

    # --- keys ----------------------------------------------------------------------------------------
    def test_a_revoked_key_still_counts_as_a_key_that_existed(self, keyed: TaskStore) -> None:
        assert keyed.count_keys() == 1
        keyed.revoke_key(KEY, NOW)
        assert keyed.count_keys() == 1
