"""The classic engine: procedural pictures that follow the prompt, deterministically, on the CPU."""

from __future__ import annotations

import hashlib
import itertools
import subprocess
import sys

import cv2
import numpy as np
import pytest

from journeyd.domain.errors import InvalidRequest, TaskCancelled
from journeyd.domain.prompt import parse_prompt
from journeyd.engines.base import Engine
from journeyd.engines.classic import ClassicEngine
from journeyd.engines.classic import render as classic_render
from journeyd.imaging.fill import blur_fill

SEEDS = [1234, 1235, 1236, 1237]


def quiet(done: int, total: int, preview: object = None) -> None:
    """A progress callback that does nothing."""


@pytest.fixture(scope="module")
def engine() -> ClassicEngine:
    return ClassicEngine()


def generate(engine: ClassicEngine, prompt: str, size: tuple[int, int] = (192, 192), seeds=SEEDS) -> list:
    return engine.generate(parse_prompt(prompt), size, list(seeds), quiet)


def mean_abs_diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean())


def channel_means(images: list) -> np.ndarray:
    return np.stack(images).astype(np.float32).reshape(-1, 3).mean(axis=0)


def seam_ratios(image: np.ndarray) -> tuple[float, float]:
    """How much the wrap-around seams differ, relative to a typical step between neighbouring pixels."""
    a = image.astype(np.float32)
    across_x = np.abs(a[:, 0] - a[:, -1]).mean() / np.abs(np.diff(a, axis=1)).mean()
    across_y = np.abs(a[0] - a[-1]).mean() / np.abs(np.diff(a, axis=0)).mean()
    return float(across_x), float(across_y)


def high_frequency_energy(image: np.ndarray) -> float:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return float(np.var(cv2.Laplacian(gray, cv2.CV_32F)))


# --- canvas -------------------------------------------------------------------------------------


def test_is_an_engine(engine: ClassicEngine) -> None:
    assert isinstance(engine, Engine)
    assert engine.name == "classic"


@pytest.mark.parametrize("aspect", [(1, 1), (16, 9), (2, 3), (4, 1)])
def test_canvas_size_keeps_ratio_and_area(engine: ClassicEngine, aspect: tuple[int, int]) -> None:
    width, height = engine.canvas_size(parse_prompt(f"x --ar {aspect[0]}:{aspect[1]}"))
    assert width % 8 == 0 and height % 8 == 0
    assert width >= 64 and height >= 64
    assert width / height == pytest.approx(aspect[0] / aspect[1], rel=0.03)
    assert width * height == pytest.approx(512 * 512, rel=0.12)


def test_canvas_size_follows_base_size() -> None:
    assert ClassicEngine(base_size=1024).size_for((1, 1)) == (1024, 1024)
    width, height = ClassicEngine(base_size=64).size_for((8, 1))
    assert height == 64 and width == 512


# --- generate -----------------------------------------------------------------------------------


def test_generate_gives_one_image_per_seed_at_the_requested_size(engine: ClassicEngine) -> None:
    images = generate(engine, "a lighthouse on a cliff", size=(200, 120))
    assert len(images) == 4
    for image in images:
        assert image.shape == (120, 200, 3)
        assert image.dtype == np.uint8


def test_a_motif_named_in_a_scene_stands_in_it_instead_of_a_blob(
    engine: ClassicEngine, monkeypatch: pytest.MonkeyPatch
) -> None:
    def drawn(prompt: str) -> list[np.ndarray]:
        """Where the motif is painted (its glow left out): the picture against the same with nothing standing."""
        pictures = generate(engine, prompt, size=(256, 256))
        with monkeypatch.context() as patch:
            patch.setattr(classic_render, "stand_in_scene", lambda picture, *_: picture)
            bare = generate(engine, prompt, size=(256, 256))
        return [np.abs(a.astype(int) - b).max(axis=2) > 40 for a, b in zip(pictures, bare, strict=True)]

    for where in drawn("a lighthouse on the coast at dusk"):
        ys, xs = np.nonzero(where)
        assert 0.002 < where.mean() < 0.05 and np.ptp(ys) > 2 * np.ptp(xs)  # a tall, narrow tower
    for where in drawn("a small boat on a calm sea"):
        ys, xs = np.nonzero(where)
        assert 0.001 < where.mean() < 0.05 and np.ptp(xs) > np.ptp(ys) * 0.6  # a boat, not a tower
        assert ys.min() > 256 * 0.3  # on the water, not in the sky
    # instead of the figure the subject word used to get, not as well as it
    house = generate(engine, "a house in a snowy field", seeds=[3], size=(256, 256))[0]
    with monkeypatch.context() as patch:
        patch.setattr(classic_render, "STANDING", frozenset())
        figure = generate(engine, "a house in a snowy field", seeds=[3], size=(256, 256))[0]
    assert (np.abs(house.astype(int) - figure).max(axis=2) > 40).mean() > 0.05


