"""A fleet of real processes: two API nodes and classic workers on one PostgreSQL database, one RabbitMQ
and one SeaweedFS S3 server. Each test breaks one part the way production breaks it (kill -9, SIGSTOP,
a broker or database restart, a worker cut off from the database, S3 going away) and checks that
nothing is lost and nothing charged twice.
"""

from __future__ import annotations

import io
import json
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np
import psycopg
import pytest
from PIL import Image
from psycopg.conninfo import conninfo_to_dict

from tests.conftest import box_mask, png_data_url
from tests.fleet import Fleet, WorkerProcess
from tests.pg import fresh_database
from tests.seaweed import Seaweed
from tests.servers import journeyd
from tests.tcp_proxy import TcpProxy
from tests.test_seed_flow import _beyond_feather

pytestmark = pytest.mark.timeout(240)
PRICES = json.dumps({"midjourney@imagine": 5, "midjourney@upscale": 2, "midjourney@inpaint": 3})
FINAL = {"SUCCESS", "FAILURE", "CANCEL"}


@pytest.fixture
def pg_url() -> Iterator[str]:
    """A fresh database of this test's own, as the URL an operator writes."""
    with fresh_database() as dsn:
        parts = conninfo_to_dict(dsn)
        user, host, port = parts.get("user", "postgres"), parts["host"], parts.get("port", 5432)
        yield f"postgresql://{user}@{host}:{port}/{parts['dbname']}"


@pytest.fixture
def pg_proxy(pg_url: str) -> Iterator[TcpProxy]:
    """A proxy in front of this test's database, to cut one process off it. Requested before `fleet`, it
    outlives the fleet's processes, so they stop without waiting on a database they cannot reach."""
    database = urlsplit(pg_url)
    proxy = TcpProxy((str(database.hostname), database.port or 5432))
    yield proxy
    proxy.close()


def through(proxy: TcpProxy, pg_url: str) -> str:
    """The database URL by way of `proxy`."""
    database = urlsplit(pg_url)
    return database._replace(netloc=f"{database.username}@{proxy.url_host}").geturl()


@pytest.fixture
def s3(tmp_path: Path) -> Iterator[Seaweed]:
    """An S3 server of this test's own: some tests stop it."""
    server = Seaweed(tmp_path / "s3").start()
    yield server
    server.stop()


@pytest.fixture
def fleet(tmp_path: Path, pg_url: str, s3: Seaweed) -> Iterator[Fleet]:
    fleet = Fleet(
        tmp_path,
        database_url=pg_url,
        s3_env=s3.env,
        storage_url=f"s3://{s3.bucket}/t{uuid.uuid4().hex[:8]}",
        prices=PRICES,
        lease_s=3,
        handover_s=2,
        sweep_interval_s=0.2,
    )
    yield fleet
    fleet.stop()


def new_key(fleet: Fleet, credits: int = 100) -> dict[str, str]:
    made = journeyd(
        "keys", "create", "--credits", str(credits), env={**fleet.env, "JOURNEYD_DATA_DIR": str(fleet.root)}
    )
    assert made.returncode == 0, made.stderr
    return {"Authorization": f"Bearer {made.stdout.strip()}"}


def submit(client: httpx.Client, path: str, body: dict[str, Any]) -> str:
    answer = client.post(path, json=body)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"][0]["task_id"]


def wait(client: httpx.Client, task_id: str, until: Callable[[dict], bool], timeout_s: float = 90) -> dict:
    deadline = time.monotonic() + timeout_s
    task: dict = {}
    while time.monotonic() < deadline:
        answer = client.get(f"/v1/midjourney/{task_id}")
        if answer.status_code == 200:
            task = answer.json()
            if until(task):
                return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} stayed {task.get('status')}: {task}")


def ended(client: httpx.Client, task_id: str, timeout_s: float = 90) -> dict:
    return wait(client, task_id, lambda task: task["status"] in FINAL, timeout_s)


def raw(client: httpx.Client, url: str) -> bytes:
    """An image's bytes, fetched from this node whichever node's URL it is."""
    answer = client.get("/" + url.split("://", 1)[1].split("/", 1)[1])
    assert answer.status_code == 200, answer.text
    return answer.content


