"""What every benchmark writes with its numbers: the machine, the code and the exact command."""

from __future__ import annotations

import json
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def cpu_name() -> str:
    info = Path("/proc/cpuinfo")
    match = re.search(r"model name\s*:\s*(.+)", info.read_text()) if info.exists() else None
    return match.group(1).strip() if match else platform.machine()


def write_report(benchmark: str, fields: dict[str, Any]) -> Path:
    """Write `bench/results/<benchmark>-<time>.json` with the command, commit, time and CPU first."""
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=ROOT)
    report = {
        "benchmark": benchmark,
        "command": shlex.join([Path(sys.executable).name, *sys.argv]),
        "commit": commit.stdout.strip() or None,
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpu": {"name": cpu_name(), "cores": os.cpu_count()},
        **fields,
    }
    out = ROOT / "bench" / "results" / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"written to {out.relative_to(ROOT)}")
    return out
