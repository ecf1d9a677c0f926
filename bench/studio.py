"""Studio benchmark: how soon the page with 50 tasks of history is interactive, in headless Chromium.

Side by side in one run, on the same server and the same 50 finished tasks:
  * studio: `GET /`, its modules, /v1/account, /mj/task/list?limit=50, every card with its buttons,
    and the live stream opened; measured to the page's own `studio-ready` mark (images not counted);
  * bare: the plainest page the platform allows for the same data: one fetch of the same list and
    one innerHTML of 50 items (served by Playwright on the same origin).
Target: the studio interactive in under 1 s. Also reported: the page's own code size (target 200 KB).

    python bench/studio.py            # 50 tasks, 15 rounds each
    python bench/studio.py --rounds 5
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import httpx

from common import write_report  # bench/common.py: this script's own folder is on the path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from tests.browser import chromium  # noqa: E402
from tests.servers import Server  # noqa: E402

from journeyd.api.studio import STATIC  # noqa: E402

TARGET_READY_MS = 1000.0
TARGET_CODE_BYTES = 200 * 1024
BARE = """<!doctype html><meta charset="utf-8"><ol id="h"></ol><script type="module">
const tasks = await (await fetch("/mj/task/list?limit=50")).json();
const button = (b) => `<button>${b.label || b.emoji}</button>`;
document.getElementById("h").innerHTML = tasks.map((t) =>
  `<li>${t.prompt} ${t.status} ${t.buttons.map(button).join("")}</li>`).join("");
document.body.dataset.ready = "true";
performance.mark("studio-ready");
</script>"""


def make_history(server: Server, count: int) -> None:
    ids = [
        httpx.post(f"{server.url}/mj/submit/imagine", json={"prompt": f"a lighthouse, study {n} --seed {n}"}).json()[
            "result"
        ]
        for n in range(count)
    ]
    for task_id in ids:
        for _ in range(600):
            if httpx.get(f"{server.url}/mj/task/{task_id}/fetch").json()["status"] == "SUCCESS":
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"task {task_id} did not finish")


def ready_ms(browser: Any, url: str, bare: bool) -> float:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, device_scale_factor=1)
    page = context.new_page()
    if bare:
        page.route(f"{url}/bare", lambda route: route.fulfill(body=BARE, content_type="text/html"))
    page.goto(f"{url}/bare" if bare else f"{url}/")
    page.wait_for_selector("body[data-ready=true]", state="attached")
    elapsed = page.evaluate("performance.getEntriesByName('studio-ready')[0].startTime")
    shown = page.evaluate("document.querySelectorAll('li').length")
    context.close()
    assert shown == 50, f"{'bare' if bare else 'studio'} showed {shown} tasks"
    return float(elapsed)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=15)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        server = Server(Path(root) / "data", args=("--engine", "classic")).start()
        try:
            make_history(server, 50)
            samples: dict[str, list[float]] = {"studio": [], "bare": []}
            with chromium() as browser:
                ready_ms(browser, server.url, False)  # warm both paths once
                ready_ms(browser, server.url, True)
                for _ in range(args.rounds):  # A B A B: both see the same machine state
                    samples["studio"].append(ready_ms(browser, server.url, False))
                    samples["bare"].append(ready_ms(browser, server.url, True))
        finally:
            server.stop()
    summary = {name: {"median_ms": statistics.median(v), "max_ms": max(v)} for name, v in samples.items()}
    code_bytes = sum(path.stat().st_size for path in STATIC.rglob("*") if path.is_file())
    for name, row in summary.items():
        print(f"{name:7s} ready: median {row['median_ms']:.0f} ms, max {row['max_ms']:.0f} ms")
    print(f"studio code: {code_bytes / 1024:.1f} KB")
    write_report(
        "studio",
        {
            "machine": platform.machine(),
            "browser": "Debian chromium, headless, via Playwright " + metadata.version("playwright"),
            "versions": {name: metadata.version(name) for name in ("journeyd", "fastapi", "uvicorn", "playwright")},
            "settings": vars(args),
            "tasks": 50,
            "ready": summary,
            "samples_ms": samples,
            "studio_over_bare_median": summary["studio"]["median_ms"] / summary["bare"]["median_ms"],
            "code_bytes": code_bytes,
            "targets": {
                "studio_ready_median_ms": {"target": TARGET_READY_MS, "measured": summary["studio"]["median_ms"]},
                "code_bytes": {"target": TARGET_CODE_BYTES, "measured": code_bytes},
            },
        },
    )


if __name__ == "__main__":
    main()
