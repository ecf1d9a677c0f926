"""The dispatcher contract, run against Celery over a real RabbitMQ, plus what only a broker can do wrong.

Each test gets its own namespace (exchange and queues), deleted afterwards, so tests running at the
same time never see each other's bells. Workers run in this process (`EmbeddedWorker`), one Celery app
per machine, as separate boxes would have.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
from kombu import Connection

from journeyd.dispatch.bells import BELL_TASK, queue_name, routing_key
from journeyd.dispatch.celery import CeleryDispatcher, EmbeddedWorker, exchange_for, make_celery
from journeyd.domain.errors import Unprocessable
from journeyd.domain.lifecycle import Status
from journeyd.roster import Roster
from journeyd.worker import Worker
from tests.dispatcher_contract import Base, DispatcherContract, GatedEngine, Journal, wait_for
from tests.tcp_proxy import TcpProxy

BROKER = os.environ.get("JOURNEYD_TEST_BROKER_URL", "amqp://guest:guest@127.0.0.1:5672//")


def _broker_up() -> bool:
    try:
        with Connection(BROKER, connect_timeout=2) as connection:
            connection.ensure_connection(max_retries=1)
        return True
    except Exception:
        return False


pytestmark = pytest.mark.skipif(not _broker_up(), reason=f"no RabbitMQ at {BROKER}")


class CeleryRig:
    def __init__(self, base: Base, *, broker: str = BROKER) -> None:
        self.base, self.runtime = base, base.runtime
        self.namespace = f"jdtest-{uuid.uuid4().hex[:10]}"
        self.app = make_celery(broker, namespace=self.namespace)
        self.dispatcher = CeleryDispatcher(self.app, namespace=self.namespace)
        self.dispatcher.start()
        self.runtime.service.dispatcher = self.dispatcher
        self.machines: list[EmbeddedWorker] = []
        self.by_hand = 0

    def machine(self, engine: GatedEngine, count: int = 1, *, broker: str = BROKER) -> list[Worker]:
        workers = self.base.workers(engine, count)
        for worker in workers:
            worker.models = None  # left open: the fleet worker takes them from its engine
        box = EmbeddedWorker(
            make_celery(broker, namespace=self.namespace),
            workers,
            namespace=self.namespace,
            hostname=f"box{len(self.machines)}@{self.namespace}",
        )
        box.start()
        self.machines.append(box)
        return workers

    def ring_by_hand(self, task_id: str, model: str) -> None:
        self.by_hand += 1
        exchange = exchange_for(self.namespace)
        self.app.send_task(
            BELL_TASK, args=[task_id], exchange=exchange, routing_key=routing_key(model), declare=[exchange]
        )

    def wait_bells_answered(self, timeout_s: float = 15.0) -> None:
        # every machine here serves any model, or the test rang only bells one machine takes
        def answered() -> bool:
            rung = self.dispatcher.published + self.by_hand
            return self.dispatcher.backlog == 0 and sum(box.answered for box in self.machines) >= rung

        wait_for(answered, "every bell to be answered", timeout_s)

    def close(self) -> None:
        for box in self.machines:
            for worker in box.workers:
                worker.engine.gate.set()  # type: ignore[attr-defined]
            box.stop()
        self.dispatcher.stop()
        with Connection(BROKER) as connection:
            channel = connection.default_channel
            for box in self.machines:
                channel.queue_delete(queue_name(self.namespace, box.workers[0].models))
            channel.exchange_delete(self.namespace)


@pytest.fixture
def celery_rig(tmp_path) -> Iterator[CeleryRig]:  # type: ignore[no-untyped-def]
    base = Base(tmp_path)
    rig = CeleryRig(base)
    yield rig
    rig.close()
    base.close()


class TestCeleryDispatcher(DispatcherContract):
    @pytest.fixture
    def rig(self, base: Base) -> Iterator[CeleryRig]:
        rig = CeleryRig(base)
        yield rig
        rig.close()


def test_a_box_never_receives_the_bells_of_a_model_it_does_not_serve(celery_rig: CeleryRig) -> None:
    journal = Journal()
    v7 = GatedEngine(journal, models=["7"])
    niji = GatedEngine(journal, models=["niji6"])
    celery_rig.machine(v7)
    celery_rig.machine(niji)
    tasks = [DispatcherContract.submit(celery_rig, p) for p in ("a cat --niji 6", "a dog --niji 6", "a fox --v 7")]
    DispatcherContract.ended(celery_rig, *tasks)
    seven, anime = celery_rig.machines
    wait_for(lambda: seven.answered == 1 and anime.answered == 2, "each box to answer its own bells")
    assert (seven.answered, anime.answered) == (1, 2)


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens once the socket is closed


def test_wake_returns_at_once_when_the_broker_is_down_and_the_failure_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = make_celery(f"amqp://guest:guest@127.0.0.1:{_closed_port()}//", namespace="jdtest-down")
    dispatcher = CeleryDispatcher(app, namespace="jdtest-down", publish_timeout_s=0.5)
    dispatcher.start()
    try:
        with caplog.at_level(logging.WARNING, logger="journeyd.dispatch"):
            started = time.monotonic()
            for i in range(20):
                dispatcher.wake(f"task{i:02d}", "default")
            assert time.monotonic() - started < 0.1  # a submit never waits for the broker
            wait_for(lambda: dispatcher.dropped == 20, "the publisher to give up on every bell")
    finally:
        dispatcher.stop(timeout_s=5)
    failures = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(failures) == 20
    assert "task00" in failures[0] and "sweep rings it again" in failures[0]
    assert dispatcher.published == 0


def _via(proxy: TcpProxy) -> str:
    return BROKER.replace("127.0.0.1:5672", proxy.url_host)


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    upstream = BROKER.split("@", 1)[1].split("/", 1)[0].split(":")
    made = TcpProxy((upstream[0], int(upstream[1])))
    yield made
    made.close()


def test_the_publisher_reconnects_after_losing_the_broker(tmp_path, proxy: TcpProxy) -> None:  # type: ignore[no-untyped-def]
    base = Base(tmp_path)
    rig = CeleryRig(base, broker=_via(proxy))
    try:
        rig.machine(GatedEngine(Journal()))
        first = DispatcherContract.submit(rig, "before the cut")
        DispatcherContract.ended(rig, first)
        proxy.cut()  # the broker drops the publisher's connection, as a restart would
        second = DispatcherContract.submit(rig, "after the cut")
        DispatcherContract.ended(rig, second)
        assert (rig.dispatcher.published, rig.dispatcher.dropped) == (2, 0)
    finally:
        rig.close()
        base.close()


def test_bells_queued_while_a_worker_is_cut_off_run_once_it_is_back(tmp_path, proxy: TcpProxy) -> None:  # type: ignore[no-untyped-def]
    base = Base(tmp_path)
    rig = CeleryRig(base)
    try:
        journal = Journal()
        rig.machine(GatedEngine(journal), broker=_via(proxy))
        proxy.down()  # the worker loses the broker and cannot reconnect
        tasks = [DispatcherContract.submit(rig, f"queued {i}") for i in range(3)]
        bells = queue_name(rig.namespace, None)
        with Connection(BROKER) as connection:
            wait_for(
                lambda: connection.default_channel.queue_declare(bells, passive=True).message_count == 3,
                "the bells to wait in the durable queue",
            )
        assert journal.texts() == []
        proxy.up()  # the worker reconnects by itself
        DispatcherContract.ended(rig, *tasks, timeout_s=30)
        assert sorted(journal.texts()) == ["queued 0", "queued 1", "queued 2"]
    finally:
        rig.close()
        base.close()


def test_sigterm_lets_the_running_task_finish_and_leaves_the_queued_one_to_the_next_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    base = Base(tmp_path)
    rig = CeleryRig(base)
    store, settings = base.runtime.store, base.runtime.settings
    log_path = tmp_path / "worker.log"
    with open(log_path, "w") as log_file:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.celery_worker_main",
                str(settings.database_path),
                str(settings.images_dir),
                BROKER,
                rig.namespace,
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
        )
    bells = queue_name(rig.namespace, None)
    try:
        with Connection(BROKER) as connection:
            channel = connection.default_channel
            wait_for(lambda: _consumers(bells) == 1, "the worker process to consume", 30)
            running = DispatcherContract.submit(rig, "the running one")
            wait_for(lambda: store.get_task(running.id).status is Status.IN_PROGRESS, "the task to start")  # type: ignore[union-attr]
            waiting = DispatcherContract.submit(rig, "the waiting one")
            wait_for(lambda: channel.queue_declare(bells, passive=True).message_count == 1, "its bell to be queued")
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 0, log_path.read_text()
            assert store.get_task(running.id).status is Status.SUCCESS  # type: ignore[union-attr]
            assert store.get_task(waiting.id).status is Status.SUBMITTED  # type: ignore[union-attr]
            assert channel.queue_declare(bells, passive=True).message_count == 1  # its bell waits for the next worker
        rig.machine(GatedEngine(Journal()))  # and the next worker runs it
        DispatcherContract.ended(rig, waiting)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        rig.close()
        base.close()


def _consumers(queue: str) -> int:
    try:
        with Connection(BROKER) as connection:
            return connection.default_channel.queue_declare(queue, passive=True).consumer_count
    except Exception:  # not declared yet
        return 0


def test_a_fleet_worker_claims_what_its_engine_serves(celery_rig: CeleryRig) -> None:
    (worker,) = celery_rig.machine(GatedEngine(Journal(), models=["7"]))
    assert worker.models == ["7", "default"]  # set from the engine even if the caller left it open
    assert _consumers(queue_name(celery_rig.namespace, ["7", "default"])) == 1


def test_a_fleet_worker_announces_the_models_it_serves_and_the_api_refuses_the_others(celery_rig: CeleryRig) -> None:
    celery_rig.machine(GatedEngine(Journal(), models=["7"]))
    store, clock = celery_rig.runtime.store, celery_rig.base.clock
    assert [(seen.worker, seen.models) for seen in store.workers_seen(0)] == [
        (f"box0@{celery_rig.namespace}", ("7", "default"))
    ]
    celery_rig.runtime.service.roster = Roster(store, clock, window_ms=60_000)  # as an API node of a fleet has
    with pytest.raises(Unprocessable, match="no worker serves model niji6; the workers serve 7, default"):
        DispatcherContract.submit(celery_rig, "an anime cat --niji 6")
    DispatcherContract.ended(celery_rig, DispatcherContract.submit(celery_rig, "a photo of a cat --v 7"))
    celery_rig.machine(GatedEngine(Journal()))  # a box that draws any model
    clock.advance(1)  # the roster is read again at most every second
    DispatcherContract.ended(celery_rig, DispatcherContract.submit(celery_rig, "an anime cat --niji 6"))
