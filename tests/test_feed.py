"""The change feed under the event streams: what a poll sends, and what it must not lose or repeat."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.lifecycle import Status
from journeyd.feed import OVERLAP_MS, TaskFeed, parse_cursor
from journeyd.store.sqlite import SqliteStore
from tests.store_contract import KEY, NOW, make_task, tid


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    store = SqliteStore(tmp_path / "db.sqlite3")
    yield store
    store.close()


def sent(feed: TaskFeed) -> list[tuple[str, Status]]:
    return [(change.task.id, change.task.status) for change in feed.poll()]


def test_a_new_feed_sends_only_what_changes_after_it_started(store: SqliteStore) -> None:
    store.insert_task(make_task(1, now=NOW - 1))
    feed = TaskFeed(store, KEY, since=None, now=NOW)
    assert sent(feed) == []
    store.insert_task(make_task(2, now=NOW + 1))
    store.claim_next("w", NOW + 2, 60_000)  # task 1, changed after the start
    assert sent(feed) == [(tid(2), Status.SUBMITTED), (tid(1), Status.IN_PROGRESS)]
    assert sent(feed) == []  # nothing new: nothing sent again


def test_a_change_committed_late_with_an_older_stamp_is_still_sent(store: SqliteStore) -> None:
    feed = TaskFeed(store, KEY, since=None, now=NOW)
    store.insert_task(make_task(1, now=NOW + 3_000))
    assert sent(feed) == [(tid(1), Status.SUBMITTED)]
    assert feed.cursor == NOW + 3_000
    store.insert_task(make_task(2, now=NOW + 1_000))  # stamped before the cursor, committed after it
    assert sent(feed) == [(tid(2), Status.SUBMITTED)]
    assert feed.cursor == NOW + 3_000  # the cursor never goes back


def test_a_heartbeat_that_changes_nothing_visible_is_not_sent(store: SqliteStore) -> None:
    store.insert_task(make_task(1))
    feed = TaskFeed(store, KEY, since=NOW, now=NOW)
    store.claim_next("w", NOW + 1, 60_000)
    assert sent(feed) == [(tid(1), Status.IN_PROGRESS)]
    store.heartbeat(tid(1), "w", NOW + 500, 60_000, 0)  # the lease renewed, progress as it was
    assert sent(feed) == []
    store.heartbeat(tid(1), "w", NOW + 900, 60_000, 30)
    assert [change.task.progress for change in feed.poll()] == [30]


def test_a_resumed_feed_sends_every_change_from_its_cursor_and_few_before(store: SqliteStore) -> None:
    store.insert_task(make_task(1, now=NOW))  # long before the cursor: not sent
    store.insert_task(make_task(2, now=NOW + 20_000 - OVERLAP_MS))  # inside the overlap: may be repeated
    store.insert_task(make_task(3, now=NOW + 20_000))
    store.insert_task(make_task(4, now=NOW + 25_000))
    feed = TaskFeed(store, KEY, since=NOW + 20_000, now=NOW + 30_000)
    assert sent(feed) == [(tid(2), Status.SUBMITTED), (tid(3), Status.SUBMITTED), (tid(4), Status.SUBMITTED)]


def test_a_feed_reads_past_a_full_page(store: SqliteStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("journeyd.feed.PAGE", 3)
    feed = TaskFeed(store, KEY, since=None, now=NOW)
    for i in range(1, 9):
        store.insert_task(make_task(i))  # all in one millisecond
    assert [task_id for task_id, _ in sent(feed)] == [tid(i) for i in range(1, 9)]


def test_a_cursor_is_digits() -> None:
    assert parse_cursor(" 1767225600000 ", what="since") == 1_767_225_600_000
    for bad in ("", "abc", "-1", "1.5", "1" * 20, "١٢٣"):
        with pytest.raises(InvalidRequest, match="since must be the id of an event"):
            parse_cursor(bad, what="since")
