"""The diffusers engine on tiny random SD 1.5 and SDXL models that the tests build and save.

Everything runs on the CPU with HF_HUB_OFFLINE=1: the models are loaded through the engine's real
loading code, from a diffusers folder and from a single .safetensors checkpoint.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file
from torch._dynamo.utils import counters

from journeyd.domain.errors import InvalidRequest, TaskCancelled
from journeyd.domain.lifecycle import Status
from journeyd.domain.prompt import parse_prompt
from journeyd.engines import load_engines
from journeyd.engines.diffusion import DiffusionEngine, ModelLoadError, ProfileError, load_model, load_profiles
from journeyd.engines.diffusion import engine as diffusion_engine
from journeyd.engines.diffusion.fp8 import Fp8Linear
from journeyd.engines.diffusion.loading import cpu_has_bf16, devices_of, pick_device
from journeyd.engines.diffusion.profiles import Profile, detect_family
from journeyd.engines.diffusion.speedups import SpeedupError, parse_speedups
from journeyd.imaging.codec import decode_png
from journeyd.render import seeds_for
from journeyd.runtime import build_runtime
from journeyd.service import Caller
from tests.conftest import LOOPBACK, Flow, TestClient, box_mask, create_app, make_settings, png_data_url
from tests.test_seed_flow import _beyond_feather
from tests.tiny_models import (
    export_denoiser_file,
    export_single_file,
    tiny_flux,
    tiny_flux_fill,
    tiny_lora,
    tiny_sd15,
    tiny_sdxl,
)

FAST = {"size": 64, "steps": 3}
LOCAL = Caller(None)


pytestmark = pytest.mark.usefixtures("hub_offline")  # only the cache is read: nothing is downloaded


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("models")
    sd15 = tiny_sd15(root / "sd15")
    return {
        "sd15": sd15,
        "sdxl": tiny_sdxl(root / "sdxl"),
        "sd15_file": export_single_file(sd15, root / "sd15.safetensors"),
    }


@pytest.fixture(scope="module")
def sd15(models: dict[str, Path]) -> DiffusionEngine:
    return load_engine(load_profiles(str(models["sd15"]), extra=FAST))


@pytest.fixture(scope="module")
def sdxl(models: dict[str, Path]) -> DiffusionEngine:
    return load_engine(load_profiles(str(models["sdxl"]), extra=FAST))


def load_engine(profiles: list[Profile], **options: str) -> DiffusionEngine:
    """The engine in fp32, whatever this CPU does best: pictures are compared across engines, and
    must compare the same on every machine."""
    return DiffusionEngine.load(profiles, dtype="float32", **options)


def _quiet(done: int, total: int, preview: np.ndarray | None = None) -> None:
    pass


# --- loading ------------------------------------------------------------------------------------------
def test_families_are_told_from_folders_and_checkpoints(models: dict[str, Path]) -> None:
    assert detect_family(str(models["sd15"])) == "sd15"
    assert detect_family(str(models["sdxl"])) == "sdxl"
    assert detect_family(str(models["sd15_file"])) == "sd15"


def test_a_single_file_loads_the_same_weights_as_the_folder(models: dict[str, Path], sd15: DiffusionEngine) -> None:
    engine = load_engine(load_profiles(str(models["sd15_file"]), extra={**FAST, "config": str(models["sd15"])}))
    prompt = parse_prompt("a lighthouse")
    ours = engine.generate(prompt, (64, 64), [7], _quiet)[0]
    theirs = sd15.generate(prompt, (64, 64), [7], _quiet)[0]
    np.testing.assert_array_equal(ours, theirs)


def test_missing_and_broken_models_fail_at_start_up_naming_them(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match="/no/such/model"):
        load_engine(load_profiles("/no/such/model", family="sd15"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match=r"no model_index\.json"):
        load_engine(load_profiles(str(empty), family="sd15"))
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    with pytest.raises((ModelLoadError, ProfileError), match=r"broken\.safetensors"):
        load_engine(load_profiles(str(broken), family="sd15"))
    with pytest.raises(ModelLoadError, match="not/a/real-hub-model"):  # offline: only the cache is looked at
        load_engine(load_profiles("not/a/real-hub-model", family="sdxl"))
    with pytest.raises(ProfileError, match="cannot tell which family"):
        load_profiles("someone/some-model")
    with pytest.raises(ProfileError, match="needs a model"):
        load_profiles(None)


# --- actions ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("family", ["sd15", "sdxl"])
def test_imagine_makes_four_distinct_images_at_the_bucket_size(family: str, request: pytest.FixtureRequest) -> None:
    engine: DiffusionEngine = request.getfixturevalue(family)
    prompt = parse_prompt("a red barn --ar 16:9 --no fog")
    width, height = engine.canvas_size(prompt)
    assert width > height and width % 8 == 0 and height % 8 == 0
    images = engine.generate(prompt, (width, height), [1, 2, 3, 4], _quiet)
    assert [i.shape for i in images] == [(height, width, 3)] * 4
    assert len({i.tobytes() for i in images}) == 4


def test_seeds_reproduce_tile_by_tile(sd15: DiffusionEngine) -> None:
    prompt = parse_prompt("a paper boat")
    grid = sd15.generate(prompt, (64, 64), [40, 41, 42, 43], _quiet)
    alone = sd15.generate(prompt, (64, 64), [42], _quiet)[0]
    assert np.abs(alone.astype(int) - grid[2]).max() <= 2  # batched and single maths differ in rounding only
    assert np.abs(alone.astype(int) - grid[1]).mean() > 5


def test_progress_is_monotonic_and_a_cancel_stops_at_the_next_step(sd15: DiffusionEngine) -> None:
    seen: list[tuple[int, int]] = []
    sd15.generate(
        parse_prompt("x"), (64, 64), [1, 2, 3, 4], lambda done, total, preview=None: seen.append((done, total))
    )
    fractions = [done / total for done, total in seen]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0 and len(seen) >= 3

    calls: list[int] = []

    def cancel_after_first(done: int, total: int, preview: np.ndarray | None = None) -> None:
        calls.append(done)
        if done >= 1:
            raise TaskCancelled("stop")

    with pytest.raises(TaskCancelled):
        sd15.generate(parse_prompt("x"), (64, 64), [1, 2, 3, 4], cancel_after_first)
    assert calls == [1]


def test_multi_prompt_parts_are_blended_by_weight(sd15: DiffusionEngine) -> None:
    """`a:: b` blends two concepts (not the phrase "a b"); a part's weight is its share of the blend."""

    def draw(text: str) -> np.ndarray:
        return sd15.generate(parse_prompt(text), (64, 64), [11], _quiet)[0].astype(int)

    tower, slides = draw("lowest tower"), draw("newer slides")
    assert np.abs(draw("lowest tower::1 newer slides::0.0001") - tower).max() <= 2  # a negligible part
    assert np.abs(draw("newer slides::1000 lowest tower") - slides).max() <= 2
    blend, phrase = draw("lowest tower:: newer slides"), draw("lowest tower, newer slides")
    for other in (tower, slides, phrase):
        assert np.abs(blend - other).mean() > 0.5
    assert np.abs(draw("lowest tower::3 newer slides") - blend).mean() > 0.5  # weights matter
    assert np.abs(draw("lowest tower::3 newer slides") - tower).mean() < np.abs(blend - tower).mean()


