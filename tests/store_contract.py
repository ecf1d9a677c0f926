"""The store's promises, as one suite every adapter runs (tests/test_store_sqlite.py, tests/test_store_postgres.py).

The classes here have no `Test` prefix, so pytest collects them only where an adapter's test module
combines them with an `open_store` and a `run_sql` fixture. Races are real: threads released together
by a barrier, each on its own connection, as two API nodes or workers would be.

Every store here has an observer, so every test also checks that moves are announced without
breaking anything; the transition tests check what is announced.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from typing import Any, Protocol

import pytest

from journeyd.domain.errors import PaymentRequired
from journeyd.domain.idempotency import TTL_MS, Idempotency
from journeyd.domain.keys import ApiKey, Charge
from journeyd.domain.lifecycle import Action, Op, Speed, Status
from journeyd.domain.prompt import parse_prompt
from journeyd.domain.task import ClientData, Hook, Task
from journeyd.store.base import DuplicateNumber, IdempotencyKeyTaken, QueueFull, TaskStore, Transition, WorkerSeen

NOW = 1_767_225_600_000
KEY = "KEY1"


def tid(number: int) -> str:
    """The id make_task gives task `number` (26 characters of ULID alphabet)."""
    return f"{number:026d}"


def make_task(
    number: int,
    *,
    owner: str | None = KEY,
    status: Status = Status.SUBMITTED,
    now: int = NOW,
    prompt: str = "a lighthouse",
    speed: Speed = Speed.FAST,
    numeric: int | None = None,
    **fields: Any,
) -> Task:
    """A task row with the id `tid(number)` and the numeric id `numeric` (by default, one made from `number`)."""
    return Task(
        id=tid(number),
        number=NOW * 1000 + number if numeric is None else numeric,
        owner=owner,
        action=Action.INPAINT if status is Status.MODAL else Action.IMAGINE,
        op=Op.VARY_REGION if status is Status.MODAL else Op.GENERATE,
        status=status,
        prompt=prompt,
        spec=parse_prompt(prompt),
        speed=speed,
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


class OpenStore(Protocol):
    def __call__(self, *, on_transition: Callable[[Transition], None] | None = None) -> TaskStore: ...


class Heard(list[Transition]):
    def moves(self) -> list[tuple[str, str | None, str, int | None, str | None]]:
        return [(m.task.id, m.source.value if m.source else None, m.task.status.value, m.since, m.worker) for m in self]


class StoreContract:
    """Adapters override `open_store` (stores on one fresh, empty database, closed after the test)
    and `run_sql` (one committed statement on that database, for rows the port cannot write)."""

    @pytest.fixture
    def open_store(self) -> Iterator[OpenStore]:
        raise NotImplementedError

    @pytest.fixture
    def run_sql(self) -> Callable[[str], None]:
        raise NotImplementedError

    @pytest.fixture
    def heard(self) -> Heard:
        return Heard()

    @pytest.fixture
    def store(self, open_store: OpenStore, heard: Heard) -> TaskStore:
        return open_store(on_transition=heard.append)

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

    def test_the_change_count_moves_with_each_change_it_can_tell_of(self, store: TaskStore) -> None:
        counts = [store.change_count()]
        store.insert_task(make_task(1, owner=None))
        counts.append(store.change_count())
        store.cancel(tid(1), NOW, "cancelled by request")
        counts.append(store.change_count())
        assert counts == [None] * 3 or len(set(counts)) == 3, counts  # None: the store cannot tell (not listening)

    def test_get_tasks_lists_a_task_named_by_id_and_number_once(self, store: TaskStore) -> None:
        store.insert_task(make_task(1, owner=None))
        store.insert_task(make_task(2, owner=None, status=Status.SUCCESS))
        store.get_task(tid(2))  # a finished task is read from memory afterwards: still listed once
        found = store.get_tasks(ids=[tid(1), tid(2)], numbers=[NOW * 1000 + 1, NOW * 1000 + 2])
        assert sorted(task.id for task in found) == [tid(1), tid(2)]

    def test_recent_tasks_are_every_owners_newest_first_and_filter_by_status(self, keyed: TaskStore) -> None:
        for i in range(1, 6):
            keyed.insert_task(
                make_task(i, owner=KEY if i % 2 else None, status=Status.MODAL if i == 4 else Status.SUBMITTED)
            )
        assert [task.id for task in keyed.recent_tasks()] == [tid(5), tid(4), tid(3), tid(2), tid(1)]
        assert [task.id for task in keyed.recent_tasks(limit=2)] == [tid(5), tid(4)]
        assert [task.id for task in keyed.recent_tasks(statuses=[Status.MODAL])] == [tid(4)]
        assert keyed.recent_tasks(statuses=[Status.SUCCESS, Status.FAILURE]) == []

    # --- history pages -------------------------------------------------------------------------------
    def test_history_pages_newest_first_never_skip_or_repeat(self, store: TaskStore) -> None:
        for i in range(1, 11):  # tasks 4-7 share one millisecond: their order is still total
            store.insert_task(make_task(i, now=NOW + min(max(i, 4), 7)))
            store.insert_task(make_task(100 + i, owner="someone else"))
        newest_first = [tid(i) for i in range(10, 0, -1)]
        assert [t.id for t in store.list_tasks(KEY)] == newest_first
        pages, before = [], None
        while page := store.list_tasks(KEY, limit=3, before=before):
            pages.append([t.id for t in page])
            before = page[-1].id
        assert pages == [newest_first[0:3], newest_first[3:6], newest_first[6:9], newest_first[9:]]
        assert store.list_tasks(KEY, before=tid(1)) == []  # nothing older than the first
        assert store.list_tasks(KEY, before="X" * 26) == []  # an unknown task names no place in the list

    # --- the change feed -------------------------------------------------------------------------------
    def test_changed_tasks_come_in_change_order_as_they_are_now(self, store: TaskStore) -> None:
        for i in (1, 2, 3):
            store.insert_task(make_task(i))
        store.insert_task(make_task(4, owner="someone else"))
        store.insert_task(make_task(5, owner=None))
        assert [t.id for t in store.changed_tasks(KEY, since=NOW)] == [tid(1), tid(2), tid(3)]
        claimed = store.claim_next("w", NOW + 1_000, 60_000)  # the oldest: task 1
        assert claimed is not None and claimed.id == tid(1)
        store.heartbeat(tid(1), "w", NOW + 2_000, 60_000, 40)
        changed = store.changed_tasks(KEY, since=NOW + 1)
        assert [(t.id, t.status, t.progress, t.updated_at) for t in changed] == [
            (tid(1), Status.IN_PROGRESS, 40, NOW + 2_000)
        ]
        assert changed[0].version > claimed.version  # the progress is a change a reader can tell apart
        assert [t.id for t in store.changed_tasks(None, since=NOW)] == [tid(5)]  # the owner's tasks only

    def test_changed_tasks_page_through_one_millisecond_by_id(self, store: TaskStore) -> None:
        for i in range(1, 8):
            store.insert_task(make_task(i))  # all changed at NOW
        pages, after = [], ""
        while page := store.changed_tasks(KEY, since=NOW, after_id=after, limit=3):
            pages.append([t.id for t in page])
            after = page[-1].id
        assert pages == [[tid(1), tid(2), tid(3)], [tid(4), tid(5), tid(6)], [tid(7)]]
        assert store.changed_tasks(KEY, since=NOW + 1) == []

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

    # --- routing: a worker takes only the models it serves -------------------------------------------
    def test_a_worker_claims_only_tasks_of_its_models_in_priority_order(self, store: TaskStore) -> None:
        store.insert_task(make_task(1, owner=None, prompt="a fox --niji 6", speed=Speed.RELAX))
        store.insert_task(make_task(2, owner=None, prompt="a fox --v 6.1"))
        store.insert_task(make_task(3, owner=None, prompt="a fox"))
        store.insert_task(make_task(4, owner=None, prompt="a fox --niji 6", speed=Speed.TURBO))
        assert store.claim_next("w-sdxl", NOW, 60_000, models=["7"]) is None  # nobody asked for it
        niji = [store.claim_next("w-niji", NOW, 60_000, models=["niji6", "7"]) for _ in range(3)]
        assert [t.id if t else None for t in niji] == [tid(4), tid(1), None]  # turbo first, then relax
        default = store.claim_next("w-default", NOW, 60_000, models=["default"])
        assert default is not None and default.id == tid(3)
        anyone = store.claim_next("w-any", NOW, 60_000)
        assert anyone is not None and anyone.id == tid(2)

    def test_a_batch_takes_only_its_models_and_skips_none_it_could_take(self, store: TaskStore) -> None:
        store.insert_task(make_task(1, owner=None, prompt="a fox --niji 6"))
        store.insert_task(make_task(2, owner=None, prompt="a fox"))  # not this worker's: invisible to it
        store.insert_task(make_task(3, owner=None, prompt="a fox --niji 6"))
        store.insert_task(make_task(4, owner=None, prompt="a fox --niji 6", speed=Speed.RELAX))
        batch = store.claim_batch("w", NOW, 60_000, limit=4, key=lambda t: t.speed, models=["niji6"])
        assert [t.id for t in batch] == [tid(1), tid(3)]  # the relax one has another key: it waits its turn

    def test_tasks_stored_before_routing_labels_are_anyones(self, store: TaskStore, run_sql: Callable) -> None:
        store.insert_task(make_task(1, owner=None, prompt="a fox --niji 6"))
        run_sql(f"UPDATE tasks SET model = NULL WHERE id = '{tid(1)}'")  # as migration 5 leaves old rows
        claimed = store.claim_next("w", NOW, 60_000, models=["7"])
        assert claimed is not None and claimed.id == tid(1)

    def test_a_modal_routes_by_the_prompt_it_was_submitted_with(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1, status=Status.MODAL))
        spec = parse_prompt("a pond --niji 6")
        assert keyed.submit_modal(tid(1), NOW, prompt="a pond --niji 6", spec=spec, args={}, charge=None)
        assert keyed.claim_next("w", NOW, 60_000, models=["default"]) is None
        assert keyed.claim_next("w", NOW, 60_000, models=["niji6"]) is not None

    # --- claims under concurrency ---------------------------------------------------------------------
    def test_concurrent_batch_claims_never_take_one_task_twice(self, store: TaskStore) -> None:
        for i in range(40):
            store.insert_task(make_task(i + 1, owner=None))

        def drain(worker: int) -> list[str]:
            claimed: list[str] = []
            while batch := store.claim_batch(f"w{worker}", NOW, 60_000, limit=3, key=lambda t: "same"):
                claimed.extend(task.id for task in batch)
            return claimed

        results = race(6, drain)
        claimed = [task_id for result in results for task_id in result]
        assert sorted(claimed) == [tid(i + 1) for i in range(40)], results
        assert all(store.get_task(task_id).attempts == 1 for task_id in claimed)  # type: ignore[union-attr]

    # --- reclaim ------------------------------------------------------------------------------------------
    def test_a_reclaim_racing_finishes_never_overwrites_a_finish_and_refunds_once(self, keyed: TaskStore) -> None:
        charge = Charge(KEY, "submit", "midjourney@imagine", 2)
        for i in range(30):
            keyed.insert_task(make_task(i + 1), [charge])
        for _ in range(30):
            assert keyed.claim_next("slow", NOW, 1_000) is not None
        late = NOW + 5_000  # every lease ran out; the worker finishes anyway, while a sweep reclaims

        def attempt(i: int) -> Any:
            if i == 0:
                return keyed.reclaim(late, max_attempts=1)  # one try only: a reclaimed task fails, refunded
            return [keyed.finish(tid(n + 1), "slow", Status.SUCCESS, late) for n in range(30)]

        reclaimed, finishes = race(2, attempt)
        finished = {task.id for task in finishes if task is not None}
        assert set(reclaimed.failed) | finished == {tid(i + 1) for i in range(30)}
        assert not set(reclaimed.failed) & finished and reclaimed.requeued == []
        refunds = {e.task_id for e in keyed.ledger(key_id=KEY) if e.kind == "refund"}
        assert refunds == set(reclaimed.failed)  # exactly the failed ones, once each (unique per task)
        for i in range(30):
            task = keyed.get_task(tid(i + 1))
            assert task is not None
            assert task.status is (Status.SUCCESS if task.id in finished else Status.FAILURE)
        assert balance(keyed) == 100 - 30 * 2 + 2 * len(reclaimed.failed)

    def test_a_live_lease_is_reclaimed_only_when_every_lease_is_asked_for(self, store: TaskStore) -> None:
        store.insert_task(make_task(1, owner=None))
        store.claim_next("w", NOW, 60_000)
        assert store.reclaim(NOW + 1_000, max_attempts=3).requeued == []
        assert store.reclaim(NOW + 1_000, max_attempts=3, every_lease=True).requeued == [tid(1)]

    # --- the hand-over sweep ------------------------------------------------------------------------------
    def test_a_queued_task_is_handed_over_again_only_after_the_bound(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1))
        before = keyed.get_task(tid(1))
        assert keyed.stale_queued(NOW + 4_999, older_than_ms=5_000) == []
        assert keyed.stale_queued(NOW + 5_001, older_than_ms=5_000) == [tid(1)]
        assert keyed.stale_queued(NOW + 5_002, older_than_ms=5_000) == []  # just handed over again
        assert keyed.stale_queued(NOW + 10_002, older_than_ms=5_000) == [tid(1)]
        after = keyed.get_task(tid(1))
        assert after is not None and before is not None
        assert (after.version, after.updated_at) == (before.version, before.updated_at)  # no client-visible change
        assert keyed.outbox(tid(1)) == []

    def test_only_queued_tasks_are_handed_over(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1, status=Status.MODAL))
        keyed.insert_task(make_task(2))
        keyed.claim_next("w", NOW, 600_000)
        keyed.insert_task(make_task(3))
        keyed.cancel(tid(3), NOW, "no")
        assert keyed.stale_queued(NOW + 60_000, older_than_ms=5_000) == []

    def test_a_modal_or_a_requeue_hands_the_task_over_afresh(self, keyed: TaskStore) -> None:
        keyed.insert_task(make_task(1, status=Status.MODAL))
        spec = parse_prompt("p")
        keyed.submit_modal(tid(1), NOW + 8_000, prompt="p", spec=spec, args={}, charge=None)
        assert keyed.stale_queued(NOW + 10_000, older_than_ms=5_000) == []  # handed over at 8 s
        assert keyed.stale_queued(NOW + 13_001, older_than_ms=5_000) == [tid(1)]
        keyed.claim_next("w", NOW + 14_000, 1_000)
        assert keyed.reclaim(NOW + 20_000, max_attempts=3).requeued == [tid(1)]
        assert keyed.stale_queued(NOW + 24_000, older_than_ms=5_000) == []  # handed over at 20 s
        assert keyed.stale_queued(NOW + 25_001, older_than_ms=5_000) == [tid(1)]

    def test_concurrent_sweeps_hand_over_disjoint_tasks(self, store: TaskStore) -> None:
        for i in range(60):
            store.insert_task(make_task(i + 1, owner=None))

        def sweep(i: int) -> list[str]:
            taken: list[str] = []
            while found := store.stale_queued(NOW + 60_000, older_than_ms=5_000, limit=4):
                taken.extend(found)
            return taken

        results = race(6, sweep)
        taken = [task_id for result in results for task_id in result]
        assert sorted(taken) == [tid(i + 1) for i in range(60)], results  # each once, none left out

    # --- fleet workers: who serves which model, and the queued tasks nobody serves ---------------------------
    def test_a_worker_is_seen_from_its_last_announcement_until_it_is_forgotten(self, store: TaskStore) -> None:
        store.announce_worker("box1", ["7", "default"], NOW)
        store.announce_worker("box2", None, NOW + 1_000)
        store.announce_worker("box1", ["7", "default", "niji6"], NOW + 5_000)  # again, serving more: still one row
        assert sorted(store.workers_seen(NOW), key=lambda seen: seen.worker) == [
            WorkerSeen("box1", ("7", "default", "niji6"), NOW + 5_000),
            WorkerSeen("box2", None, NOW + 1_000),  # None: it serves any model
        ]
        assert [seen.worker for seen in store.workers_seen(NOW + 2_000)] == ["box1"]  # box2 silent since 1 s
        assert store.forget_workers(NOW + 2_000) == 1
        assert [seen.worker for seen in store.workers_seen(0)] == ["box1"]

    def test_a_task_queued_too_long_for_a_model_nobody_serves_fails_refunded(
        self, keyed: TaskStore, run_sql: Callable, heard: Heard
    ) -> None:
        charge = Charge(KEY, "submit", "midjourney@imagine", 2)
        keyed.insert_task(make_task(1, prompt="running --niji 6"), [charge])
        assert keyed.claim_next("w", NOW, 60_000, models=["niji6"]) is not None
        keyed.insert_task(make_task(2, prompt="served --v 7"), [charge])
        keyed.insert_task(make_task(3, prompt="waited too long --niji 6"), [charge])
        keyed.insert_task(make_task(4, prompt="not long enough --niji 6", now=NOW + 5_000), [charge])
        keyed.insert_task(make_task(5, prompt="from before labels --niji 6"), [charge])
        run_sql(f"UPDATE tasks SET model = NULL WHERE id = '{tid(5)}'")  # as migration 5 leaves old rows: anyone's

        def sweep() -> list[str]:
            return keyed.fail_unserved(NOW + 10_000, NOW + 1_000, ["7", "default"], lambda label: f"no {label} here")

        assert sweep() == [tid(3)]
        failed = keyed.get_task(tid(3))
        assert failed is not None and failed.status is Status.FAILURE and failed.fail_reason == "no niji6 here"
        assert failed.finished_at == NOW + 10_000
        assert [entry.kind for entry in keyed.ledger(task_id=tid(3))] == ["charge", "refund"]
        assert balance(keyed) == 100 - 5 * 2 + 2
        assert heard.moves()[-1] == (tid(3), "submitted", "failure", NOW, None)  # it waited from NOW
        assert [keyed.get_task(tid(i)).status for i in (1, 2, 4, 5)] == [  # type: ignore[union-attr]
            Status.IN_PROGRESS,
            Status.SUBMITTED,
            Status.SUBMITTED,
            Status.SUBMITTED,
        ]
        assert sweep() == []  # failed once, refunded once

    def test_concurrent_sweeps_fail_each_unserved_task_once(self, keyed: TaskStore) -> None:
        charge = Charge(KEY, "submit", "midjourney@imagine", 2)
        for i in range(30):
            keyed.insert_task(make_task(i + 1, prompt="a fox --niji 6"), [charge])

        def sweep(i: int) -> list[str]:
            failed: list[str] = []
            while found := keyed.fail_unserved(NOW + 60_000, NOW + 1_000, ["7"], lambda label: "nobody", limit=4):
                failed.extend(found)
            return failed

        results = race(4, sweep)
        assert sorted(task_id for result in results for task_id in result) == [tid(i + 1) for i in range(30)], results
        assert balance(keyed) == 100  # 30 charges, 30 refunds

    # --- numeric ids ----------------------------------------------------------------------------------------
    def test_a_taken_number_is_a_duplicate_and_writes_nothing(self, keyed: TaskStore) -> None:
        charge = Charge(KEY, "submit", "midjourney@imagine", 2)
        keyed.insert_task(make_task(1), [charge])
        twin = make_task(2, numeric=NOW * 1000 + 1)
        with pytest.raises(DuplicateNumber):
            keyed.insert_task(twin, [charge])
        assert keyed.get_task(tid(2)) is None and balance(keyed) == 98

    def test_concurrent_inserts_of_one_number_have_one_winner(self, store: TaskStore) -> None:
        results = race(6, lambda i: store.insert_task(make_task(i + 1, owner=None, numeric=NOW * 1000)))
        assert results.count(None) == 1 and all(isinstance(r, DuplicateNumber) for r in results if r), results

    # --- transitions: each committed move is announced once, after the commit -------------------------------
    def test_a_task_is_heard_from_creation_to_its_end(self, store: TaskStore, heard: Heard) -> None:
        store.insert_task(make_task(1, owner=None))
        assert store.claim_next("w1", NOW + 4_000, 60_000) is not None
        store.finish(tid(1), "w1", Status.SUCCESS, NOW + 9_000)
        assert heard.moves() == [
            (tid(1), None, "submitted", None, None),
            (tid(1), "submitted", "in_progress", NOW, "w1"),
            (tid(1), "in_progress", "success", NOW + 4_000, "w1"),
        ]
        assert heard[-1].task.updated_at == NOW + 9_000 and heard[-1].task.finished_at == NOW + 9_000

    def test_a_requeued_task_waits_from_its_requeue(self, store: TaskStore, heard: Heard) -> None:
        store.insert_task(make_task(1, owner=None))
        store.claim_next("dead", NOW + 1_000, 10_000)
        assert store.reclaim(NOW + 20_000, max_attempts=3).requeued == [tid(1)]
        store.claim_batch("w2", NOW + 25_000, 10_000, limit=4, key=lambda t: "same")
        store.finish(tid(1), "w2", Status.FAILURE, NOW + 26_000, fail_reason="boom")
        assert heard.moves()[1:] == [
            (tid(1), "submitted", "in_progress", NOW, "dead"),
            (tid(1), "in_progress", "submitted", NOW + 1_000, "dead"),
            (tid(1), "submitted", "in_progress", NOW + 20_000, "w2"),
            (tid(1), "in_progress", "failure", None, "w2"),  # a second run's own start is not kept
        ]

    def test_modal_tasks_are_heard_when_submitted_or_when_their_window_closes(
        self, store: TaskStore, heard: Heard
    ) -> None:
        store.insert_task(make_task(1, owner=None, status=Status.MODAL))
        store.insert_task(make_task(2, owner=None, status=Status.MODAL, now=NOW + 1))
        spec = parse_prompt("a lily")
        assert store.submit_modal(tid(1), NOW + 30_000, prompt="a lily", spec=spec, args={}, charge=None)
        assert store.submit_modal(tid(1), NOW + 31_000, prompt="a lily", spec=spec, args={}, charge=None) is None
        assert store.expire_modals(NOW + 120_000, "closed") == [tid(2)]
        assert heard.moves()[2:] == [
            (tid(1), "modal", "submitted", NOW, None),
            (tid(2), "modal", "cancelled", NOW + 1, None),
        ]

    def test_a_cancel_is_heard_once_however_many_callers_race_for_it(self, store: TaskStore, heard: Heard) -> None:
        store.insert_task(make_task(1, owner=None))
        race(8, lambda i: store.cancel(tid(1), NOW + 2_000, "cancelled by request"))
        assert heard.moves()[1:] == [(tid(1), "submitted", "cancelled", NOW, None)]

    def test_a_running_task_asked_to_cancel_is_heard_when_its_worker_stops(
        self, store: TaskStore, heard: Heard
    ) -> None:
        store.insert_task(make_task(1, owner=None))
        store.claim_next("w", NOW + 1_000, 60_000)
        asked = store.cancel(tid(1), NOW + 2_000, "cancelled by request")
        assert asked is not None and asked.status is Status.IN_PROGRESS and asked.cancel_requested
        assert len(heard) == 2
        store.finish(tid(1), "w", Status.CANCELLED, NOW + 3_000)
        assert heard.moves()[-1] == (tid(1), "in_progress", "cancelled", NOW + 1_000, "w")

    def test_a_refused_insert_is_never_heard(self, store: TaskStore, heard: Heard) -> None:
        store.create_key(ApiKey("k", "jd_abcde", "", 1, NOW), "hash")
        with pytest.raises(PaymentRequired):
            store.insert_task(make_task(1, owner="k"), [Charge("k", "submit", "midjourney@imagine", 5)])
        assert heard == [] and store.get_task(tid(1)) is None

    def test_moves_of_a_transaction_that_fails_halfway_are_never_heard(
        self, store: TaskStore, heard: Heard, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        store.insert_task(make_task(1, owner=None, status=Status.MODAL))
        store.insert_task(make_task(2, owner=None, status=Status.MODAL))
        heard.clear()
        emitted = []

        def disk_fills(conn: object, task_id: str, now: int) -> None:  # the second task's write fails
            emitted.append(task_id)
            if len(emitted) == 2:
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(store, "_emit", disk_fills)
        with pytest.raises(OSError):
            store.expire_modals(NOW + 120_000, "closed")
        assert heard == []  # the first task's move was noted, then rolled back with the rest
        assert {store.get_task(i).status for i in (tid(1), tid(2))} == {Status.MODAL}  # type: ignore[union-attr]

    def test_an_observer_that_fails_does_not_undo_the_move(
        self, open_store: OpenStore, caplog: pytest.LogCaptureFixture
    ) -> None:
        def broken(move: Transition) -> None:
            raise RuntimeError("observer down")

        store = open_store(on_transition=broken)
        store.insert_task(make_task(1, owner=None))
        assert store.claim_next("w", NOW, 60_000) is not None
        assert store.get_task(tid(1)).status is Status.IN_PROGRESS  # type: ignore[union-attr]
        assert "observer down" in caplog.text

    # --- the webhook outbox with several sweepers -------------------------------------------------------
    def test_sweepers_racing_for_deliveries_each_take_different_ones(self, store: TaskStore) -> None:
        hook = ClientData(hook=Hook("https://example.com/hook", "mj"))
        for i in range(1, 31):
            store.insert_task(make_task(i, client=hook))
        taken = race(6, lambda i: [d.id for d in store.due_deliveries(NOW, hold_ms=60_000)])
        ids = [delivery for sweep in taken for delivery in sweep]
        assert len(ids) == 30 and len(set(ids)) == 30  # each one taken once, by one sweeper
        assert store.due_deliveries(NOW + 59_000, hold_ms=60_000) == []  # held while their sweepers post them

    def test_a_held_delivery_nobody_settled_is_due_again_after_the_hold(self, store: TaskStore) -> None:
        store.insert_task(make_task(1, client=ClientData(hook=Hook("https://example.com/hook", "mj"))))
        (first,) = store.due_deliveries(NOW, hold_ms=60_000)  # its sweeper dies without settling it
        (again,) = store.due_deliveries(NOW + 60_000, hold_ms=60_000)
        assert again.id == first.id and again.task == first.task
        store.settle_delivery(again.id, NOW + 60_000, state="delivered")
        assert store.due_deliveries(NOW + 10**9) == []