def test_generate_is_deterministic_and_seeds_matter(engine: ClassicEngine) -> None:
    first = generate(engine, "sunset over the ocean", seeds=[42])[0]
    again = generate(engine, "sunset over the ocean", seeds=[42])[0]
    other_seed = generate(engine, "sunset over the ocean", seeds=[43])[0]
    other_prompt = generate(engine, "sunset over the ocean, boats", seeds=[42])[0]
    np.testing.assert_array_equal(first, again)
    assert mean_abs_diff(first, other_seed) > 5
    assert mean_abs_diff(first, other_prompt) > 5


def test_generate_is_bit_identical_in_another_process(engine: ClassicEngine) -> None:
    code = (
        "import hashlib\n"
        "from journeyd.engines.classic import ClassicEngine\n"
        "from journeyd.domain.prompt import parse_prompt\n"
        "image = ClassicEngine().generate(parse_prompt('snowy mountains at dawn --tile'), (96, 64), [7], "
        "lambda d, t, p=None: None)[0]\n"
        "print(hashlib.sha256(image.tobytes()).hexdigest())\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    here = generate(engine, "snowy mountains at dawn --tile", size=(96, 64), seeds=[7])[0]
    assert result.stdout.strip() == hashlib.sha256(here.tobytes()).hexdigest()


def test_four_seeds_give_four_clearly_different_images(engine: ClassicEngine) -> None:
    images = generate(engine, "a cat in a garden")
    for a, b in itertools.combinations(images, 2):
        assert mean_abs_diff(a, b) > 8


def test_colour_words_set_the_palette(engine: ClassicEngine) -> None:
    red, _, blue = channel_means(generate(engine, "a red rose, crimson"))
    assert red > blue + 60
    red, _, blue = channel_means(generate(engine, "blue ocean waves"))
    assert blue > red + 60


@pytest.mark.parametrize("prompt", ["red and blue abstract --no red", "red and blue abstract:: red::-1"])
def test_negative_words_keep_a_colour_out(engine: ClassicEngine, prompt: str) -> None:
    red = channel_means(generate(engine, "red and blue abstract"))[0]
    red_avoided, _, blue_kept = channel_means(generate(engine, prompt))
    assert red_avoided < red - 40
    assert blue_kept > red_avoided + 60
    # Hardly any pixel is still a saturated red.
    hsv = cv2.cvtColor(np.concatenate(generate(engine, prompt)), cv2.COLOR_RGB2HSV)
    reddish = ((hsv[..., 0] < 8) | (hsv[..., 0] > 172)) & (hsv[..., 1] > 100) & (hsv[..., 2] > 60)
    assert reddish.mean() < 0.03


def test_scene_words_shape_the_structure(engine: ClassicEngine) -> None:
    def gradients(prompt: str) -> tuple[float, float]:
        ground = np.stack(generate(engine, prompt)).astype(np.float32).mean(axis=3)[:, 120:]
        return np.abs(np.diff(ground, axis=1)).mean(), np.abs(np.diff(ground, axis=2)).mean()

    # Waves are horizontal bands: brightness changes more going down than going across ...
    down, across = gradients("blue ocean waves")
    assert down > 1.2 * across
    # ... while a forest is vertical trunks and tree tops.
    down, across = gradients("a dense green forest")
    assert across > 1.1 * down
    # Night is dark.
    night = np.mean(generate(engine, "a city at night, stars"))
    day = np.mean(generate(engine, "a city on a sunny day"))
    assert night < 0.5 * day


def test_tile_is_seamless_and_plain_images_are_not(engine: ClassicEngine) -> None:
    # A seamless tile's wrap-around seams look like any other step between neighbouring pixels (ratio
    # ~1, averaged over images and both axes since a colour edge may happen to run along a seam);
    # a plain picture's left/right and top/bottom edges are unrelated (sky at the top, ground below).
    for prompt in ("ocean waves, mountains", "abstract pattern"):
        tiles = generate(engine, prompt + " --tile", size=(192, 160))
        assert np.mean([seam_ratios(image) for image in tiles]) < 1.5
        plain = generate(engine, prompt, size=(192, 160))
        assert np.mean([seam_ratios(image) for image in plain]) > 3


def test_chaos_spreads_the_four_images_apart(engine: ClassicEngine) -> None:
    def spread(prompt: str) -> float:
        images = generate(engine, prompt)
        return float(np.mean([mean_abs_diff(a, b) for a, b in itertools.combinations(images, 2)]))

    assert spread("a cat in a garden --chaos 100") > 1.25 * spread("a cat in a garden")


def test_stylize_saturates(engine: ClassicEngine) -> None:
    def saturation(prompt: str) -> float:
        return float(cv2.cvtColor(np.concatenate(generate(engine, prompt)), cv2.COLOR_RGB2HSV)[..., 1].mean())

    assert saturation("sunset over the sea --stylize 1000") > 1.5 * saturation("sunset over the sea --stylize 0")


def test_weird_and_quality_change_the_picture(engine: ClassicEngine) -> None:
    plain = generate(engine, "a cat", seeds=[5])[0]
    assert mean_abs_diff(plain, generate(engine, "a cat --weird 2000", seeds=[5])[0]) > 10
    low = generate(engine, "a cat --q .25", seeds=[5])[0]
    high = generate(engine, "a cat --q 2", seeds=[5])[0]
    assert high_frequency_energy(high) > high_frequency_energy(low)


def test_image_prompt_pulls_the_picture_towards_it(engine: ClassicEngine) -> None:
    init = np.zeros((300, 200, 3), np.uint8)
    init[..., 1] = 200  # a green image of another size and ratio
    spec = parse_prompt("a red rose")
    without = engine.generate(spec, (128, 128), [1], quiet)[0]
    half = engine.generate(spec, (128, 128), [1], quiet, init_images=[init])[0]
    strong = engine.generate(parse_prompt("a red rose --iw 3"), (128, 128), [1], quiet, init_images=[init])[0]
    target = np.broadcast_to(np.array([0, 200, 0], np.uint8), (128, 128, 3))
    assert half.shape == (128, 128, 3)
    assert mean_abs_diff(strong, target) < mean_abs_diff(half, target) < mean_abs_diff(without, target)


def test_progress_is_reported_and_cancellation_stops_generate(engine: ClassicEngine) -> None:
    calls: list[tuple[int, int]] = []
    previews: list[np.ndarray | None] = []

    def record(done: int, total: int, preview: np.ndarray | None = None) -> None:
        calls.append((done, total))
        previews.append(preview)

    generate_spec = parse_prompt("a fox")
    images = engine.generate(generate_spec, (64, 64), SEEDS, record)
    assert len(calls) >= 1 + len(SEEDS)
    # the first picture, once drawn, is the step preview while the others are drawn
    assert previews[0] is None and previews[-1] is not None and np.array_equal(previews[-1], images[0])
    assert [done for done, _ in calls] == sorted(done for done, _ in calls)
    assert calls[-1][0] == calls[-1][1]

    seen: list[int] = []

    def cancel_on_second(done: int, total: int, preview: object = None) -> None:
        seen.append(done)
        if len(seen) == 2:
            raise TaskCancelled()

    with pytest.raises(TaskCancelled):
        engine.generate(generate_spec, (64, 64), SEEDS, cancel_on_second)
    assert len(seen) == 2


# --- vary and upscale ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def picture(engine: ClassicEngine) -> np.ndarray:
    return generate(engine, "sunset over the ocean, mountains", size=(192, 160), seeds=[99])[0]


def test_vary_strength_orders_the_amount_of_change(engine: ClassicEngine, picture: np.ndarray) -> None:
    spec = parse_prompt("sunset over the ocean, mountains")
    same = engine.vary(picture, spec, 0.0, SEEDS, quiet)
    assert all(np.array_equal(image, picture) for image in same)

    subtle = engine.vary(picture, spec, 0.5, SEEDS, quiet)
    strong = engine.vary(picture, spec, 0.85, SEEDS, quiet)
    assert all(image.shape == picture.shape for image in subtle + strong)
    subtle_change = np.mean([mean_abs_diff(image, picture) for image in subtle])
    strong_change = np.mean([mean_abs_diff(image, picture) for image in strong])
    assert 3 < subtle_change < 0.8 * strong_change
    for a, b in itertools.combinations(subtle, 2):
        assert mean_abs_diff(a, b) > 2
    np.testing.assert_array_equal(subtle[0], engine.vary(picture, spec, 0.5, SEEDS[:1], quiet)[0])


def test_upscale_doubles_and_creative_adds_detail(engine: ClassicEngine, picture: np.ndarray) -> None:
    spec = parse_prompt("sunset over the ocean, mountains")
    subtle = engine.upscale(picture, spec, "subtle", 7, quiet)
    creative = engine.upscale(picture, spec, "creative", 7, quiet)
    assert subtle.shape == creative.shape == (320, 384, 3)
    # Subtle is a faithful resampling: shrinking it back gives the original.
    back = cv2.resize(subtle, (192, 160), interpolation=cv2.INTER_AREA)
    assert mean_abs_diff(back, picture) < 3
    assert high_frequency_energy(creative) > 1.5 * high_frequency_energy(subtle)
    np.testing.assert_array_equal(creative, engine.upscale(picture, spec, "creative", 7, quiet))


# --- inpaint ------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["region", "outpaint"])
def test_inpaint_keeps_the_outside_and_paints_four_candidates(
    engine: ClassicEngine, picture: np.ndarray, kind: str
) -> None:
    mask = np.zeros(picture.shape[:2], bool)
    if kind == "region":
        mask[40:120, 60:150] = True
    else:
        mask[:, 128:] = True  # a pan to the right: new canvas pre-filled from the edge
        picture = picture.copy()
        picture[:, 128:] = picture[:, 127:128]
    candidates = engine.inpaint(picture, mask, parse_prompt("a blue lake"), SEEDS, kind, quiet)
    assert len(candidates) == 4
    for candidate in candidates:
        assert candidate.shape == picture.shape
        np.testing.assert_array_equal(candidate[~mask], picture[~mask])
        assert mean_abs_diff(candidate[mask], picture[mask]) > 3
    for a, b in itertools.combinations(candidates, 2):
        assert mean_abs_diff(a[mask], b[mask]) > 3


def test_vary_region_follows_the_new_prompt(engine: ClassicEngine) -> None:
    red = np.zeros((160, 160, 3), np.uint8)
    red[..., 0] = 210
    mask = np.zeros((160, 160), bool)
    mask[30:130, 30:130] = True
    candidates = engine.inpaint(red, mask, parse_prompt("deep blue, navy"), SEEDS, "region", quiet)
    middle = np.zeros_like(mask)
    middle[60:100, 60:100] = True
    for candidate in candidates:
        r, _, b = candidate[middle].astype(np.float32).mean(axis=0)
        assert b > r


def test_outpaint_continues_the_known_colours_at_the_seam(engine: ClassicEngine) -> None:
    image = np.zeros((128, 192, 3), np.uint8)
    image[..., 1] = 180
    mask = np.zeros((128, 192), bool)
    mask[:, 128:] = True
    candidates = engine.inpaint(image, mask, parse_prompt("red fire"), SEEDS, "outpaint", quiet)
    green = np.array([0, 180, 0], np.float32)
    for candidate in candidates:
        seam = np.abs(candidate[:, 128:131].astype(np.float32) - green).mean()
        far = np.abs(candidate[:, 180:].astype(np.float32) - green).mean()
        assert seam < 12 < far


def test_inpaint_handles_a_large_half_masked_image(engine: ClassicEngine) -> None:
    image = np.random.default_rng(3).integers(0, 256, (1024, 1024, 3), dtype=np.uint8)
    mask = np.zeros((1024, 1024), bool)
    mask[:, 512:] = True
    for kind in ("region", "outpaint"):
        candidates = engine.inpaint(image, mask, parse_prompt("a castle"), SEEDS, kind, quiet)
        assert len(candidates) == 4


def test_progress_cancellation_stops_inpaint(engine: ClassicEngine, picture: np.ndarray) -> None:
    mask = np.zeros(picture.shape[:2], bool)
    mask[20:80, 20:80] = True
    calls: list[tuple[int, int]] = []
    engine.inpaint(picture, mask, parse_prompt("a cat"), SEEDS, "region", lambda d, t, p=None: calls.append((d, t)))
    assert len(calls) >= 1 + len(SEEDS) and calls[-1][0] == calls[-1][1]

    def cancel(done: int, total: int, preview: object = None) -> None:
        if done >= 2:
            raise TaskCancelled()

    with pytest.raises(TaskCancelled):
        engine.inpaint(picture, mask, parse_prompt("a cat"), SEEDS, "region", cancel)
    with pytest.raises(TaskCancelled):
        engine.inpaint(picture, mask, parse_prompt("a cat"), SEEDS, "outpaint", cancel)


def _sky(side: int = 256) -> np.ndarray:
    """A plain sky: blue getting paler downwards, soft clouds and fine grain, as a region would sit in."""
    rng = np.random.default_rng(5)
    v = np.linspace(0.0, 1.0, side, dtype=np.float32)[:, None, None]
    sky = np.array([60, 110, 200], np.float32) * (1 - v) + np.array([170, 200, 235], np.float32) * v
    clouds = cv2.GaussianBlur(rng.standard_normal((side, side)).astype(np.float32), (0, 0), 12)
    sky = sky + (clouds / clouds.std() * 10)[..., None] + rng.normal(0, 4, (side, side, 1))
    return np.clip(np.broadcast_to(sky, (side, side, 3)), 0, 255).astype(np.uint8)


def _disc(side: int, cx: int, cy: int, r: int) -> np.ndarray:
    mask = np.zeros((side, side), np.uint8)
    cv2.circle(mask, (cx, cy), r, 1, -1)
    return mask > 0


def _rings(mask: np.ndarray, px: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """The bands just inside and just outside the mask's border."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * px + 1, 2 * px + 1))
    m = mask.astype(np.uint8)
    return mask & (cv2.erode(m, kernel) == 0), (cv2.dilate(m, kernel) > 0) & ~mask


def _gradient(image: np.ndarray) -> np.ndarray:
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))


@pytest.mark.parametrize("prompt", ["", "a zorblax over there"])
def test_vary_region_with_nothing_drawable_heals_into_its_surroundings(engine: ClassicEngine, prompt: str) -> None:
    sky, hole = _sky(), _disc(256, 100, 90, 40)
    inner, outer = _rings(hole)
    for candidate in engine.inpaint(sky, hole, parse_prompt(prompt), SEEDS, "region", quiet):
        np.testing.assert_array_equal(candidate[~hole], sky[~hole])
        # No halo: just inside the border looks like just outside it.
        assert np.abs(candidate[inner].mean(0) - candidate[outer].mean(0)).max() < 6
        # No seam: the border is no steeper than the sky is anywhere else, and the grain goes on.
        grad = _gradient(candidate)
        assert grad[inner | outer].mean() < 1.3 * grad[~hole].mean()
        fine = candidate.astype(np.float32) - cv2.GaussianBlur(candidate.astype(np.float32), (0, 0), 1.5)
        assert 0.6 < fine[hole].std() / fine[outer].std() < 1.5
        # No invented scene: the region keeps the sky's colours (a nearby sky is no bluer than 12 levels off).
        around = (cv2.dilate(hole.astype(np.uint8), np.ones((41, 41), np.uint8)) > 0) & ~hole
        assert np.abs(candidate[hole].mean(0) - sky[around].mean(0)).max() < 12


def test_vary_region_paints_a_named_sun_as_a_bright_compact_disc_inside_the_region(engine: ClassicEngine) -> None:
    sky, hole = _sky(), _disc(256, 128, 100, 60)
    inner, outer = _rings(hole)
    candidates = engine.inpaint(sky, hole, parse_prompt("a glowing golden sun"), SEEDS, "region", quiet)
    for candidate in candidates:
        bright = cv2.cvtColor(candidate, cv2.COLOR_RGB2GRAY) > 225
        assert bright.sum() > 300 and not (bright & ~hole).any()
        ys, xs = np.nonzero(bright)
        assert max(np.ptp(ys), np.ptp(xs)) < 0.8 * 120  # compact: well inside the region's 120 px
        r, g, b = candidate[bright].astype(np.float32).mean(0)
        assert r >= g > b  # golden, not white or blue
        assert np.abs(candidate[inner].mean(0) - candidate[outer].mean(0)).max() < 6  # no halo at the border
    assert mean_abs_diff(candidates[0][hole], candidates[1][hole]) > 1  # candidates differ


def test_vary_region_draws_a_lighthouse_standing_in_the_region_and_lit_like_the_scene(engine: ClassicEngine) -> None:
    day, hole = _sky(), np.zeros((256, 256), bool)
    hole[40:230, 100:160] = True
    night = (day * 0.25).astype(np.uint8)
    for scene in (day, night):
        (candidate,) = engine.inpaint(scene, hole, parse_prompt("a lighthouse"), SEEDS[:1], "region", quiet)
        rgb = candidate.astype(np.float32)
        red = (rgb[..., 0] > 1.6 * rgb[..., 2] + 8) & hole
        ys, _ = np.nonzero(red)
        assert red.sum() > 300 and np.ptp(ys) > 80  # a tall red-striped tower
    tower_day = engine.inpaint(day, hole, parse_prompt("a lighthouse"), SEEDS[:1], "region", quiet)[0][hole]
    tower_night = engine.inpaint(night, hole, parse_prompt("a lighthouse"), SEEDS[:1], "region", quiet)[0][hole]
    assert tower_night.astype(np.float32).mean() < 0.6 * tower_day.astype(np.float32).mean()


# --- blur_fill ----------------------------------------------------------------------------------


def test_blur_fill_keeps_known_pixels_and_fills_from_the_surroundings() -> None:
    image = np.zeros((120, 160, 3), np.uint8)
    image[:, :80] = (200, 30, 30)
    image[:, 80:] = (30, 30, 200)
    image[40:80, 20:60] = (255, 255, 255)  # junk inside the hole must not matter
    mask = np.zeros((120, 160), bool)
    mask[40:80, 20:60] = True

    filled = blur_fill(image, mask)
    assert filled.dtype == np.uint8 and filled.shape == image.shape
    np.testing.assert_array_equal(filled[~mask], image[~mask])
    inside = filled[50:70, 30:50].astype(np.float32).reshape(-1, 3)
    assert np.abs(inside - np.array([200, 30, 30])).max() < 40  # red, like everything around it


def test_blur_fill_continues_a_gradient_and_leaves_trivial_masks_alone() -> None:
    ramp = np.tile(np.linspace(0, 255, 200, dtype=np.float32), (100, 1))
    mask = np.zeros((100, 200), bool)
    mask[:, 90:110] = True
    filled = blur_fill(ramp, mask)
    assert filled.dtype == np.float32
    np.testing.assert_array_equal(filled[~mask], ramp[~mask])
    assert np.all(np.diff(filled[50, 85:115]) >= -1.0)  # still rising across the hole
    assert abs(float(filled[50, 100]) - ramp[50, 100]) < 20

    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    np.testing.assert_array_equal(blur_fill(image, np.zeros((32, 32), bool)), image)
    np.testing.assert_array_equal(blur_fill(image, np.ones((32, 32), bool)), image)


# --- describe, blend, shorten ----------------------------------------------------------------------------
def _landscape(width: int = 128, height: int = 96) -> np.ndarray:
    """A dusky blue sky over a dark brown ground, the horizon low."""
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = (70, 90, 140)
    image[int(height * 0.72) :] = (60, 40, 20)
    return image


def _stripes(width: int = 128, height: int = 96) -> np.ndarray:
    y, x = np.mgrid[0:height, 0:width]
    image = np.zeros((height, width, 3), np.uint8)
    image[((x + y) // 10) % 2 == 0] = (235, 205, 40)
    image[((x + y) // 10) % 2 == 1] = (30, 140, 70)
    return image


def test_describe_says_what_the_pixels_show(engine: ClassicEngine) -> None:
    prompts = engine.describe(_landscape(), 7, quiet)
    assert len(prompts) == 4 and len(set(prompts)) == 4
    caption, style, lighting, short = prompts
    assert "low horizon" in caption and "dusky" in caption
    assert style.startswith(caption) and "style" in style  # caption + style
    assert lighting.startswith(caption) and "light" in lighting and "framing" in lighting  # + lighting/composition
    assert len(short) < len(caption) and "," in short  # shortened
    assert "horizon" not in engine.describe(_stripes(), 7, quiet)[0]  # diagonal stripes have none
    assert "fox" not in " ".join(prompts)  # it names what it measures, never a subject it cannot see
    assert engine.describe(_landscape(), 7, quiet) == prompts  # the same seed, the same words


def test_blend_keeps_one_images_structure_in_anothers_colours(engine: ClassicEngine) -> None:
    landscape, stripes = _landscape(), _stripes()
    tiles = engine.blend([landscape, stripes], parse_prompt(""), (128, 96), SEEDS, quiet)
    assert [tile.shape for tile in tiles] == [(96, 128, 3)] * 4 and len({t.tobytes() for t in tiles}) == 4
    average = ((landscape.astype(np.float32) + stripes) / 2).astype(np.uint8)
    assert all(mean_abs_diff(tile, average) > 15 for tile in tiles)  # never a plain average

    def detail(image: np.ndarray) -> float:  # share of edge pixels: the stripes have many, the landscape one line
        return float((cv2.Canny(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), 30, 90) > 0).mean())

    def near(tile: np.ndarray, source: np.ndarray) -> bool:
        return bool(np.abs(channel_means([tile]) - channel_means([source])).max() < 30)

    kinds = set()
    for tile in tiles:  # each: one image's structure in the other's colours
        if detail(tile) > 0.5 * detail(stripes):
            assert near(tile, landscape) and not near(tile, stripes)
            kinds.add("stripes in the landscape's colours")
        else:
            assert detail(tile) < 2 * detail(landscape) and near(tile, stripes) and not near(tile, landscape)
            kinds.add("the landscape in the stripes' colours")
    assert len(kinds) == 2  # the seed picks the pairing


def test_shorten_weighs_the_words_it_draws(engine: ClassicEngine) -> None:
    shortened = engine.shorten(parse_prompt("a beautiful portrait of a wizard in a dark forest, purple, 8k"))
    weights = dict(shortened.weights)
    assert [word for word, _ in shortened.weights][:4] == ["a", "beautiful", "portrait", "of"]  # prompt order
    assert weights["wizard"] == 1.0 and weights["forest"] > weights["purple"] > weights["dark"] > 0
    assert weights["beautiful"] == weights["8k"] == weights["a"] == 0.0
    assert len(shortened.prompts) == 5 and len(set(shortened.prompts)) == 5
    assert shortened.prompts[0] == "portrait wizard dark forest purple"
    assert all("8k" not in prompt and "beautiful" not in prompt for prompt in shortened.prompts)
    heavier = dict(engine.shorten(parse_prompt("a wizard, purple::3 forest, dark")).weights)
    assert heavier["purple"] > heavier["forest"]  # a part's :: weight scales its words
    with pytest.raises(InvalidRequest, match="too few"):
        engine.shorten(parse_prompt("a beautiful cat"))


def test_references_are_refused_at_submit_by_an_engine_without_an_adapter(engine: ClassicEngine) -> None:
    for flag in ("--sref", "--cref"):
        with pytest.raises(InvalidRequest, match=f"no IP-Adapter; {flag} needs the diffusers engine"):
            engine.check(parse_prompt(f"a fox {flag} https://example.com/a.png"))
    engine.check(parse_prompt("https://example.com/a.png a fox --iw 2"))  # image prompts it does follow