def image(client: httpx.Client, url: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(raw(client, url))).convert("RGB"))


def logged(worker: WorkerProcess, text: str, timeout_s: float = 30) -> None:
    """Wait until the worker's log says `text`."""
    deadline = time.monotonic() + timeout_s
    while text not in worker.read_log() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert text in worker.read_log(), worker.read_log()


def ledger(pg_url: str) -> tuple[dict[str, int], dict[str, int], int]:
    """(charges per task, refunds per task, the key's balance), read from the database itself."""
    with psycopg.connect(pg_url) as db:
        charges = dict(db.execute("SELECT task_id, COUNT(*) FROM ledger WHERE kind = 'charge' GROUP BY task_id"))
        refunds = dict(db.execute("SELECT task_id, COUNT(*) FROM ledger WHERE kind = 'refund' GROUP BY task_id"))
        (balance,) = db.execute("SELECT balance FROM api_keys").fetchone()  # type: ignore[misc]
    return charges, refunds, balance


def bare(task_id: str) -> str:
    return task_id.removeprefix("task_")


def test_the_seed_flow_crosses_two_api_nodes_and_two_workers(fleet: Fleet, pg_url: str) -> None:
    headers = new_key(fleet)
    one, two = fleet.api(), fleet.api()
    fleet.worker(), fleet.worker()
    with fleet.client(one, **headers) as a, fleet.client(two, **headers) as b:
        grid = ended(b, submit(a, "/v1/midjourney/generations", {"prompt": "a red fox in the snow --ar 3:2"}))
        assert grid["status"] == "SUCCESS" and len(grid["image_urls"]) == 4
        upscaled = ended(a, submit(b, "/v1/midjourney/generations/upscale", {"task_id": grid["id"], "index": 1}))
        assert upscaled["status"] == "SUCCESS"
        parent = image(b, upscaled["image_urls"][0])
        np.testing.assert_array_equal(parent, image(a, grid["image_urls"][0]))  # either node serves every image

        modal_id = submit(a, "/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"], "speed": "fast"})
        assert wait(b, modal_id, lambda task: task["status"] == "MODAL")["action"] == "INPAINT"
        height, width = parent.shape[:2]
        mask = box_mask(width, height, (width // 4, height // 4, width // 2, height // 2))
        answer = b.post(
            "/v1/midjourney/generations/modal",
            json={"task_id": modal_id, "prompt": "a blue butterfly", "mask_url": png_data_url(mask)},
        )
        assert answer.status_code == 200, answer.text
        result = ended(a, modal_id)
        assert result["status"] == "SUCCESS" and len(result["image_urls"]) == 4
        far = _beyond_feather(mask)
        for url in result["image_urls"]:
            candidate = image(b, url)
            np.testing.assert_array_equal(candidate[far], parent[far])  # bit-identical beyond the feather
    charges, refunds, balance = ledger(pg_url)
    assert sorted(charges.values()) == [1, 1, 1] and not refunds and balance == 100 - 5 - 2 - 3
    # each worker serves its own /metrics: between them, the three tasks they finished and their steps
    scraped = [httpx.get(worker.metrics_url, timeout=10).text for worker in fleet.workers if worker.metrics_url]
    assert len(scraped) == 2
    finished = sum(_sample(text, "journeyd_tasks_finished_total", 'status="success"') for text in scraped)
    steps = sum(_sample(text, "journeyd_engine_steps_total", 'engine="classic"') for text in scraped)
    assert finished == 3 and steps > 0
    # a worker's log names tasks by their ids, once per move; Celery's two lines per bell are left out
    worker_log = fleet.workers[0].read_log() + fleet.workers[1].read_log()
    assert "IMAGINE in_progress -> success" in worker_log and "succeeded in" not in worker_log


def _sample(text: str, name: str, label: str) -> float:
    """The sum of a metric's samples that carry `label`, from Prometheus text."""
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{") and label in line
    )


def test_a_worker_killed_mid_task_leaves_it_to_another_one_success_one_charge(fleet: Fleet, pg_url: str) -> None:
    fleet.env["JOURNEYD_CLASSIC_STEP_S"] = "0.4"  # 12 steps: about 5 s a task, time to kill it in the middle
    headers = new_key(fleet)
    api = fleet.api()
    doomed = fleet.worker()
    with fleet.client(api, **headers) as client:
        task_id = submit(client, "/v1/midjourney/generations", {"prompt": "storm over a harbour"})
        wait(client, task_id, lambda task: task["status"] == "IN_PROGRESS" and task["progress"] != "0%")
        doomed.kill()
        fleet.worker()
        task = ended(client, task_id)
        assert task["status"] == "SUCCESS", task
        for url in task["image_urls"]:
            assert image(client, url).shape[2] == 3
    charges, refunds, balance = ledger(pg_url)
    assert charges == {bare(task_id): 1} and not refunds and balance == 95
    with psycopg.connect(pg_url) as db:
        (attempts,) = db.execute("SELECT attempts FROM tasks WHERE id = %s", (bare(task_id),)).fetchone()  # type: ignore[misc]
    assert attempts == 2


def test_a_worker_stopped_past_its_lease_cannot_finish_or_replace_images(fleet: Fleet, pg_url: str) -> None:
    fleet.env["JOURNEYD_CLASSIC_STEP_S"] = "0.4"
    headers = new_key(fleet)
    api = fleet.api()
    stopped = fleet.worker()
    with fleet.client(api, **headers) as client:
        task_id = submit(client, "/v1/midjourney/generations", {"prompt": "a lighthouse at dusk"})
        wait(client, task_id, lambda task: task["status"] == "IN_PROGRESS" and task["progress"] != "0%")
        stopped.signal(signal.SIGSTOP)
        fleet.worker()  # the lease (3 s) runs out; the task is requeued and this worker runs it
        task = ended(client, task_id)
        assert task["status"] == "SUCCESS"
        pictures = [image(client, url) for url in task["image_urls"]]
        stopped.signal(signal.SIGCONT)  # it wakes up mid-render, believing it still holds the task
        logged(stopped, "lease lost", timeout_s=15)
        again = ended(client, task_id)
        assert again["image_urls"] == task["image_urls"] and again["status"] == "SUCCESS"
        for url, picture in zip(task["image_urls"], pictures, strict=True):
            np.testing.assert_array_equal(image(client, url), picture)
    charges, refunds, _ = ledger(pg_url)
    assert charges == {bare(task_id): 1} and not refunds


def test_a_worker_cut_off_from_postgres_loses_its_task_to_another_and_takes_tasks_again_once_back(
    pg_proxy: TcpProxy, fleet: Fleet, pg_url: str
) -> None:
    """A partition between one worker and the database, RabbitMQ still reachable: its heartbeats fail,
    its lease runs out and another worker finishes the task. It stays up meanwhile, a bell it cannot answer
    loses no task, and once the network is back its late run is refused and it takes tasks again by itself."""
    headers = new_key(fleet)
    api = fleet.api()
    # slow enough to be still drawing when the network is back (a missed heartbeat waits out the pool too)
    cut_off = fleet.worker(env={"JOURNEYD_DATABASE_URL": through(pg_proxy, pg_url), "JOURNEYD_CLASSIC_STEP_S": "0.6"})
    with fleet.client(api, **headers) as client:
        task_id = submit(client, "/v1/midjourney/generations", {"prompt": "a ferry in the fog"})
        wait(client, task_id, lambda task: task["status"] == "IN_PROGRESS" and task["progress"] != "0%")
        pg_proxy.down()
        other = fleet.worker(env={"JOURNEYD_CLASSIC_STEP_S": "0.1"})  # runs it once the lease (3 s) runs out
        task = ended(client, task_id)
        assert task["status"] == "SUCCESS", task
        pictures = [raw(client, url) for url in task["image_urls"]]
        logged(cut_off, "heartbeat missed")  # each one after the pool's wait (5 s) for a connection
        assert cut_off.process is not None and cut_off.process.poll() is None  # and no crash

        pg_proxy.up()
        logged(cut_off, "lease lost")  # its first heartbeat through: the task is another's, it stops
        again = ended(client, task_id)
        assert again["status"] == "SUCCESS" and again["image_urls"] == task["image_urls"]
        assert [raw(client, url) for url in task["image_urls"]] == pictures  # byte-identical

        other.stop()  # from here on the cut-off worker is the only one
        pg_proxy.down()
        later = submit(client, "/v1/midjourney/generations", {"prompt": "the ferry at dawn"})
        logged(cut_off, "could not take a task")  # it took the bell and could not claim: the bell is spent
        assert client.get(f"/v1/midjourney/{later}").json()["status"] == "SUBMITTED"  # the task is not
        pg_proxy.up()
        assert ended(client, later)["status"] == "SUCCESS"  # handed over again; it reconnected by itself
    charges, refunds, balance = ledger(pg_url)
    assert charges == {bare(task_id): 1, bare(later): 1} and not refunds and balance == 100 - 2 * 5
    with psycopg.connect(pg_url) as db:
        (attempts,) = db.execute("SELECT attempts FROM tasks WHERE id = %s", (bare(task_id),)).fetchone()  # type: ignore[misc]
    assert attempts == 2


def test_an_api_node_killed_mid_submit_leaves_each_submit_whole_or_absent(fleet: Fleet, pg_url: str) -> None:
    headers = new_key(fleet, credits=1000)
    doomed, survivor = fleet.api(), fleet.api()
    fleet.worker()
    accepted: list[str] = []
    with fleet.client(doomed, **headers) as client:
        for i in range(40):
            if i == 20:
                subprocess.Popen(["kill", "-9", str(doomed.process.pid)])  # type: ignore[union-attr]
            try:
                accepted.append(submit(client, "/v1/midjourney/generations", {"prompt": f"tide pool {i}"}))
            except (httpx.HTTPError, AssertionError):
                break
    assert 20 <= len(accepted) < 40
    with fleet.client(survivor, **headers) as client:
        for task_id in accepted:
            assert ended(client, task_id)["status"] == "SUCCESS"
    with psycopg.connect(pg_url) as db:
        tasks = {task_id for (task_id,) in db.execute("SELECT id FROM tasks")}
    charges, refunds, balance = ledger(pg_url)
    assert {bare(t) for t in accepted} <= tasks  # every acknowledged submit exists
    assert set(charges) == tasks and set(charges.values()) == {1} and not refunds  # each task charged once
    assert balance == 1000 - 5 * len(tasks)


def test_a_broker_restart_loses_nothing_and_submits_during_it_are_accepted(fleet: Fleet, pg_url: str) -> None:
    headers = new_key(fleet)
    api = fleet.api()
    with fleet.client(api, **headers) as client:
        queued = [submit(client, "/v1/midjourney/generations", {"prompt": f"harbour {i}"}) for i in range(3)]
        rabbitmq("stop_app")
        try:
            during = [submit(client, "/v1/midjourney/generations", {"prompt": f"outage {i}"}) for i in range(3)]
        finally:
            rabbitmq("start_app")
        fleet.worker()  # bells queued before the outage survived in the durable queue; the sweep re-rings the rest
        for task_id in queued + during:
            assert ended(client, task_id, timeout_s=60)["status"] == "SUCCESS"
    charges, refunds, _ = ledger(pg_url)
    assert sorted(charges.values()) == [1] * 6 and not refunds


def test_a_postgres_restart_gives_503s_then_everything_recovers(fleet: Fleet) -> None:
    headers = new_key(fleet)
    api = fleet.api()
    fleet.worker()
    with fleet.client(api, **headers) as client:
        before = submit(client, "/v1/midjourney/generations", {"prompt": "before the outage"})
        assert ended(client, before)["status"] == "SUCCESS"
        postgres("stop")
        try:
            answer = client.get(f"/v1/midjourney/{before}")
            assert answer.status_code == 503, answer.text
            assert "database" in answer.text
            answer = client.post("/v1/midjourney/generations", json={"prompt": "during"})
            assert answer.status_code == 503, answer.text
        finally:
            postgres("start")
        after = submit(client, "/v1/midjourney/generations", {"prompt": "after the outage"})
        assert ended(client, after)["status"] == "SUCCESS"


def test_s3_down_while_a_worker_saves_fails_the_task_with_a_reason_and_a_refund(
    fleet: Fleet, pg_url: str, s3: Seaweed
) -> None:
    headers = new_key(fleet)
    api = fleet.api()
    fleet.worker()
    with fleet.client(api, **headers) as client:
        s3.stop()
        try:
            task_id = submit(client, "/v1/midjourney/generations", {"prompt": "a quiet bay"})
            task = ended(client, task_id)
        finally:
            s3.start()
        assert task["status"] == "FAILURE" and "s3://" in task["fail_reason"], task
        assert not task["image_urls"]
        after = submit(client, "/v1/midjourney/generations", {"prompt": "the bay again"})
        assert ended(client, after)["status"] == "SUCCESS"
    _, refunds, balance = ledger(pg_url)
    assert refunds == {bare(task_id): 1} and balance == 100 - 5


def test_a_model_no_worker_serves_is_refused_and_a_task_left_waiting_for_it_fails_refunded(
    fleet: Fleet, pg_url: str, tmp_path: Path
) -> None:
    """The API node runs the diffusers engine's settings without its models (they are on the GPU box); the only
    worker loads the one model it serves, a tiny one, and announces it."""
    from tests.tiny_models import tiny_sd15

    profile = '[[profile]]\nname = "{name}"\nmodel = "{model}"\nversions = ["{version}"]\nsize = 64\nsteps = 2\n'
    every_model = tmp_path / "every-model.toml"
    every_model.write_text(
        profile.format(name="base", model="/gpu-box/base", version="7")
        + profile.format(name="anime", model="/gpu-box/anime", version="niji6")
    )
    this_box = tmp_path / "this-box.toml"
    this_box.write_text(profile.format(name="base", model=tiny_sd15(tmp_path / "base"), version="7"))
    fleet.env.update({"JOURNEYD_UNSERVED_S": "3", "HF_HUB_OFFLINE": "1", "JOURNEYD_SPEEDUPS": "none"})
    headers = new_key(fleet)
    api = fleet.api(("--engine", "diffusers", "--models", str(every_model)))
    with fleet.client(api, **headers) as client:
        assert client.get("/healthz").json()["engine"] == "diffusers (not loaded: API node)"
        waiting = submit(client, "/v1/midjourney/generations", {"prompt": "an anime cat --niji 6"})  # no worker yet
        fleet.worker(("--engine", "diffusers", "--models", str(this_box), "--device", "cpu", "--dtype", "float32"))
        time.sleep(1.5)  # the API node reads the workers' announcements at most every second
        refused = client.post("/v1/midjourney/generations", json={"prompt": "an anime dog --niji 6"})
        assert refused.status_code == 422, refused.text
        assert "no worker serves model niji6; the workers serve 7, default" in refused.text
        unknown = client.post("/v1/midjourney/generations", json={"prompt": "a photo of a dog --v 5"})
        assert unknown.status_code == 400 and "this server serves 7, niji6" in unknown.text  # as the profiles say
        served = ended(client, submit(client, "/v1/midjourney/generations", {"prompt": "a photo of a dog --v 7"}))
        assert served["status"] == "SUCCESS", served
        failed = ended(client, waiting)
        assert failed["status"] == "FAILURE" and "no worker served model niji6 for 3 s" in failed["fail_reason"]
    charges, refunds, balance = ledger(pg_url)
    assert refunds == {bare(waiting): 1} and len(charges) == 2 and balance == 100 - 5


def rabbitmq(command: str) -> None:
    subprocess.run(["rabbitmqctl", "-q", command], check=True, capture_output=True, timeout=120)
    if command == "start_app":
        subprocess.run(["rabbitmqctl", "-q", "await_startup"], check=True, capture_output=True, timeout=120)


def postgres(command: str) -> None:
    cluster = subprocess.run(["pg_lsclusters", "-h"], capture_output=True, text=True, check=True).stdout.split()
    subprocess.run(["pg_ctlcluster", cluster[0], cluster[1], command], check=True, capture_output=True, timeout=120)