def test_vary_upscale_and_tile(sd15: DiffusionEngine) -> None:
    prompt = parse_prompt("a castle")
    image = sd15.generate(prompt, (64, 64), [5], _quiet)[0]
    subtle = sd15.vary(image, prompt, 0.5, [1, 2, 3, 4], _quiet)
    strong = sd15.vary(image, prompt, 0.85, [1, 2, 3, 4], _quiet)
    assert subtle[0].shape == image.shape and len({s.tobytes() for s in subtle}) == 4
    change = [np.mean([np.abs(v.astype(int) - image).mean() for v in vs]) for vs in (subtle, strong)]
    assert 0 < change[0] < change[1]
    big = sd15.upscale(image, prompt, "subtle", 3, _quiet)
    assert big.shape == (128, 128, 3)
    with pytest.MonkeyPatch.context() as patch:  # 9 tiles, 4 to a call: the same picture as one at a time
        patch.setattr(diffusion_engine, "UPSCALE_TILES_PER_CALL", 1)
        assert np.abs(sd15.upscale(image, prompt, "subtle", 3, _quiet).astype(int) - big).max() <= 2
    tiled = sd15.generate(parse_prompt("a castle --tile"), (64, 64), [5], _quiet)[0]
    assert not np.array_equal(tiled, image)
    convs = [m for m in sd15.models[0].txt2img.unet.modules() if isinstance(m, torch.nn.Conv2d)]
    assert {c.padding_mode for c in convs} == {"zeros"}  # --tile left the shared model as it was


def test_region_candidates_come_back_full_size_and_differ_inside(sdxl: DiffusionEngine) -> None:
    prompt = parse_prompt("a blue door")
    image = sdxl.generate(prompt, (64, 64), [3], _quiet)[0]
    mask = np.zeros((64, 64), bool)
    mask[8:24, 30:50] = True
    candidates = sdxl.inpaint(image, mask, prompt, [1, 2, 3, 4], "region", _quiet)
    assert [c.shape for c in candidates] == [image.shape] * 4
    assert len({c[mask].tobytes() for c in candidates}) == 4


def test_unmapped_versions_are_refused_before_anything_runs(models: dict[str, Path], tmp_path: Path) -> None:
    config = tmp_path / "models.toml"
    config.write_text(
        f'[[profile]]\nname = "xl"\nmodel = "{models["sdxl"]}"\nversions = ["7", "6.1"]\nsize = 64\nsteps = 2\n\n'
        f'[[profile]]\nname = "anime"\nmodel = "{models["sd15"]}"\nversions = ["niji6"]\nsize = 64\nsteps = 2\n'
    )
    engine = load_engine(load_profiles(models_file=str(config)))
    assert engine._model(parse_prompt("x")).profile.name == "xl"
    assert engine._model(parse_prompt("x --niji 6")).profile.name == "anime"
    assert engine._model(parse_prompt("x --v 6.1")).profile.name == "xl"
    with pytest.raises(InvalidRequest, match=r"--v 5\.2: no model is configured"):
        engine.check(parse_prompt("x --v 5.2"))


