"""The studio ships inside the wheel, loads nothing from another host, and stays small."""

from __future__ import annotations

import re
import subprocess
import sys
import zipfile
from pathlib import Path

from fastapi.testclient import TestClient

from journeyd.api.studio import STATIC

ROOT = Path(__file__).resolve().parent.parent
OWN_CODE_LIMIT = 200 * 1024  # the budget for the page's own code, uncompressed


def studio_files() -> list[Path]:
    return sorted(path for path in STATIC.rglob("*") if path.is_file())


def test_the_wheel_carries_every_studio_file(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = tmp_path.glob("journeyd-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    expected = {f"journeyd/studio/static/{path.relative_to(STATIC).as_posix()}" for path in studio_files()}
    assert {"journeyd/studio/static/index.html", "journeyd/studio/static/app.js"} <= expected
    assert expected <= names


def test_the_page_code_is_small_and_names_no_other_host() -> None:
    assert sum(path.stat().st_size for path in studio_files()) < OWN_CODE_LIMIT
    for path in studio_files():
        text = path.read_text()
        assert not re.search(r"(?:src|href)=[\"']?(?:https?:)?//", text), f"{path.name} loads from another host"
        assert not re.search(r"""(?:import|from)\s*\(?\s*["'](?:https?:)?//""", text), path.name
        assert "url(http" not in text and "@import" not in text, path.name


def test_the_page_and_its_modules_are_served_with_a_policy_that_keeps_them_local(client: TestClient) -> None:
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    policy = page.headers["content-security-policy"]
    assert "default-src 'self'" in policy and "connect-src 'self'" in policy
    modules = re.findall(r'src="(/studio/[^"]+)"', page.text) + re.findall(
        r'from "\./([^"]+)"', (STATIC / "app.js").read_text()
    )
    assert modules
    for module in modules:
        path = module if module.startswith("/") else f"/studio/{module}"
        answer = client.get(path)
        assert answer.status_code == 200, path
        assert answer.headers["content-type"].startswith(("text/javascript", "application/javascript")), path
    assert client.get("/studio/styles.css").headers["content-type"].startswith("text/css")
    assert client.get("/studio/nothing.js").status_code == 404
    assert client.get("/studio/../config.py").status_code == 404
