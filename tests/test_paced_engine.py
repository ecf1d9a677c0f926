"""The paced engine (`--engine paced`): a GPU's time without its work, for load tests and the fleet
benchmark. An Imagine through it is a whole task as clients see it: progress, four pictures, a grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from journeyd.domain.errors import TaskCancelled
from journeyd.domain.prompt import parse_prompt
from journeyd.engines import load_engines
from journeyd.engines.paced import PacedEngine
from journeyd.runtime import build_runtime
from journeyd.service import Caller
from tests.conftest import make_settings


def test_an_imagine_waits_its_time_in_steps_and_draws_a_flat_picture_per_seed() -> None:
    steps: list[tuple[int, int]] = []
    pictures = PacedEngine(0.05).generate(
        parse_prompt("a harbour"), (64, 48), [1, 2, 3, 4], lambda d, t, p=None: steps.append((d, t))
    )
    assert steps == [(i, 10) for i in range(11)]
    assert all(p.shape == (48, 64, 3) and p.dtype == np.uint8 and (p == p[0, 0]).all() for p in pictures)
    assert len({p[0, 0].tobytes() for p in pictures}) == 4  # one colour per seed, the same every run
    again = PacedEngine(0).generate(parse_prompt("a harbour"), (64, 48), [1, 2, 3, 4], lambda *_: None)
    assert all((a == b).all() for a, b in zip(pictures, again, strict=True))


def test_a_cancel_stops_it_at_the_next_step() -> None:
    def cancel_at_3(done: int, total: int, preview=None) -> None:  # type: ignore[no-untyped-def]
        if done == 3:
            raise TaskCancelled("t")

    try:
        PacedEngine(0.3).generate(parse_prompt("a harbour"), (64, 64), [1], cancel_at_3)
    except TaskCancelled:
        return
    raise AssertionError("the cancel did not stop the engine")


def test_it_serves_tasks_as_any_engine_does(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, engine="paced", paced_task_ms=0)
    assert [engine.name for engine in load_engines(settings)] == ["paced"]
    runtime = build_runtime(settings, seed=3)
    task = runtime.service.imagine(Caller(), "a harbour at dawn --ar 3:2")
    assert runtime.run_pending() == 1
    done = runtime.store.get_task(task.id)
    assert done is not None and done.status.value == "success" and done.engine == "paced"
    assert done.result is not None and len(done.result.images) == 4 and done.result.grid.endswith("grid.png")
    assert done.result.width > done.result.height  # the prompt's shape
    runtime.store.close()
