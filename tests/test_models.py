"""Real models one command away: the catalog, `journeyd models list/pull`, `--model NAME` and the `auto` engine.

Nothing is downloaded from a model hub. Pulls go to a local HTTP server speaking the hub's endpoints
(`tests/fake_hub.py`, with HF_ENDPOINT or `endpoint` pointing at it); what is "in the cache" is a cache
the tests lay out themselves, in huggingface_hub's layout, from the tiny models.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import httpx
import pytest

from journeyd.cli import main
from journeyd.engines import EngineChoice, choose_engine
from journeyd.engines.diffusion import load_profiles
from journeyd.models import hub
from journeyd.models.catalog import CATALOG, Entry, Repo
from tests.conftest import make_settings
from tests.fake_hub import FakeHub, cache_repo, fake_hub, files_of
from tests.servers import Server, free_port, journeyd
from tests.tiny_models import tiny_sd15

MB = 1_000_000
MiB = 1 << 20
WEIGHTS = "unet/diffusion_pytorch_model.fp16.safetensors"
SD_TURBO = next(entry for entry in CATALOG if entry.name == "sd-turbo")


def tiny_entry(repo_id: str = "org/tiny", *, gated: bool = False, inpaint: Repo | None = None) -> Entry:
    return Entry("tiny", "tests", "sd15", Repo(repo_id, (WEIGHTS,), 3 * MB, gated=gated), inpaint, 0, {})


def repo_files(weight_bytes: int = 3 * MB) -> dict[str, bytes]:
    """A repository with its fp16 weights, the fp32 copy no pull should fetch, configs and a README."""
    return {
        "model_index.json": b'{"_class_name": "StableDiffusionPipeline"}',
        "unet/config.json": b"{}",
        WEIGHTS: os.urandom(weight_bytes),
        "unet/diffusion_pytorch_model.safetensors": os.urandom(2 * weight_bytes),
        "tokenizer/merges.txt": b"#version: 0.2\n",
        "README.md": b"# tiny\n",
    }


def snapshot(cache: Path, repo_id: str) -> Path:
    storage = cache / f"models--{repo_id.replace('/', '--')}"
    return storage / "snapshots" / (storage / "refs" / "main").read_text()


# --- pull ------------------------------------------------------------------------------------------------
def test_a_pull_downloads_exactly_the_entrys_files_into_the_cache_layout_with_a_progress_bar(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TQDM_POSITION", "-1")  # huggingface_hub's bars show only on a terminal, else
    files = repo_files()
    with fake_hub(FakeHub({"org/tiny": files})) as server:
        pulled = hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=server.url)
    assert [repo.id for repo in pulled] == ["org/tiny"]
    assert sorted(name for _, name in server.fetched()) == [
        "model_index.json",
        "tokenizer/merges.txt",
        "unet/config.json",
        WEIGHTS,
    ]
    folder = snapshot(tmp_path, "org/tiny")
    assert (folder / WEIGHTS).is_symlink() and (folder / WEIGHTS).read_bytes() == files[WEIGHTS]
    assert (folder / WEIGHTS).resolve().parent == tmp_path / "models--org--tiny" / "blobs"
    assert not (folder / "unet/diffusion_pytorch_model.safetensors").exists()
    assert hub.cache_state(tiny_entry(), tmp_path) == "yes"
    bars = capsys.readouterr().err
    assert "3.00M" in bars and "B/s" in bars  # the size and the speed

    with fake_hub(FakeHub({"org/tiny": files})) as again:  # pulled already: nothing is fetched
        assert hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=again.url) == []
    assert again.requests == []


def test_a_connection_dropped_mid_file_resumes_from_the_byte_it_reached(tmp_path: Path) -> None:
    files = repo_files(weight_bytes=24 * MB)  # several of huggingface_hub's 10 MiB chunks
    with fake_hub(FakeHub({"org/tiny": files}, drop_once={("org/tiny", WEIGHTS)})) as server:
        hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=server.url)
    assert server.fetched().count(("org/tiny", WEIGHTS)) == 2
    (resumed,) = server.ranges()
    assert resumed.startswith("bytes=") and int(resumed[6:-1]) > 0
    assert (snapshot(tmp_path, "org/tiny") / WEIGHTS).read_bytes() == files[WEIGHTS]


def blobs(cache: Path, repo_id: str = "org/tiny") -> Path:
    return cache / f"models--{repo_id.replace('/', '--')}" / "blobs"


def test_a_pull_cut_off_by_ctrl_c_resumes_the_file_from_the_byte_it_reached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from huggingface_hub import constants, snapshot_download, try_to_load_from_cache

    monkeypatch.setenv("TQDM_POSITION", "-1")
    monkeypatch.setattr(constants, "DOWNLOAD_CHUNK_SIZE", MiB)  # the bytes come in chunks of 1 MiB
    files = repo_files()
    weights, etag = files[WEIGHTS], hashlib.sha256(files[WEIGHTS]).hexdigest()
    bar = hub._bar_class()

    class CtrlC(bar):  # type: ignore[misc, valid-type]
        """Ctrl-C as the third chunk of the weights arrives (before it is written: two are on disk)."""

        def update(self, n: float | None = 1) -> bool | None:
            shown = super().update(n)
            if self.total == len(weights) and self.n > 2 * MiB:
                raise KeyboardInterrupt
            return shown

    with fake_hub(FakeHub({"org/tiny": files})) as server:
        monkeypatch.setattr(hub, "_bar_class", lambda: CtrlC)
        with pytest.raises(KeyboardInterrupt):
            hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=server.url)
        assert (blobs(tmp_path) / f"{etag}.incomplete").read_bytes() == weights[: 2 * MiB]
        assert hub.cache_state(tiny_entry(), tmp_path) == "no"

        monkeypatch.setattr(hub, "_bar_class", lambda: bar)
        server.requests.clear()
        capsys.readouterr()
        hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=server.url)
    assert server.ranges() == [f"bytes={2 * MiB}-"]  # the rest of the weights, and the file not fetched yet:
    assert server.fetched() == [("org/tiny", WEIGHTS), ("org/tiny", "tokenizer/merges.txt")]
    assert " 70%|" in (bars := capsys.readouterr().err) and "2.10MB/3.00MB" in bars  # it starts where the file stood
    pulled = ("model_index.json", "unet/config.json", WEIGHTS, "tokenizer/merges.txt")
    blob_names = sorted(hashlib.sha256(files[name]).hexdigest() for name in pulled)
    assert sorted(path.name for path in blobs(tmp_path).iterdir()) == blob_names  # and no .incomplete left

    cached = try_to_load_from_cache("org/tiny", WEIGHTS, cache_dir=str(tmp_path))
    assert isinstance(cached, str) and Path(cached).read_bytes() == weights
    folder = Path(snapshot_download("org/tiny", cache_dir=str(tmp_path), local_files_only=True))
    assert folder == snapshot(tmp_path, "org/tiny")
    for name in pulled:
        assert (folder / name).is_symlink() and (folder / name).read_bytes() == files[name]


def test_a_partial_file_that_is_not_the_files_start_is_not_trusted(tmp_path: Path) -> None:
    files = repo_files()
    weights, etag = files[WEIGHTS], hashlib.sha256(files[WEIGHTS]).hexdigest()
    older = blobs(tmp_path) / f"{hashlib.sha256(b'the weights before an update').hexdigest()}.incomplete"
    older.parent.mkdir(parents=True)
    older.write_bytes(b"the weights before")  # the start of a file the hub no longer serves
    partial = blobs(tmp_path) / f"{etag}.incomplete"
    partial.write_bytes(os.urandom(len(weights) + 1))  # longer than the file
    with fake_hub(FakeHub({"org/tiny": files})) as server:
        hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=server.url)
    assert server.ranges() == []
    assert (snapshot(tmp_path, "org/tiny") / WEIGHTS).read_bytes() == weights
    assert not partial.exists() and not older.exists()

    again = tmp_path / "again"
    blobs(again).mkdir(parents=True)
    (blobs(again) / f"{etag}.incomplete").write_bytes(os.urandom(MB))  # as long as a start, but other bytes
    with fake_hub(FakeHub({"org/tiny": files})) as server:
        hub.pull(tiny_entry(), cache_dir=again, endpoint=server.url)
    assert server.ranges() == [f"bytes={MB}-"]  # resumed, found wrong by its sha256, fetched whole
    assert server.fetched().count(("org/tiny", WEIGHTS)) == 2
    assert (snapshot(again, "org/tiny") / WEIGHTS).read_bytes() == weights
    assert not (blobs(again) / f"{etag}.incomplete").exists()


def test_a_gated_model_says_how_to_log_in(tmp_path: Path) -> None:
    with (
        fake_hub(FakeHub({"org/tiny": repo_files()}, gated={"org/tiny"})) as server,
        pytest.raises(hub.PullFailed) as failed,
    ):
        hub.pull(tiny_entry(gated=True), cache_dir=tmp_path, endpoint=server.url)
    message = str(failed.value)
    assert "org/tiny is gated" in message and "https://huggingface.co/org/tiny" in message
    assert "hf auth login" in message and "HF_TOKEN" in message
    assert server.fetched() == []


def test_a_gated_inpainting_model_leaves_the_model_pulled_and_serving_without_it(tmp_path: Path) -> None:
    fill = Repo("org/fill", (WEIGHTS,), 3 * MB, gated=True)
    hub_repos = {"org/tiny": repo_files(), "org/fill": repo_files()}
    gated = r"org/fill is gated.*; tiny itself is downloaded, and serves without it"
    with fake_hub(FakeHub(hub_repos, gated={"org/fill"})) as server, pytest.raises(hub.PullFailed, match=gated):
        hub.pull(tiny_entry(inpaint=fill), cache_dir=tmp_path, endpoint=server.url)
    assert hub.cache_state(tiny_entry(inpaint=fill), tmp_path) == "without inpainting"


def test_a_hub_out_of_reach_is_named(tmp_path: Path) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(hub.PullFailed, match=rf"could not reach the hub at {nowhere} for org/tiny \(ConnectError"):
        hub.pull(tiny_entry(), cache_dir=tmp_path, endpoint=nowhere)


def test_too_little_disk_refuses_before_any_byte_is_fetched(tmp_path: Path) -> None:
    seen: list[Path] = []

    def free(path: Path) -> int:
        seen.append(path)
        return 500 * MB  # less than the entry's 3 MB and the GB kept spare

    refused = r"tiny needs 3.0 MB and 1.0 GB to spare in .*, which has 0.5 GB free"
    with fake_hub(FakeHub({"org/tiny": repo_files()})) as server, pytest.raises(hub.PullFailed, match=refused):
        hub.pull(tiny_entry(), cache_dir=tmp_path / "hub", endpoint=server.url, free_bytes=free)
    assert server.requests == []
    assert seen == [tmp_path / "hub"]
    assert hub.disk_free(tmp_path / "not" / "made" / "yet") > 0  # the disk of the nearest folder that exists


def test_pull_of_an_unknown_name_lists_the_names_and_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "pull", "sdxxl"]) == 2
    error = capsys.readouterr().err.strip()
    assert len(error.splitlines()) == 1
    assert "'sdxxl'" in error and all(entry.name in error for entry in CATALOG)


def test_a_model_pulled_on_the_command_line_is_listed_and_served_by_its_name(tmp_path: Path) -> None:
    """`journeyd models pull sd-turbo` against the fake hub (HF_ENDPOINT), into HF_HUB_CACHE, of a repository
    holding the tiny model as sd-turbo's files and more it does not need; then `serve --model sd-turbo` offline."""
    tiny = tiny_sd15(tmp_path / "tiny")
    unneeded = files_of(tiny) | {"README.md": b"# sd-turbo\n", "sd_turbo.safetensors": b"x"}  # fp32, single file
    files = files_of(tiny, variant="fp16") | unneeded
    env = {"HF_HUB_CACHE": str(tmp_path / "hub")}
    with fake_hub(FakeHub({SD_TURBO.model.id: files})) as server:
        done = journeyd("models", "pull", "sd-turbo", env={**env, "HF_ENDPOINT": server.url})
    assert done.returncode == 0, done.stderr
    assert "sd-turbo is in the cache; `journeyd serve --model sd-turbo` serves it" in done.stdout
    fetched = {name for _, name in server.fetched()}
    assert fetched == {name for name in files if name.endswith((".json", ".txt")) or ".fp16." in name}

    listed = journeyd("models", "list", env=env)
    row = next(line for line in listed.stdout.splitlines() if line.startswith("sd-turbo "))
    assert row.split()[1:6] == ["2.6", "GB", "4", "GB", "yes"]
    assert f"cache: {tmp_path / 'hub'}" in listed.stdout

    args = ("--engine", "diffusers", "--model", "sd-turbo")
    server = Server(tmp_path / "data", env={**env, "HF_HUB_OFFLINE": "1"}, args=args).start(timeout_s=120)
    server.stop()
    assert "journeyd diffusers engine (sd-turbo)" in server.log.read_text()