# --- the whole flow over HTTP ------------------------------------------------------------------------------
def test_region_zoom_and_pan_chained_keep_unmasked_pixels(tmp_path: Path, clock, sdxl: DiffusionEngine) -> None:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path), clock=clock, seed=3, engine=sdxl)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        flow = Flow(client, runtime)
        grid = flow.imagine("a harbour at dawn --ar 1:1")
        assert grid["properties"]["engine"] == "diffusers"
        upscaled = flow.upscale(grid["id"], 2)
        parent = flow.image(upscaled["image_urls"][0])
        height, width = parent.shape[:2]

        mask = box_mask(width, height, (width // 2, 0, width, height // 2))
        modal_id = flow.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
        flow.submit(
            "/v1/midjourney/generations/modal",
            {"task_id": modal_id, "prompt": "a red sail", "mask_url": png_data_url(mask)},
        )
        region = flow.done(modal_id)
        far = _beyond_feather(mask)
        for url in region["image_urls"]:
            np.testing.assert_array_equal(flow.image(url)[far], parent[far])

        chosen = flow.upscale(modal_id, 1)
        region_image = flow.image(chosen["image_urls"][0])
        zoom = flow.done(flow.submit("/v1/midjourney/generations/zoom", {"task_id": chosen["id"]}))
        zoomed = flow.image(zoom["image_urls"][0])
        y, x = (zoomed.shape[0] - height) // 2, (zoomed.shape[1] - width) // 2
        m = 3 + zoomed.shape[0] // 32  # the feather at the zoomed size, and a little more
        np.testing.assert_array_equal(zoomed[y + m : y + height - m, x + m : x + width - m], region_image[m:-m, m:-m])

        chosen = flow.upscale(zoom["id"], 3)
        zoomed_choice = flow.image(chosen["image_urls"][0])
        pan = flow.done(flow.submit("/v1/midjourney/generations/pan", {"task_id": chosen["id"], "direction": "right"}))
        panned = flow.image(pan["image_urls"][0])
        keep = zoomed_choice.shape[1] - (3 + panned.shape[0] // 32)
        np.testing.assert_array_equal(panned[:, :keep], zoomed_choice[:, :keep])
        # and through it all, the first parent's far corner is still the original pixel
        np.testing.assert_array_equal(panned[y + m, x + m], parent[m, m])


def test_an_unmapped_version_is_a_400_over_http(tmp_path: Path, clock, models: dict[str, Path]) -> None:  # type: ignore[no-untyped-def]
    engine = load_engine(load_profiles(str(models["sd15"]), extra={**FAST, "versions": ["6"]}))
    runtime = build_runtime(make_settings(tmp_path), clock=clock, seed=3, engine=engine)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        answer = client.post("/v1/midjourney/generations", json={"prompt": "x --v 7"})
        assert answer.status_code == 400 and "no model is configured for version 7" in answer.json()["error"]["message"]
        assert client.post("/v1/midjourney/generations", json={"prompt": "x --v 6"}).status_code == 200
        assert client.post("/mj/submit/imagine", json={"prompt": "x --niji 5"}).json()["code"] == 4


def test_each_request_gets_its_own_scheduler_of_the_configured_kind(models: dict[str, Path]) -> None:
    engine = load_engine(load_profiles(str(models["sdxl"]), extra={**FAST, "scheduler": "euler_trailing"}))
    model = engine.models[0]
    first = model.pipeline("txt2img").scheduler
    again, inpaint = model.pipeline("txt2img"), model.pipeline("inpaint")
    assert again.scheduler is not first and inpaint.scheduler is not again.scheduler  # per-request state
    assert again is model.txt2img and inpaint.unet is again.unet  # pipelines built once, weights shared
    assert type(first).__name__ == "EulerDiscreteScheduler"
    assert first.config.timestep_spacing == "trailing"
    with pytest.raises(ProfileError, match="scheduler 'warp' is not one of"):
        load_profiles(str(models["sdxl"]), extra={"scheduler": "warp"})


def test_a_comma_list_of_devices_loads_one_engine_on_each_and_missing_devices_are_named(
    models: dict[str, Path], tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, engine="diffusers", model=str(models["sd15"]), device="cpu, cpu", dtype="float32"
    )
    first, second = load_engines(settings)
    assert first.models[0].txt2img.unet is not second.models[0].txt2img.unet  # each device its own weights
    assert devices_of(None) == [None] and not torch.cuda.is_available()  # one GPU or none: the best device
    for device, message in (("gpu", "'gpu' is not one of cuda, cuda:N, mps or cpu"), ("cuda:1", "has no CUDA GPU")):
        with pytest.raises(ValueError, match=message):
            load_engines(settings.model_copy(update={"device": f"cpu,{device}"}))


def test_the_cpu_runs_bf16_where_it_has_native_bf16(models: dict[str, Path]) -> None:
    """Where the CPU does bf16 natively (AVX512-BF16, AMX) the default is bf16, 2.5x faster than fp32
    for a full SD 1.5 UNet; elsewhere fp32. A chosen dtype wins, and a bad one is refused."""
    assert pick_device("cpu")[1] == (torch.bfloat16 if cpu_has_bf16() else torch.float32)
    assert pick_device("cpu", "float32")[1] == torch.float32
    with pytest.raises(ValueError, match="'fp8' is not one of auto, float32, bfloat16, float16"):
        pick_device("cpu", "fp8")
    engine = DiffusionEngine.load(load_profiles(str(models["sd15"]), extra=FAST), dtype="bfloat16")
    assert engine.models[0].txt2img.unet.dtype == torch.bfloat16
    images = engine.generate(parse_prompt("a lighthouse"), (64, 64), [1, 2, 3, 4], _quiet)
    assert len({image.tobytes() for image in images}) == 4 and all(image.std() > 1 for image in images)


def test_a_half_precision_model_stays_half_precision(models: dict[str, Path]) -> None:
    """diffusers' from_pipe casts shared modules to fp32 unless told otherwise: that would make a
    GPU model four times slower for everyone using it."""
    model = load_model(load_profiles(str(models["sdxl"]), extra=FAST)[0], torch.device("cpu"), torch.bfloat16)
    for pipe in (model.txt2img, model.img2img, model.inpaint, model.pipeline("inpaint"), model.pipeline("txt2img")):
        assert pipe.unet.dtype == pipe.vae.dtype == pipe.text_encoder.dtype == torch.bfloat16


# --- several queued Imagine tasks in one call -----------------------------------------------------------------
def _spy_on_batches(engine: DiffusionEngine, monkeypatch: pytest.MonkeyPatch, between_steps=None) -> list[list[str]]:  # type: ignore[no-untyped-def]
    """Record the prompts of every pipeline call the engine makes for Imagine; `between_steps` runs
    before each step is reported."""
    calls: list[list[str]] = []
    real = engine.generate_batch

    def spy(jobs, size, progress):  # type: ignore[no-untyped-def]
        calls.append([prompt.text for prompt, _ in jobs])
        if between_steps is not None:
            first = progress[0]

            def report(done, total, preview=None):  # type: ignore[no-untyped-def]
                between_steps(done)
                first(done, total, preview)

            progress = [report, *progress[1:]]
        return real(jobs, size, progress)

    monkeypatch.setattr(engine, "generate_batch", spy)
    return calls


def test_compatible_imagines_queued_back_to_back_share_one_call(
    tmp_path: Path, clock, sd15: DiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, batch_tasks=3), clock=clock, seed=3, engine=sd15)
    calls = _spy_on_batches(sd15, monkeypatch)
    imagine = runtime.service.imagine
    tower, slides = imagine(LOCAL, "lowest tower --seed 5"), imagine(LOCAL, "newer slides --seed 9 --chaos 30")
    wide = imagine(LOCAL, "lowest tower --ar 2:1 --seed 5")  # another size: another call
    later = imagine(LOCAL, "newer slides --seed 9")  # fits the first call, but is never run before `wide`
    assert runtime.run_pending() == 3
    assert calls == [["lowest tower", "newer slides"], ["lowest tower"], ["newer slides"]]
    for task in (tower, slides, wide, later):
        done = runtime.store.get_task(task.id)
        assert done is not None and done.status is Status.SUCCESS and done.progress == 100
    for task in (tower, slides):  # the same pictures as the task would get alone
        done = runtime.store.get_task(task.id)
        alone = sd15.generate(task.spec, (64, 64), seeds_for(task.seed), _quiet)
        for key, image in zip(done.result.images, alone, strict=True):  # type: ignore[union-attr]
            assert np.abs(decode_png(runtime.images.get(key)).astype(int) - image).max() <= 2


def test_a_batch_that_runs_out_of_gpu_memory_is_drawn_one_task_at_a_time(
    tmp_path: Path, clock, sd15: DiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    """The device's memory is outside our control here: a stand-in raises torch's out-of-memory error
    for any call of more than `room` images, as a GPU would."""
    runtime = build_runtime(make_settings(tmp_path, batch_tasks=2), clock=clock, seed=3, engine=sd15)
    draw, room = sd15._draw, [4]

    def limited(model, jobs, size, progress):  # type: ignore[no-untyped-def]
        if sum(len(seeds) for _, seeds in jobs) > room[0]:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return draw(model, jobs, size, progress)

    monkeypatch.setattr(sd15, "_draw", limited)
    calls = _spy_on_batches(sd15, monkeypatch)
    tower, slides = runtime.service.imagine(LOCAL, "lowest tower"), runtime.service.imagine(LOCAL, "newer slides")
    assert runtime.run_pending() == 1
    assert calls == [["lowest tower", "newer slides"], ["lowest tower"], ["newer slides"]]
    for task in (tower, slides):
        done = runtime.store.get_task(task.id)
        assert done is not None and done.status is Status.SUCCESS and len(done.result.images) == 4  # type: ignore[union-attr]

    room[0] = 2  # now not even one grid fits: the task fails, saying why
    alone = runtime.service.imagine(LOCAL, "lowest tower")
    runtime.run_pending()
    failed = runtime.store.get_task(alone.id)
    assert failed is not None and failed.status is Status.FAILURE
    assert failed.fail_reason == (
        "the GPU ran out of memory (CUDA out of memory. Tried to allocate 2.00 GiB); a smaller size or model may fit"
    )


def test_a_task_cancelled_during_a_shared_call_leaves_it_and_the_other_finishes(
    tmp_path: Path, clock, sd15: DiffusionEngine, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    runtime = build_runtime(make_settings(tmp_path, batch_tasks=2), clock=clock, seed=3, engine=sd15)
    kept, dropped = runtime.service.imagine(LOCAL, "lowest tower"), runtime.service.imagine(LOCAL, "newer slides")
    _spy_on_batches(sd15, monkeypatch, lambda step: runtime.service.cancel(LOCAL, dropped.id) if step == 1 else None)
    runtime.run_pending()
    ended = runtime.store.get_task(dropped.id)
    assert ended is not None and ended.status is Status.CANCELLED and ended.result is None
    finished = runtime.store.get_task(kept.id)
    assert finished is not None and finished.status is Status.SUCCESS and len(finished.result.images) == 4  # type: ignore[union-attr]

    both = [runtime.service.imagine(LOCAL, "lowest tower"), runtime.service.imagine(LOCAL, "newer slides")]
    steps: list[int] = []

    def cancel_both(step: int) -> None:
        steps.append(step)
        for task in both:
            runtime.service.cancel(LOCAL, task.id)

    monkeypatch.undo()  # the first spy's cancel is done with
    _spy_on_batches(sd15, monkeypatch, cancel_both)
    runtime.run_pending()
    assert steps == [1]  # the call stopped once no task was left in it
    assert all(runtime.store.get_task(t.id).status is Status.CANCELLED for t in both)  # type: ignore[union-attr]


def test_a_task_queued_for_a_version_no_longer_served_fails_alone(
    tmp_path: Path, clock, sd15: DiffusionEngine, models: dict[str, Path]
) -> None:  # type: ignore[no-untyped-def]
    before = build_runtime(make_settings(tmp_path), clock=clock, seed=3, engine=sd15)  # serves every --v
    gone = before.service.imagine(LOCAL, "lowest tower --v 7")
    kept = before.service.imagine(LOCAL, "lowest tower --v 6")
    before.store.close()
    engine = load_engine(load_profiles(str(models["sd15"]), extra={**FAST, "versions": ["6"]}))
    after = build_runtime(make_settings(tmp_path, batch_tasks=2), clock=clock, seed=3, engine=engine)  # restarted
    assert after.run_pending() == 2
    failed = after.store.get_task(gone.id)
    assert failed is not None and failed.status is Status.FAILURE
    assert "no model is configured for version 7" in (failed.fail_reason or "")
    assert after.store.get_task(kept.id).status is Status.SUCCESS  # type: ignore[union-attr]


# --- few-step LoRAs and dedicated inpainting checkpoints -------------------------------------------------------
def test_an_lcm_lora_profile_bakes_the_lora_in_and_runs_few_steps(models: dict[str, Path], tmp_path: Path) -> None:
    lora = tiny_lora(models["sd15"], tmp_path / "lcm-lora" / "lcm.safetensors")
    few_steps = {**FAST, "steps": 2, "guidance": 1.0, "scheduler": "lcm"}
    engine = load_engine(load_profiles(str(models["sd15"]), extra={**few_steps, "lora": str(lora)}))
    without = load_engine(load_profiles(str(models["sd15"]), extra=few_steps))
    model = engine.models[0]
    assert type(model.pipeline("txt2img").scheduler).__name__ == "LCMScheduler"
    assert not any("lora" in name for name, _ in model.txt2img.unet.named_modules())  # merged, adapter gone
    seen: list[int] = []
    prompt = parse_prompt("a paper boat")
    ours = engine.generate(prompt, (64, 64), [5, 6], lambda done, total, preview=None: seen.append(total))
    plain = without.generate(prompt, (64, 64), [5, 6], _quiet)
    assert set(seen) == {2} and len({i.tobytes() for i in ours}) == 2
    assert all(np.abs(a.astype(int) - b).mean() > 0.5 for a, b in zip(ours, plain, strict=True))  # the LoRA shows
    off = load_engine(load_profiles(str(models["sd15"]), extra={**few_steps, "lora": str(lora), "lora_scale": 0.0}))
    for a, b in zip(off.generate(prompt, (64, 64), [5, 6], _quiet), plain, strict=True):
        assert np.abs(a.astype(int) - b).max() <= 1  # lora_scale 0: the base model's pictures
    with pytest.raises(ModelLoadError, match=r"could not load LoRA '.*missing\.safetensors'"):
        load_engine(
            load_profiles(str(models["sd15"]), extra={**few_steps, "lora": str(tmp_path / "missing.safetensors")})
        )


def test_a_dedicated_inpainting_checkpoint_does_region_and_zoom(models: dict[str, Path], tmp_path: Path) -> None:
    inpainting = tiny_sd15(tmp_path / "sd15-inpainting", inpaint=True)
    engine = load_engine(load_profiles(str(models["sd15"]), extra={**FAST, "inpaint_model": str(inpainting)}))
    model = engine.models[0]
    assert model.inpaint.unet.config.in_channels == 9 and model.txt2img.unet.config.in_channels == 4
    prompt = parse_prompt("a blue door")
    image = engine.generate(prompt, (64, 64), [3], _quiet)[0]
    mask = np.zeros((64, 64), bool)
    mask[8:24, 30:50] = True
    for kind in ("region", "outpaint"):
        candidates = engine.inpaint(image, mask, prompt, [1, 2, 3, 4], kind, _quiet)
        assert [c.shape for c in candidates] == [image.shape] * 4
        assert len({c[mask].tobytes() for c in candidates}) == 4
    # the same checkpoint as one original-format file paints the same
    single = {**FAST, "inpaint_model": str(export_single_file(inpainting, tmp_path / "inpainting.safetensors"))}
    from_file = load_engine(load_profiles(str(models["sd15"]), extra={**single, "inpaint_config": str(inpainting)}))
    np.testing.assert_array_equal(
        from_file.inpaint(image, mask, prompt, [1, 2], "region", _quiet),
        engine.inpaint(image, mask, prompt, [1, 2], "region", _quiet),
    )


# --- speed-ups -----------------------------------------------------------------------------------------------
def test_speedups_are_chosen_per_device_and_bad_names_are_refused() -> None:
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert parse_speedups(None, cpu) == parse_speedups("auto", cpu) == frozenset()
    assert parse_speedups("auto", cuda) == {"channels_last", "fused_qkv"}
    assert parse_speedups("auto, compile", cuda) == {"channels_last", "fused_qkv", "compile"}
    assert parse_speedups("none", cuda) == frozenset()
    with pytest.raises(SpeedupError, match="'warp' is not one of auto, none, channels_last"):
        parse_speedups("channels_last,warp", cpu)
    with pytest.raises(SpeedupError, match="cache skips parts of the UNet, which cuda_graphs captures whole"):
        parse_speedups("cache,cuda_graphs", cuda)


def test_compiled_fused_channels_last_model_draws_the_same_pictures(
    models: dict[str, Path], sd15: DiffusionEngine
) -> None:
    """Every picture-keeping lever at once (regional and VAE compile included, on the CPU here): compiling happens at
    start-up, so the first grid at the default size compiles nothing; the pictures are the plain
    model's to within rounding, --tile still works, and a second size recompiles instead of failing."""
    fast = load_engine(
        load_profiles(str(models["sd15"]), extra=FAST), speedups="channels_last,fused_qkv,compile,compile_vae"
    )
    unet = fast.models[0].txt2img.unet
    assert type(unet.attn_processors["mid_block.attentions.0.transformer_blocks.0.attn1.processor"]).__name__ == (
        "FusedAttnProcessor2_0"
    )
    assert unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    graphs = counters["stats"]["unique_graphs"]
    assert graphs > 0  # the warm-up compiled
    for prompt, size, compiles in (
        ("a lighthouse", (64, 64), False),
        ("a lighthouse --ar 2:1", (96, 48), True),
        ("bricks --tile", (64, 64), False),
    ):
        spec, seeds = parse_prompt(prompt), [3, 4, 5, 6]
        ours = fast.generate(spec, size, seeds, _quiet)
        assert (counters["stats"]["unique_graphs"] > graphs) == compiles, prompt
        graphs = counters["stats"]["unique_graphs"]
        plain = sd15.generate(spec, size, seeds, _quiet)
        for a, b in zip(ours, plain, strict=True):
            assert np.abs(a.astype(int) - b).max() <= 2


def test_whole_unet_compile_warms_up_the_dedicated_inpainting_model_too(
    models: dict[str, Path], sd15: DiffusionEngine, tmp_path: Path
) -> None:
    """`cuda_graphs` compiles each UNet whole (plain compile on the CPU): start-up runs a grid and, for
    the 9-channel inpainting UNet, an outpaint, so neither first task compiles; pictures as the plain model's."""
    inpainting = tiny_sd15(tmp_path / "sd15-inpainting", inpaint=True)
    profile = load_profiles(str(models["sd15"]), extra={**FAST, "inpaint_model": str(inpainting)})
    fast = load_engine(profile, speedups="cuda_graphs")
    graphs = counters["stats"]["unique_graphs"]
    spec, seeds = parse_prompt("a lighthouse"), [3, 4, 5, 6]
    grid = fast.generate(spec, (64, 64), seeds, _quiet)
    hole = np.zeros((64, 64), bool)
    hole[:, 40:] = True
    assert len(fast.inpaint(grid[0], hole, spec, seeds, "outpaint", _quiet)) == 4
    assert counters["stats"]["unique_graphs"] == graphs
    for ours, plain in zip(grid, sd15.generate(spec, (64, 64), seeds, _quiet), strict=True):
        assert np.abs(ours.astype(int) - plain).max() <= 2


def test_fp8_linears_stay_float8_under_casts_and_draw_nearly_the_same_pictures(
    models: dict[str, Path], sdxl: DiffusionEngine
) -> None:
    """The fp8 lever (float8 weights, row-wise scales): each product within float8's rounding of the
    plain one even after diffusers-style `.to(bf16)` casts, the pictures a few levels from the plain
    model's (where two seeds differ by tens), and refused on a device that cannot run it."""
    torch.manual_seed(0)
    linear, x = torch.nn.Linear(64, 32), torch.randn(3, 5, 64)
    exact = linear(x)
    quantized = Fp8Linear(linear).to(torch.bfloat16)
    assert quantized.weight_bits.dtype == torch.uint8 and quantized.scale_bits.dtype == torch.int32
    assert (quantized(x.bfloat16()).float() - exact).abs().max() < 0.06 * exact.abs().max()

    fast = load_engine(load_profiles(str(models["sdxl"]), extra=FAST), speedups="fp8")
    unet = fast.models[0].inpaint.unet  # the derived pipelines share the swapped modules
    assert sum(isinstance(m, Fp8Linear) for m in unet.modules()) > 0
    assert not any(
        type(m) is torch.nn.Linear
        for b in unet.modules()
        if type(b).__name__ == "BasicTransformerBlock"
        for m in b.modules()
    )
    spec, seeds = parse_prompt("a lighthouse"), [3, 4, 5, 6]
    ours, plain = fast.generate(spec, (64, 64), seeds, _quiet), sdxl.generate(spec, (64, 64), seeds, _quiet)
    difference = np.abs(np.stack(ours).astype(int) - np.stack(plain))
    assert difference.max() <= 12 and difference.mean() < 1.5
    assert np.abs(plain[0].astype(int) - plain[1]).mean() > 10 * difference.mean()
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:40] = True
    assert len(fast.inpaint(plain[0], mask, spec, seeds, "region", _quiet)) == 4
    with pytest.raises(SpeedupError, match=r"fp8 needs an NVIDIA GPU of compute capability 8\.9"):
        parse_speedups("auto,fp8", torch.device("mps"))


def test_the_step_cache_runs_the_deep_blocks_one_step_in_three_and_few_step_calls_whole(
    models: dict[str, Path],
) -> None:
    """`cache` (DeepCache): over 12 steps the UNet's deep blocks run on steps 1, 4, 7 and 10 only and its
    outermost blocks on all; the pictures stay near the plain model's (a few levels, where two seeds
    differ by tens), each tile is still its seed's alone, nothing carries over between calls, Region and
    Vary run through it, and a call of fewer steps than MIN_STEPS is the plain model's exactly."""
    twelve = load_profiles(str(models["sdxl"]), extra={**FAST, "steps": 12})
    fast, plain = load_engine(twelve, speedups="cache"), load_engine(twelve)
    unet = fast.models[0].txt2img.unet
    runs: Counter[str] = Counter()
    unet.mid_block.resnets[0].register_forward_hook(lambda *_: runs.update(["deep"]))
    unet.up_blocks[-1].resnets[0].register_forward_hook(lambda *_: runs.update(["outermost"]))
    spec, seeds = parse_prompt("a lighthouse"), [3, 4, 5, 6]
    ours = fast.generate(spec, (64, 64), seeds, _quiet)
    assert runs == {"deep": 4, "outermost": 12}
    theirs = plain.generate(spec, (64, 64), seeds, _quiet)
    difference = np.abs(np.stack(ours).astype(int) - np.stack(theirs))
    assert 0 < difference.mean() < 3
    assert np.abs(theirs[0].astype(int) - theirs[1]).mean() > 10 * difference.mean()
    assert np.abs(fast.generate(spec, (64, 64), [5], _quiet)[0].astype(int) - ours[2]).max() <= 2
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:40] = True
    assert len({c[mask].tobytes() for c in fast.inpaint(ours[0], mask, spec, seeds, "region", _quiet)}) == 4
    assert len(fast.vary(ours[0], spec, 0.5, seeds, _quiet)) == 4
    few = parse_prompt("a lighthouse --q .25")  # 6 steps
    np.testing.assert_array_equal(
        fast.generate(few, (64, 64), seeds, _quiet), plain.generate(few, (64, 64), seeds, _quiet)
    )


def test_each_profile_can_have_its_own_levers_and_misspelt_settings_are_refused(
    models: dict[str, Path], tmp_path: Path
) -> None:
    """A models file gives the 30-step model the step cache and leaves the other on the server's levers
    (JOURNEYD_SPEEDUPS); a bad lever names its profile, and a setting no profile has is refused at
    start-up instead of being ignored."""
    config = tmp_path / "models.toml"
    config.write_text(
        f'[[profile]]\nname = "xl"\nmodel = "{models["sdxl"]}"\nversions = ["7"]\nsize = 64\nsteps = 12\n'
        'speedups = "auto,cache"\n\n'
        f'[[profile]]\nname = "anime"\nmodel = "{models["sd15"]}"\nversions = ["niji6"]\nsize = 64\nsteps = 12\n'
    )
    engine = load_engine(load_profiles(models_file=str(config)), speedups="none")
    xl, anime = (model.txt2img.unet for model in engine.models)
    assert hasattr(xl, "step_cache") and not hasattr(anime, "step_cache")
    config.write_text(config.read_text().replace('"auto,cache"', '"auto,warp"'))
    with pytest.raises(SpeedupError, match="profile 'xl': speedups: 'warp' is not one of auto, none"):
        load_engine(load_profiles(models_file=str(config)))
    config.write_text(config.read_text().replace("speedups =", "speedup ="))
    with pytest.raises(ProfileError, match="profile 'xl': unknown setting speedup; a profile takes name, model"):
        load_profiles(models_file=str(config))


# --- FLUX.1 (with FLUX.1-Fill for Region, Zoom and Pan) --------------------------------------------------------
FLUX = {"size": 64, "steps": 2, "guidance": 3.5, "text_tokens": 48}


@pytest.fixture(scope="module")
def flux_folders(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("flux")
    base, fill = tiny_flux(root / "flux"), tiny_flux_fill(root / "flux-fill")
    assert detect_family(str(base)) == detect_family(str(fill)) == "flux"
    return base, fill


@pytest.fixture(scope="module")
def flux(flux_folders: tuple[Path, Path]) -> DiffusionEngine:
    base, fill = flux_folders
    return load_engine(load_profiles(str(base), extra={**FLUX, "inpaint_model": str(fill)}))


def test_flux_imagine_and_negative_prompts_through_true_cfg(flux: DiffusionEngine) -> None:
    prompt = parse_prompt("a glass teapot --ar 3:2")
    width, height = flux.canvas_size(prompt)
    assert width > height and width % 16 == 0 and height % 16 == 0  # FLUX packs latents 2x2
    images = flux.generate(prompt, (width, height), [1, 2, 3, 4], _quiet)
    assert len({i.tobytes() for i in images}) == 4 and images[0].shape == (height, width, 3)
    without = flux.generate(parse_prompt("a glass teapot"), (64, 64), [9], _quiet)[0]
    with_no = flux.generate(parse_prompt("a glass teapot --no steam"), (64, 64), [9], _quiet)[0]
    assert not np.array_equal(without, with_no)  # --no costs a second pass, and changes the picture
    blended = flux.generate(parse_prompt("a glass teapot:: steam::2"), (64, 64), [9], _quiet)[0]
    assert not np.array_equal(blended, without)  # the T5 and CLIP conditionings are blended


def test_the_step_cache_is_refused_at_start_up_for_flux(flux_folders: tuple[Path, Path]) -> None:
    with pytest.raises(ModelLoadError, match=r"FluxTransformer2DModel is not a UNet; the step cache works on SD 1\.5"):
        load_engine(load_profiles(str(flux_folders[0]), extra=FLUX), speedups="cache")


def test_flux_tile_draws_seamless_textures(flux: DiffusionEngine) -> None:
    """--tile on FLUX: the VAE pads circularly and the latents are rolled between steps (the
    transformer has no convolutions), so the wrap-around seams are as smooth as the picture inside."""

    def seam_over_inside(image: np.ndarray) -> float:
        pixels = image.astype(float)
        seams = np.abs(pixels[:, 0] - pixels[:, -1]).mean() + np.abs(pixels[0] - pixels[-1]).mean()
        inside = np.abs(np.diff(pixels, axis=1)).mean() + np.abs(np.diff(pixels, axis=0)).mean()
        return float(seams / inside)

    seeds = list(range(8))
    plain = np.mean([seam_over_inside(i) for i in flux.generate(parse_prompt("bricks"), (64, 64), seeds, _quiet)])
    tiled = flux.generate(parse_prompt("bricks --tile"), (64, 64), seeds, _quiet)
    assert np.mean([seam_over_inside(i) for i in tiled]) < 1.03 < 1.08 < plain
    assert {conv.padding_mode for conv in flux.models[0].txt2img.vae.modules() if hasattr(conv, "padding_mode")} == {
        "zeros"
    }


def test_flux_single_files_draw_what_the_folders_draw(
    flux_folders: tuple[Path, Path], flux: DiffusionEngine, tmp_path: Path
) -> None:
    """A FLUX transformer file (and a FLUX.1-Fill one) with the folders it belongs with as `config`:
    the same pictures as the folders, and Fill shares FLUX's text encoders and VAE instead of a second copy."""
    base, fill = flux_folders
    base_file = export_denoiser_file(base, tmp_path / "flux1-tiny.safetensors")
    fill_file = export_denoiser_file(fill, tmp_path / "flux1-fill-tiny.safetensors")
    assert detect_family(str(base_file)) == "flux"
    profile = {**FLUX, "config": str(base), "inpaint_model": str(fill_file), "inpaint_config": str(fill)}
    files = load_engine(load_profiles(str(base_file), extra=profile))
    model = files.models[0]
    assert model.inpaint.text_encoder_2 is model.txt2img.text_encoder_2 and model.inpaint.vae is model.txt2img.vae
    prompt, seeds = parse_prompt("a glass teapot"), [3, 4]
    images = files.generate(prompt, (64, 64), seeds, _quiet)
    np.testing.assert_array_equal(images, flux.generate(prompt, (64, 64), seeds, _quiet))
    mask = np.zeros((64, 64), bool)
    mask[10:30, 10:40] = True
    region = files.inpaint(images[0], mask, prompt, seeds, "region", _quiet)
    np.testing.assert_array_equal(region, flux.inpaint(images[0], mask, prompt, seeds, "region", _quiet))
    assert not np.array_equal(region[0][mask], images[0][mask])
    # Without config, the checkpoint's kind names the hub repository: one in diffusers' layout has no kind
    with pytest.raises(ModelLoadError, match="set config to the diffusers folder or hub id it belongs with"):
        load_engine(load_profiles(str(base_file), extra=FLUX))
    # ... and one in Black Forest Labs' layout does (here only its header: offline, the repository is not cached)
    header_only = tmp_path / "flux1-schnell.safetensors"
    save_file(
        {"double_blocks.0.img_attn.norm.key_norm.scale": torch.zeros(1), "img_in.weight": torch.zeros(1, 64)},
        str(header_only),
    )
    with pytest.raises(ModelLoadError, match=r"come from 'black-forest-labs/FLUX\.1-schnell'"):
        load_engine(load_profiles(str(header_only), extra=FLUX))


def test_flux_region_zoom_and_pan_use_fill_and_keep_unmasked_pixels(
    tmp_path: Path,
    clock,
    flux: DiffusionEngine,  # type: ignore[no-untyped-def]
) -> None:
    assert type(flux.models[0].inpaint).__name__ == "FluxFillPipeline"
    runtime = build_runtime(make_settings(tmp_path), clock=clock, seed=5, engine=flux)
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        flow = Flow(client, runtime)
        upscaled = flow.upscale(flow.imagine("a lantern on a table")["id"], 4)
        parent = flow.image(upscaled["image_urls"][0])
        height, width = parent.shape[:2]
        mask = box_mask(width, height, (0, height // 2, width // 2, height))
        modal_id = flow.submit("/v1/midjourney/generations/inpaint", {"task_id": upscaled["id"]})
        flow.submit("/v1/midjourney/generations/modal", {"task_id": modal_id, "mask_url": png_data_url(mask)})
        region = flow.done(modal_id)
        far = _beyond_feather(mask)
        candidates = [flow.image(url) for url in region["image_urls"]]
        for candidate in candidates:
            np.testing.assert_array_equal(candidate[far], parent[far])
        assert len({c[mask > 0].tobytes() for c in candidates}) == 4
        for path, body in (("zoom", {}), ("pan", {"direction": "down"})):
            task = flow.done(flow.submit(f"/v1/midjourney/generations/{path}", {"task_id": upscaled["id"], **body}))
            assert task["status"] == "SUCCESS" and len(task["image_urls"]) == 4


def test_step_previews_show_the_picture_forming_while_the_task_runs(
    tmp_path: Path,
    clock,
    models: dict[str, Path],  # type: ignore[no-untyped-def]
) -> None:
    """Previews come from a latent-to-RGB map fitted on the model's own VAE (no extra weights); a
    running task shows the latest one to every dialect, and it is gone once the task ends."""
    engine = load_engine(load_profiles(str(models["sdxl"]), extra={"size": 64, "steps": 7}))
    previews: list[np.ndarray] = []
    engine.generate(
        parse_prompt("a garden"),
        (64, 48),
        [1, 2, 3, 4],
        lambda done, total, preview=None: previews.append(preview) if preview is not None else None,
    )
    assert previews and all(p.shape[2] == 3 and p.dtype == np.uint8 for p in previews)
    assert previews[0].shape[1] > previews[0].shape[0]  # the shape of the picture being drawn

    runtime = build_runtime(make_settings(tmp_path), clock=clock, seed=3, engine=engine)
    seen: dict[str, object] = {}
    generate = engine.generate

    def watching(prompt, size, seeds, progress, init_images=()):  # type: ignore[no-untyped-def]
        def watch(done: int, total: int, preview: np.ndarray | None = None) -> None:
            clock.advance(0.3)  # a step's time: a worker writes progress (and a preview) at most every quarter second
            progress(done, total, preview)
            if preview is not None and "mj" not in seen:  # look at the task mid-run, as a client polling
                seen["mj"] = client.get(f"/mj/task/{task_id}/fetch").json()
                seen["apimart"] = client.get(f"/v1/midjourney/{task_id}").json()
                seen["image"] = client.get(seen["apimart"]["preview_url"].replace("http://testserver", ""))

        return generate(prompt, size, seeds, watch, init_images)

    engine.generate = watching  # type: ignore[method-assign]
    with TestClient(create_app(runtime, manage_runtime=False), client=LOOPBACK) as client:
        task_id = client.post("/mj/submit/imagine", json={"prompt": "a garden"}).json()["result"]
        runtime.run_pending()
        done = client.get(f"/mj/task/{task_id}/fetch").json()
        gone = client.get(seen["apimart"]["preview_url"].replace("http://testserver", ""))  # type: ignore[index]
    assert seen["mj"]["status"] == "IN_PROGRESS" and "/preview.jpg?v=" in seen["mj"]["imageUrl"]  # type: ignore[index]
    assert seen["image"].headers["content-type"] == "image/jpeg"  # type: ignore[attr-defined]
    assert done["status"] == "SUCCESS" and done["imageUrl"].endswith("/grid.png")
    assert gone.status_code == 404  # previews are for while it runs


def test_steps_and_cfg_in_the_prompt_replace_the_models_own(sd15: DiffusionEngine) -> None:
    """--steps and --cfg (ImaginePro's `steps` and `cfgScale`) are run as given, not scaled by --q or --stylize:
    the profile's own 3 steps at guidance 7 draw the same picture as --steps 3 --cfg 7 with --q and --s set."""

    def draw(prompt: str) -> np.ndarray:
        return sd15.generate(parse_prompt(prompt), (64, 64), [7], _quiet)[0]

    plain = draw("a lighthouse")
    np.testing.assert_array_equal(draw("a lighthouse --q 2 --steps 3"), plain)
    np.testing.assert_array_equal(draw("a lighthouse --s 1000 --cfg 7"), plain)
    assert np.abs(draw("a lighthouse --steps 1").astype(int) - plain).mean() > 1
    assert np.abs(draw("a lighthouse --cfg 1.5").astype(int) - plain).mean() > 1
