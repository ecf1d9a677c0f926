"""A stand-in for the Hugging Face Hub over real HTTP, on a free loopback port: the few endpoints
`huggingface_hub` calls to list a repository and fetch its files (`journeyd models pull`, `snapshot_download`),
so pulls are tested with HF_ENDPOINT pointing here.

- `GET /api/models/{id}/revision/{rev}`: the repository's info (its commit and file names);
- `GET /api/models/{id}/tree/{rev}?recursive=...`: its files, with sizes (one page);
- `HEAD /{id}/resolve/{rev}/{path}`: the file's ETag (its sha256), X-Repo-Commit and Content-Length;
- `GET /{id}/resolve/{rev}/{path}`: the file, or from `Range: bytes=N-` on (206).

`cache_repo` lays a folder out in the local cache as a download of it would, for tests of what is there.

A gated repository answers 401 with `X-Error-Code: GatedRepo` for its tree and files, as the hub does
for a user who is not logged in or has not accepted its terms. `drop_once` names a file whose first
download is cut off halfway (the connection closes mid-body).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@dataclass
class FakeHub:
    repos: dict[str, dict[str, bytes]]  # repo id -> path -> content
    gated: set[str] = field(default_factory=set)
    drop_once: set[tuple[str, str]] = field(default_factory=set)  # (repo id, path)
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)  # method, path, Range
    url: str = ""
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def fetched(self) -> list[tuple[str, str]]:
        """(repo id, path) of every file GET, in order."""
        found = []
        for method, path, _ in self.requests:
            if method == "GET" and (match := _RESOLVE.fullmatch(path)):
                found.append((match["repo"], match["file"]))
        return found

    def ranges(self) -> list[str]:
        return [range_ for method, _, range_ in self.requests if method == "GET" and range_]


_INFO = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/revision/(?P<rev>[^/]+)")
_TREE = re.compile(r"/api/models/(?P<repo>[^/]+/[^/]+)/tree/(?P<rev>[^/]+)")
_RESOLVE = re.compile(r"/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<file>.+)")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:  # quiet
            pass

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def do_GET(self) -> None:
            self._answer(body=True)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            with hub._lock:
                hub.requests.append((self.command, path, self.headers.get("Range")))
            if match := _INFO.fullmatch(path):
                repo = self._repo(match["repo"], gated_too=False)
                if repo is not None:
                    info = {
                        "id": match["repo"],
                        "sha": COMMIT,
                        "siblings": [{"rfilename": name} for name in repo],
                        "gated": "manual" if match["repo"] in hub.gated else False,
                        "private": False,
                    }
                    self._json(info, body)
            elif match := _TREE.fullmatch(path):
                repo = self._repo(match["repo"])
                if repo is not None:
                    self._json([_tree_entry(name, data) for name, data in repo.items()], body)
            elif match := _RESOLVE.fullmatch(path):
                repo = self._repo(match["repo"])
                if repo is not None:
                    if match["file"] not in repo:
                        self._error(404, "EntryNotFound", "Entry not found")
                    else:
                        self._file(match["repo"], match["file"], repo[match["file"]], body)
            else:
                self._error(404, "RepoNotFound", "Not found")

        def _repo(self, repo_id: str, gated_too: bool = True) -> dict[str, bytes] | None:
            if repo_id not in hub.repos:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            if gated_too and repo_id in hub.gated:
                self._error(401, "GatedRepo", f"Access to model {repo_id} is restricted. You must have access to it")
                return None
            return hub.repos[repo_id]

        def _file(self, repo_id: str, name: str, data: bytes, body: bool) -> None:
            start = 0
            if body and (wanted := re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")):
                start = int(wanted[1])
            self.send_response(206 if start else 200)
            self.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
            self.send_header("X-Repo-Commit", COMMIT)
            self.send_header("Accept-Ranges", "bytes")
            self.send_header("Content-Length", str(len(data) - start))
            if start:
                self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
            self.end_headers()
            if not body:
                return
            with hub._lock:
                drop = (repo_id, name) in hub.drop_once and not start
                hub.drop_once.discard((repo_id, name))
            if drop:  # half the body, then the connection goes away
                self.wfile.write(data[: len(data) // 2])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(2)
                return
            self.wfile.write(data[start:])

        def _json(self, value: object, body: bool) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _error(self, status: int, code: str, message: str) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler


def _tree_entry(name: str, data: bytes) -> dict[str, object]:
    return {
        "type": "file",
        "path": name,
        "size": len(data),
        "oid": hashlib.sha1(data).hexdigest(),
        "lfs": {"oid": hashlib.sha256(data).hexdigest(), "size": len(data), "pointerSize": 134},
    }


@contextmanager
def fake_hub(hub: FakeHub) -> Iterator[FakeHub]:
    """Serve `hub` on a free loopback port (its `url` is set) until the block ends."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(hub))
    server.daemon_threads = True
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, name="fake-hub", daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join(10)


def files_of(folder: Path, *, variant: str | None = None) -> dict[str, bytes]:
    """The files of a saved pipeline, by their path in a repository. With `variant`, its weight files are
    named as that variant's (`unet/diffusion_pytorch_model.fp16.safetensors`), as on the hub."""
    files = {}
    for source in sorted(path for path in folder.rglob("*") if path.is_file()):
        name = source.relative_to(folder).as_posix()
        if variant and name.endswith(".safetensors"):
            name = name.removesuffix(".safetensors") + f".{variant}.safetensors"
        files[name] = source.read_bytes()
    return files


def cache_repo(cache: Path, repo_id: str, files: dict[str, bytes]) -> Path:
    """Put `files` into the hub cache at `cache` as huggingface_hub lays out a download of `repo_id`:
    `models--org--name/blobs/<sha256>`, `snapshots/<commit>/<path>` as relative symlinks to the blobs, and
    `refs/main` holding the commit. The snapshot folder."""
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    snapshot = storage / "snapshots" / COMMIT
    (storage / "blobs").mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
        blob.write_bytes(data)
        link = snapshot / name
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    (storage / "refs").mkdir(exist_ok=True)
    (storage / "refs" / "main").write_text(COMMIT)
    return snapshot