# --- --model NAME ----------------------------------------------------------------------------------------
def test_a_catalog_name_is_its_hub_id_with_its_inpainting_model_when_that_is_cached(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    sdxl = next(entry for entry in CATALOG if entry.name == "sdxl")
    (profile,) = load_profiles("sdxl")
    assert (profile.model, profile.family, profile.variant, profile.inpaint_model) == (
        "stabilityai/stable-diffusion-xl-base-1.0",
        "sdxl",
        "fp16",
        None,
    )
    assert sdxl.inpaint is not None
    cache_repo(tmp_path / "hub", sdxl.inpaint.id, dict.fromkeys(sdxl.inpaint.needed, b"x"))
    (profile,) = load_profiles("sdxl", extra={"steps": 12})  # the operator's settings over the catalog's
    assert (profile.inpaint_model, profile.steps, profile.guidance) == (sdxl.inpaint.id, 12, 7.0)

    monkeypatch.chdir(tmp_path)
    (tmp_path / "sdxl").mkdir()  # a folder of that name is that folder
    (profile,) = load_profiles("sdxl")
    assert (profile.model, profile.inpaint_model, profile.variant) == ("sdxl", None, None)


# --- auto ------------------------------------------------------------------------------------------------
def test_auto_with_no_model_serves_classic_and_names_the_command_for_real_pictures(tmp_path: Path) -> None:
    server = Server(tmp_path / "data", env={"HF_HUB_CACHE": str(tmp_path / "empty")}).start()
    try:
        assert httpx.get(f"{server.url}/healthz").json() == {"ok": True, "engine": "classic"}
    finally:
        server.stop()
    (note,) = [line for line in server.log.read_text().splitlines() if "real pictures" in line]
    assert "classic engine: procedural pictures" in note and "`journeyd models pull sd-turbo`" in note


def test_auto_without_torch_and_diffusers_says_how_to_install_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "diffusers" else real(name, *a))
    choice = choose_engine(make_settings(tmp_path))
    assert choice.settings.engine == "classic"
    assert choice.note is not None and "`EXTRAS=diffusers ./scripts/serve`" in choice.note
    with pytest.raises(ValueError, match=r"a model needs .* torch and diffusers"):
        choose_engine(make_settings(tmp_path, model="sd-turbo"))
    assert choose_engine(make_settings(tmp_path, engine="classic")) == EngineChoice(
        make_settings(tmp_path, engine="classic")
    )


def test_auto_serves_a_catalog_model_found_in_the_hub_cache(tmp_path: Path) -> None:
    cache_repo(tmp_path / "hub", SD_TURBO.model.id, files_of(tiny_sd15(tmp_path / "tiny"), variant="fp16"))
    env = {"HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    server = Server(tmp_path / "data", env=env).start(timeout_s=120)
    try:
        assert httpx.get(f"{server.url}/healthz").json() == {"ok": True, "engine": "diffusers"}
        # loaded at start-up, from the cache's snapshot (an Imagine at sd-turbo's 512 px takes minutes on
        # the tiny model here: the engine's drawing is tested in test_diffusion_engine.py)
        assert httpx.get(f"{server.url}/readyz").json()["checks"]["engine"] == {
            "ok": True,
            "name": "diffusers",
            "loaded": True,
            "devices": 1,
        }
    finally:
        server.stop()
    log = server.log.read_text()
    assert "journeyd diffusers engine (sd-turbo)" in log
    assert "serving sd-turbo, the first catalog model in the Hugging Face cache" in log
