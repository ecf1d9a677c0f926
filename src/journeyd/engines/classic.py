"""The classic engine: procedural pictures on the CPU, no neural weights.

Every pixel comes from ordinary image processing. A prompt is read against a small lexicon of
colour words, scene words (sunset, ocean, forest, mountains, night, city, snow, fire, desert, ...)
and subject words (cat, fox, person, ...); anything else still gets a colour from a stable hash.
Each image is then painted in layers: a palette-mapped 1/f noise field, a sky, the scene's
structures (ridges, waves, tree lines, skylines, dunes, flames, stars, a central figure), fine
grain, and a stylisation pass in HSV that also pushes `--no` colours out.

Randomness comes from `PCG64` seeded with the seed and a SHA-256 of the prompt's words, so the
same prompt and seed give the same pixels in every process. All noise is built in Fourier space;
with `--tile` every layer is periodic, so the picture wraps around seamlessly.
"""

from __future__ import annotations

import colorsys
import hashlib
import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache

import cv2
import numpy as np

from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import Image, InpaintKind, Mask, Progress, UpscaleMode
from journeyd.imaging.fill import blur_fill

RGB = tuple[float, float, float]  # 0..1


def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


_STAGES = 3  # progress ticks per rendered image: base field, structures, finish
_INPAINT_RENDER_SIDE = 512  # prompt content for inpainting is drawn at most this big, then resized
_INPAINT_HOLE_PIXELS = 48_000  # cv2.inpaint is run on a copy scaled so the hole is about this big

# --- lexicon -----------------------------------------------------------------------------------

_COLOURS: dict[str, RGB] = {
    "red": (0.80, 0.10, 0.12),
    "crimson": (0.62, 0.05, 0.15),
    "scarlet": (0.85, 0.14, 0.08),
    "ruby": (0.70, 0.05, 0.20),
    "maroon": (0.45, 0.05, 0.08),
    "orange": (0.95, 0.50, 0.10),
    "amber": (1.00, 0.68, 0.10),
    "yellow": (0.97, 0.86, 0.15),
    "gold": (0.85, 0.66, 0.20),
    "golden": (0.88, 0.68, 0.22),
    "green": (0.15, 0.62, 0.20),
    "emerald": (0.05, 0.55, 0.35),
    "lime": (0.60, 0.85, 0.15),
    "olive": (0.45, 0.48, 0.15),
    "mint": (0.60, 0.90, 0.75),
    "teal": (0.00, 0.50, 0.50),
    "cyan": (0.10, 0.80, 0.90),
    "turquoise": (0.20, 0.82, 0.78),
    "aqua": (0.30, 0.85, 0.85),
    "blue": (0.12, 0.30, 0.85),
    "azure": (0.20, 0.55, 0.95),
    "navy": (0.05, 0.10, 0.35),
    "cobalt": (0.00, 0.28, 0.67),
    "sapphire": (0.06, 0.20, 0.60),
    "indigo": (0.30, 0.10, 0.60),
    "purple": (0.50, 0.15, 0.65),
    "violet": (0.55, 0.30, 0.85),
    "lavender": (0.72, 0.62, 0.90),
    "magenta": (0.85, 0.10, 0.65),
    "fuchsia": (0.90, 0.20, 0.70),
    "pink": (0.96, 0.50, 0.70),
    "coral": (1.00, 0.50, 0.40),
    "peach": (1.00, 0.75, 0.60),
    "white": (0.96, 0.96, 0.96),
    "black": (0.04, 0.04, 0.05),
    "grey": (0.50, 0.50, 0.52),
    "gray": (0.50, 0.50, 0.52),
    "silver": (0.75, 0.77, 0.80),
    "brown": (0.45, 0.28, 0.14),
    "chocolate": (0.35, 0.20, 0.10),
    "beige": (0.87, 0.80, 0.66),
    "tan": (0.82, 0.70, 0.50),
    "cream": (0.98, 0.94, 0.80),
    "ivory": (0.98, 0.96, 0.88),
    "bronze": (0.70, 0.45, 0.20),
    "copper": (0.72, 0.40, 0.20),
}

# Scene words: word -> theme. Each theme brings its own colours into the palette and a structure layer.
_THEME_WORDS: dict[str, tuple[str, ...]] = {
    "sunset": ("sunset", "sunrise", "dusk", "dawn", "twilight"),
    "sun": ("sun", "sunny", "sunlight", "sunshine", "daylight", "summer"),
    "sky": ("sky", "skies", "cloud", "clouds", "cloudy", "heaven", "storm"),
    "water": (
        "ocean", "sea", "lake", "water", "river", "wave", "waves", "beach", "coast", "shore",
        "underwater", "pond", "bay", "harbor", "harbour", "tide", "reflection",
    ),
    "forest": (
        "forest", "jungle", "tree", "trees", "wood", "woods", "woodland", "leaf", "leaves", "foliage",
        "rainforest", "pine", "pines", "oak",
    ),
    "grass": (
        "grass", "grassy", "meadow", "field", "fields", "lawn", "prairie", "garden", "plant", "plants",
        "moss", "park", "wheat", "farm", "countryside",
    ),
    "mountains": (
        "mountain", "mountains", "hill", "hills", "peak", "peaks", "valley", "cliff", "cliffs", "alps",
    ),
    "night": ("night", "midnight", "evening", "nocturnal", "star", "stars", "starry"),
    "space": ("space", "galaxy", "cosmos", "cosmic", "nebula", "universe", "planet", "astronaut"),
    "moon": ("moon", "moonlight", "moonlit", "lunar"),
    "city": (
        "city", "cities", "building", "buildings", "skyline", "street", "streets", "town", "skyscraper",
        "skyscrapers", "urban", "downtown", "metropolis", "architecture", "cyberpunk",
    ),
    "snow": (
        "snow", "snowy", "winter", "ice", "icy", "frozen", "frost", "frosty", "glacier", "arctic", "blizzard",
    ),
    "fire": ("fire", "lava", "flame", "flames", "volcano", "inferno", "burning", "embers", "blaze", "magma"),
    "desert": ("desert", "sand", "sandy", "dune", "dunes", "sahara", "canyon", "arid"),
}  # fmt: skip
_THEME_OF: dict[str, str] = {word: theme for theme, words in _THEME_WORDS.items() for word in words}

_THEME_COLOURS: dict[str, tuple[RGB, ...]] = {
    "sunset": ((1.00, 0.55, 0.20), (0.95, 0.45, 0.55), (0.45, 0.20, 0.50), (1.00, 0.80, 0.35)),
    "sun": ((1.00, 0.90, 0.50), (0.45, 0.70, 0.95)),
    "sky": ((0.55, 0.75, 0.95), (0.95, 0.96, 1.00)),
    "water": ((0.05, 0.30, 0.60), (0.10, 0.50, 0.70), (0.20, 0.60, 0.80)),
    "forest": ((0.10, 0.40, 0.15), (0.25, 0.55, 0.20), (0.06, 0.25, 0.10), (0.35, 0.28, 0.15)),
    "grass": ((0.30, 0.60, 0.18), (0.45, 0.68, 0.22), (0.18, 0.42, 0.12)),
    "mountains": ((0.35, 0.38, 0.48), (0.50, 0.50, 0.60), (0.25, 0.25, 0.32)),
    "night": ((0.03, 0.04, 0.12), (0.10, 0.10, 0.30), (0.25, 0.20, 0.45)),
    "space": ((0.02, 0.02, 0.06), (0.35, 0.10, 0.50), (0.10, 0.20, 0.55), (0.80, 0.30, 0.70)),
    "moon": ((0.85, 0.88, 0.95), (0.10, 0.12, 0.30)),
    "city": ((0.30, 0.32, 0.38), (0.50, 0.52, 0.58), (0.15, 0.16, 0.20)),
    "snow": ((0.95, 0.97, 1.00), (0.75, 0.85, 0.95), (0.60, 0.72, 0.88)),
    "fire": ((0.90, 0.20, 0.05), (1.00, 0.55, 0.10), (0.30, 0.05, 0.02), (1.00, 0.85, 0.30)),
    "desert": ((0.87, 0.72, 0.48), (0.80, 0.55, 0.30), (0.95, 0.85, 0.65)),
}
# Themes that put a horizon in the picture (sky above, ground below).
_SCENIC = ("sunset", "sun", "sky", "water", "forest", "grass", "mountains", "night", "moon", "city", "desert")

# Subjects are drawn as one central figure; the value is the subject's own colour, if it has one.
_SUBJECTS: dict[str, RGB | None] = {
    "cat": None, "kitten": None, "dog": None, "puppy": None, "fox": (0.85, 0.42, 0.12),
    "wolf": (0.50, 0.50, 0.55), "lion": (0.80, 0.60, 0.30), "tiger": (0.90, 0.50, 0.10),
    "bear": (0.40, 0.25, 0.12), "rabbit": None, "deer": (0.60, 0.40, 0.22), "horse": (0.45, 0.30, 0.18),
    "elephant": (0.55, 0.55, 0.58), "frog": (0.30, 0.65, 0.20), "bird": None, "owl": (0.55, 0.42, 0.28),
    "fish": None, "whale": (0.25, 0.35, 0.50), "butterfly": None, "dragon": None,
    "unicorn": (0.95, 0.92, 0.96),
    "monster": None, "creature": None, "animal": None, "person": None, "man": None, "woman": None,
    "girl": None, "boy": None, "child": None, "portrait": None, "face": None, "knight": (0.65, 0.67, 0.70),
    "warrior": None, "wizard": None, "witch": None, "king": None, "queen": None, "princess": None,
    "angel": (0.96, 0.94, 0.88), "robot": (0.70, 0.72, 0.76), "skull": (0.90, 0.88, 0.80),
    "statue": (0.80, 0.78, 0.74), "castle": (0.60, 0.58, 0.55), "house": None, "car": None, "ship": None,
    "boat": None, "tower": None, "flower": None, "rose": (0.80, 0.08, 0.18), "tulip": (0.90, 0.25, 0.35),
    "sunflower": (0.98, 0.80, 0.10), "apple": (0.80, 0.10, 0.10), "lemon": (0.98, 0.90, 0.25),
}  # fmt: skip
_PEOPLE = _wordset(
    "person man woman girl boy child portrait face knight warrior wizard witch king queen princess angel "
    "robot statue astronaut"
)
_ANIMALS = _wordset(
    "cat kitten dog puppy fox wolf lion tiger bear rabbit deer horse elephant frog bird owl dragon unicorn "
    "monster creature animal"
)

# Words that change the whole palette rather than add a colour: (saturation, brightness) factors.
_MODIFIERS: dict[str, tuple[float, float]] = {
    "dark": (1.0, 0.7), "dim": (0.9, 0.75), "gloomy": (0.75, 0.75), "moody": (0.85, 0.8),
    "light": (0.85, 1.12), "bright": (1.1, 1.15), "pale": (0.55, 1.1), "pastel": (0.55, 1.12),
    "vivid": (1.35, 1.0), "vibrant": (1.35, 1.0), "neon": (1.45, 1.05), "saturated": (1.4, 1.0),
    "colorful": (1.3, 1.0), "colourful": (1.3, 1.0), "muted": (0.6, 0.95), "faded": (0.6, 1.05),
    "desaturated": (0.4, 1.0), "monochrome": (0.08, 1.0), "grayscale": (0.0, 1.0), "greyscale": (0.0, 1.0),
}  # fmt: skip

_STOPWORDS = _wordset(
    "a an the of and or in on at with by for to from into onto over under above below near is are be very "
    "highly ultra hyper super extremely detailed detail details hd uhd 4k 8k 16k photo photograph "
    "photography photorealistic realistic render rendering style image picture art artwork painting "
    "illustration digital concept beautiful stunning epic cinematic masterpiece best quality high resolution "
    "trending artstation octane unreal engine its it this that some"
)
_WORD = re.compile(r"[a-z]+")


# --- prompt reading ------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recipe:
    """What a prompt asks for, independent of the seed."""

    key: bytes  # stable hash of the words, mixed into every seed
    palette: tuple[tuple[RGB, float], ...]  # (colour, weight); weight ~ share of the picture
    themes: dict[str, float] = field(default_factory=dict)  # theme -> strength
    avoid: tuple[RGB, ...] = ()  # colours the picture must not be dominated by
    tints: dict[str, RGB] = field(default_factory=dict)  # theme -> colour named with it: "purple mountains"
    subject: str | None = None
    subject_colour: RGB | None = None
    saturation: float = 1.0
    brightness: float = 1.0


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def _lookup(word: str) -> str:
    """The lexicon spelling of a word: tries the word, then its singular."""
    for candidate in (
        word,
        word[:-1] if word.endswith("s") else "",
        word[:-2] if word.endswith("es") else "",
    ):
        if candidate and (candidate in _COLOURS or candidate in _THEME_OF or candidate in _SUBJECTS):
            return candidate
    return word


def _hash_colour(word: str) -> RGB:
    digest = hashlib.sha256(word.encode()).digest()
    hue = int.from_bytes(digest[:2], "big") / 65536
    sat = 0.3 + 0.45 * digest[2] / 255
    val = 0.35 + 0.5 * digest[3] / 255
    return colorsys.hsv_to_rgb(hue, sat, val)


def _close_to(colour: RGB, avoid: RGB) -> bool:
    """Whether `colour` reads as `avoid` (same hue family, or the same kind of neutral)."""
    h, s, v = colorsys.rgb_to_hsv(*colour)
    ah, as_, av = colorsys.rgb_to_hsv(*avoid)
    if as_ >= 0.25:
        return s >= 0.2 and v >= 0.15 and min(abs(h - ah), 1 - abs(h - ah)) * 360 < 30
    if av < 0.25:  # black
        return v < 0.3
    if av > 0.8:  # white
        return v > 0.75 and s < 0.25
    return s < 0.15 and 0.25 <= v <= 0.8  # grey


def _read_prompt(prompt: PromptSpec) -> _Recipe:
    negative = {_lookup(w) for w in _words(prompt.negative)}
    avoid = tuple(_COLOURS[w] for w in sorted(negative) if w in _COLOURS)
    key = hashlib.sha256(f"{prompt.text}\x00{prompt.negative}".encode()).digest()[:16]

    palette: list[tuple[RGB, float]] = []
    themes: dict[str, float] = {}
    tints: dict[str, RGB] = {}
    subjects: list[tuple[float, str, RGB | None]] = []  # (weight, word, colour named right before it)
    named_colours: list[tuple[float, RGB]] = []
    saturation = brightness = 1.0
    for part in prompt.parts:
        if part.weight <= 0:
            continue  # negative parts are in `prompt.negative` already
        weight = part.weight
        before: RGB | None = None  # the colour word just before this one: "a red fox"
        for raw in _words(part.text):
            word = _lookup(raw)
            if word in negative or word in _STOPWORDS:
                continue
            colour_before, before = before, None
            if word in _MODIFIERS:
                before = colour_before  # "dark red fox" is still a red fox
                sat, bright = _MODIFIERS[word]
                saturation *= sat ** min(weight, 2.0)
                brightness *= bright ** min(weight, 2.0)
            elif word in _COLOURS:
                palette.append((_COLOURS[word], weight))
                named_colours.append((weight, _COLOURS[word]))
                before = _COLOURS[word]
            elif word in _THEME_OF:
                theme = _THEME_OF[word]
                themes[theme] = themes.get(theme, 0.0) + weight
                if colour_before is not None:
                    tints.setdefault(theme, colour_before)
                    named_colours.pop()  # "a red desert" paints the desert, not the figure in it
                colours = _THEME_COLOURS[theme]
                palette.extend((c, 0.9 * weight / len(colours)) for c in colours)
            elif word in _SUBJECTS:
                subjects.append((weight, word, colour_before))
                colour = _SUBJECTS[word] or _hash_colour(word)
                palette.append((colour, 0.6 * weight))
            else:
                palette.append((_hash_colour(word), 0.3 * weight))

    # A scene word given as a negative removes its whole structure: `--no mountains`.
    for word in negative:
        themes.pop(_THEME_OF.get(word, ""), None)
    themes = {name: min(strength, 2.0) for name, strength in themes.items()}

    palette = [(c, w) for c, w in palette if not any(_close_to(c, a) for a in avoid)]
    if not palette:
        # Nothing (left) to paint with: hash colours of the prompt itself, minus the avoided ones.
        candidates = [_hash_colour(f"{prompt.text}#{i}") for i in range(16)]
        palette = [(c, 1.0) for c in candidates if not any(_close_to(c, a) for a in avoid)][:3]
        palette = palette or [((0.5, 0.5, 0.5), 1.0)]

    subject = subject_colour = None
    if subjects:
        _, subject, adjective = max(subjects, key=lambda item: item[0])
        # "a blue fox" is blue; "a fox in a green forest" is a fox-coloured fox; "a cat, purple" is purple.
        strongest = max(named_colours, key=lambda item: item[0])[1] if named_colours else None
        subject_colour = adjective or _SUBJECTS[subject] or strongest or _hash_colour(subject)
        if any(_close_to(subject_colour, a) for a in avoid):
            subject_colour = max(palette, key=lambda item: item[1])[0]
        themes["subject"] = 1.0
    return _Recipe(
        key=key,
        palette=tuple(palette),
        themes=themes,
        avoid=avoid,
        tints=tints,
        subject=subject,
        subject_colour=subject_colour,
        saturation=saturation,
        brightness=brightness,
    )


# --- small numeric helpers -----------------------------------------------------------------------


def _rng(seed: int, key: bytes, salt: bytes = b"") -> np.random.Generator:
    """Bit-stable generator for (seed, prompt words, purpose); no salted `hash()` anywhere."""
    seed = int(seed) % (1 << 64)
    digest = hashlib.sha256(key + salt).digest()[:16] if salt else key
    words = [seed & 0xFFFFFFFF, seed >> 32, *np.frombuffer(digest, dtype="<u4").tolist()]
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence(words)))


def _smoothstep(edge0: float, edge1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _lerp(image: np.ndarray, colour: np.ndarray | float, alpha: np.ndarray | float) -> np.ndarray:
    """Paint `colour` over `image` with opacity `alpha` (HxW or broadcastable); float32 out."""
    if isinstance(alpha, np.ndarray) and alpha.ndim == 2:
        alpha = alpha[..., None]
    out = np.subtract(colour, image, dtype=np.float32)
    out *= alpha
    out += image
    return out


def _blur(image: np.ndarray, sigma: float, tile: bool) -> np.ndarray:
    """Gaussian blur; with `tile` the image is treated as a torus so blurs do not break the wrap."""
    if sigma <= 0:
        return image
    if not tile:
        return cv2.GaussianBlur(image, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    pad = int(4 * sigma) + 2
    widths = ((pad, pad), (pad, pad)) + ((0, 0),) * (image.ndim - 2)
    blurred = cv2.GaussianBlur(np.pad(image, widths, mode="wrap"), (0, 0), sigma)
    return blurred[pad:-pad, pad:-pad]


@lru_cache(maxsize=16)
def _spectrum(height: int, width: int, beta: float, stretch_x: float, stretch_y: float, ref: int) -> np.ndarray:
    """Amplitudes for a 1/f^beta power spectrum on an rfft2 grid; frequencies in cycles per `ref` px."""
    fy = np.fft.fftfreq(height).astype(np.float32)[:, None] * (ref * stretch_y)
    fx = np.fft.rfftfreq(width).astype(np.float32)[None, :] * (ref * stretch_x)
    f2 = fx * fx + fy * fy
    f2[0, 0] = 1.0
    amp = f2 ** np.float32(-beta / 4.0)
    amp[0, 0] = 0.0
    amp.flags.writeable = False
    return amp


def _noise(
    rng: np.random.Generator,
    h: int,
    w: int,
    beta: float,
    tile: bool,
    stretch: tuple[float, float] = (1.0, 1.0),
) -> np.ndarray:
    """Zero-mean, unit-variance HxW noise with a 1/f^beta power spectrum (float32).

    Shaped white noise in Fourier space is periodic over its grid: tiles use the grid as is, other
    images crop a larger grid so their opposite edges do not continue each other. `stretch` > 1
    on an axis shortens features along it (stretch x -> horizontal streaks become vertical ones).
    """
    # Smooth fields have next to no energy at fine scales: draw them coarser and interpolate up.
    factor = 4 if beta >= 2.4 else 2 if beta >= 1.8 else 1
    while factor > 1 and min(h, w) // factor < 48:
        factor //= 2
    sh, sw = -(-h // factor), -(-w // factor)
    if tile:
        gh, gw = sh, sw
    else:
        gh, gw = cv2.getOptimalDFTSize(sh + sh // 3 + 2), cv2.getOptimalDFTSize(sw + sw // 3 + 2)
    amp = _spectrum(gh, gw, beta, stretch[0], stretch[1], max(1, min(sh, sw)))
    spec = rng.standard_normal((*amp.shape, 2), dtype=np.float32).view(np.complex64)[..., 0]
    spec *= amp
    field = np.fft.irfft2(spec, s=(gh, gw)).astype(np.float32, copy=False)
    region = field[:sh, :sw]
    field = (field - region.mean()) / (region.std() + 1e-8)
    if factor == 1:
        return np.ascontiguousarray(field[:h, :w])
    map_x, map_y = _upsample_maps(h, w, sh, sw)
    border = cv2.BORDER_WRAP if tile else cv2.BORDER_REFLECT
    return cv2.remap(field, map_x, map_y, cv2.INTER_CUBIC, borderMode=border)


@lru_cache(maxsize=8)
def _upsample_maps(h: int, w: int, sh: int, sw: int) -> tuple[np.ndarray, np.ndarray]:
    """remap() coordinates that stretch an sh x sw grid exactly over h x w (so periods map to periods)."""
    ys = (np.arange(h, dtype=np.float32) + 0.5) * np.float32(sh / h) - 0.5
    xs = (np.arange(w, dtype=np.float32) + 0.5) * np.float32(sw / w) - 0.5
    map_x = np.ascontiguousarray(np.broadcast_to(xs[None, :], (h, w)))
    map_y = np.ascontiguousarray(np.broadcast_to(ys[:, None], (h, w)))
    map_x.flags.writeable = False
    map_y.flags.writeable = False
    return map_x, map_y


def _noise1d(rng: np.random.Generator, n: int, beta: float, tile: bool) -> np.ndarray:
    """1-D version of `_noise`: fractal profiles for ridges (periodic when tiling)."""
    size = n if tile else n + n // 3 + 2
    f = np.fft.rfftfreq(size)[1:] * n
    spec = np.zeros(size // 2 + 1, dtype=np.complex128)
    spec[1:] = (rng.standard_normal(f.size) + 1j * rng.standard_normal(f.size)) * f ** (-beta / 2)
    out = np.fft.irfft(spec, n=size)[:n]
    return ((out - out.mean()) / (out.std() + 1e-12)).astype(np.float32)


def _wrap_delta(d: np.ndarray, period: float, tile: bool) -> np.ndarray:
    """Coordinate differences; on a tile the shortest way round the torus."""
    return d - period * np.round(d / period) if tile else d


def _hsv_jitter(colour: RGB, rng: np.random.Generator, hue_deg: float, sat: float, val: float) -> np.ndarray:
    h, s, v = colorsys.rgb_to_hsv(*colour)
    h = (h + rng.normal(0.0, hue_deg) / 360.0) % 1.0
    s = float(np.clip(s * math.exp(rng.normal(0.0, sat)), 0.0, 1.0))
    v = float(np.clip(v * math.exp(rng.normal(0.0, val)), 0.0, 1.0))
    return np.array(colorsys.hsv_to_rgb(h, s, v), dtype=np.float32)


def _luma(image: np.ndarray) -> np.ndarray:
    return image[..., 0] * 0.299 + image[..., 1] * 0.587 + image[..., 2] * 0.114


def _to_uint8(image: np.ndarray) -> np.ndarray:
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)


def _cover(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize to fill (width, height), cropping the overflow from the centre (as RGB)."""
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    elif image.shape[2] < 3:
        image = np.repeat(image[..., :1], 3, axis=2)
    ih, iw = image.shape[:2]
    scale = max(width / iw, height / ih)
    rw, rh = max(width, round(iw * scale)), max(height, round(ih * scale))
    interpolation = cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC
    resized = cv2.resize(np.ascontiguousarray(image[..., :3]), (rw, rh), interpolation=interpolation)
    top, left = (rh - height) // 2, (rw - width) // 2
    return resized[top : top + height, left : left + width]


def _check_size(size: tuple[int, int]) -> tuple[int, int]:
    width, height = int(size[0]), int(size[1])
    if width < 1 or height < 1:
        raise ValueError(f"image size must be positive, got {size}")
    return width, height


def _counter(progress: Progress, total: int) -> Callable[[], None]:
    """A tick() that reports one more finished step; cancellation raises out of it."""
    done = 0

    def tick() -> None:
        nonlocal done
        done += 1
        progress(min(done, total), total)

    progress(0, total)
    return tick


# --- painting ------------------------------------------------------------------------------------


@dataclass
class _Scene:
    """Per-image drawing state shared by the layers."""

    rng: np.random.Generator
    h: int
    w: int
    tile: bool
    v: np.ndarray  # (h, 1) layout height 0 = top .. 1 = bottom; periodic (0 at both edges) on a tile
    horizon: float
    mean: np.ndarray  # palette's weighted mean colour
    sky_top: np.ndarray
    sky_low: np.ndarray
    sky: np.ndarray  # (h, 1) 1 above the horizon
    cover: np.ndarray  # (h, w) how much of the sky structures (ridges, trees, buildings) hide
    tints: dict[str, RGB]  # theme -> colour named with it

    def tinted(self, theme: str, colour: np.ndarray | RGB) -> np.ndarray:
        """A structure's colour, pulled towards the colour the prompt named with it."""
        colour = np.asarray(colour, np.float32)
        tint = self.tints.get(theme)
        return colour if tint is None else colour * 0.35 + np.asarray(tint, np.float32) * 0.65

    def ground(self, below: float = 0.0) -> np.ndarray:
        return _smoothstep(self.horizon + below - 0.004, self.horizon + below + 0.004, self.v)

    def row_of(self, v: float) -> float:
        """Pixel row of layout height `v` (the upper one on a tile, where `v` rises then falls)."""
        if self.tile:
            return math.acos(float(np.clip(1.0 - 2.0 * v, -1.0, 1.0))) / (2.0 * math.pi) * self.h
        return v * self.h

    def distance(self, cx: float, cy: float, sx: float = 1.0, sy: float = 1.0) -> np.ndarray:
        """Pixel distance to (cx, cy), axes scaled by 1/sx, 1/sy; wraps round on a tile."""
        dx = _wrap_delta(np.arange(self.w, dtype=np.float32)[None, :] + 0.5 - cx, self.w, self.tile) / sx
        dy = _wrap_delta(np.arange(self.h, dtype=np.float32)[:, None] + 0.5 - cy, self.h, self.tile) / sy
        return np.sqrt(dx * dx + dy * dy)


def _palette_lut(palette: list[tuple[np.ndarray, float]], size: int = 1024) -> np.ndarray:
    """A colour ramp where each colour owns a stretch proportional to its weight, dark to light."""
    ordered = sorted(palette, key=lambda item: float(_luma(item[0])))
    weights = np.array([w for _, w in ordered], dtype=np.float64)
    edges = np.cumsum(weights / weights.sum())
    index = np.minimum(np.searchsorted(edges, (np.arange(size) + 0.5) / size), len(ordered) - 1)
    lut = np.stack([ordered[i][0] for i in index]).astype(np.float32)
    # Soft transitions between neighbouring colours, not hard posterised steps.
    sigma = size * 0.025
    return cv2.GaussianBlur(lut[:, None, :], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)[:, 0, :]


def _jitter_palette(
    recipe: _Recipe, rng: np.random.Generator, chaos: float, weird: float
) -> list[tuple[np.ndarray, float]]:
    hue = 5.0 + 60.0 * chaos
    jittered = []
    for colour, weight in recipe.palette:
        c = _hsv_jitter(colour, rng, hue, 0.1 + 0.3 * chaos, 0.08 + 0.2 * chaos)
        jittered.append((c, weight * math.exp(rng.normal(0.0, 0.25 + 0.8 * chaos))))
    # Chaos and weirdness invite a colour nobody asked for.
    extra = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.4, 0.9), rng.uniform(0.3, 0.9)), np.float32)
    share = 0.6 * chaos + 0.8 * weird
    if share > 0.01:
        total = sum(w for _, w in jittered)
        jittered.append((extra, total * share))
    return jittered


def _sky_colours(scene_themes: dict[str, float], mean: np.ndarray, rng: np.random.Generator) -> tuple[RGB, RGB]:
    night = max(scene_themes.get("night", 0.0), scene_themes.get("moon", 0.0) * 0.8)
    warm = scene_themes.get("sunset", 0.0)
    if night > 0 and night >= warm:
        top, low = (0.01, 0.02, 0.07), (0.12, 0.15, 0.36)
    elif warm > 0:
        top, low = (0.32, 0.18, 0.45), (1.00, 0.62, 0.30)
    else:
        top, low = (0.28, 0.50, 0.85), (0.78, 0.87, 0.96)
    tint = 0.3 + 0.1 * rng.random()
    return (
        tuple(np.asarray(top) * (1 - tint) + mean * tint),
        tuple(np.asarray(low) * (1 - tint) + mean * tint),
    )


def _draw_disc(img: np.ndarray, sc: _Scene, colour: RGB, glow: RGB, high: bool) -> tuple[float, float, float]:
    """Sun or moon: a disc with a soft glow, setting behind the horizon."""
    rng = sc.rng
    radius = rng.uniform(0.045, 0.08) * min(sc.h, sc.w)
    lift = rng.uniform(0.25, 0.55) if high else rng.uniform(0.05, 0.2)
    cx = rng.uniform(0.15, 0.85) * sc.w
    cy = sc.row_of(max(0.03, sc.horizon * (1 - lift) - 0.02))
    d = sc.distance(cx, cy)
    halo = np.exp(-((d / (4.0 * radius)) ** 2)) * 0.55 + np.exp(-((d / (12.0 * radius)) ** 2)) * 0.25
    open_sky = sc.sky * (1.0 - sc.cover)  # behind ridges, trees and buildings already drawn
    img = img + (halo * (0.4 + 0.6 * open_sky))[..., None] * (np.asarray(glow, np.float32) - img * 0.5)
    disc = _smoothstep(radius + 1.0, radius - 1.0, d) * open_sky
    return _lerp(img, np.asarray(colour, np.float32), disc), cx, radius


def _draw_mountains(img: np.ndarray, sc: _Scene, strength: float, snowy: bool) -> np.ndarray:
    rng = sc.rng
    base = sc.tinted("mountains", np.asarray(_THEME_COLOURS["mountains"][rng.integers(3)]) * 0.7 + sc.mean * 0.3)
    layers = 2 + int(rng.random() < 0.6)
    rock = _noise(rng, sc.h, sc.w, 1.8, sc.tile, (1.0, 0.35))  # vertical gullies
    for i in range(layers):
        near = (i + 1) / layers
        profile = _noise1d(rng, sc.w, 2.2, sc.tile)[None, :]
        height = (0.12 + 0.16 * strength / 2 + rng.uniform(0.0, 0.1)) * (1.15 - 0.35 * near)
        ridge = sc.horizon + 0.03 * i - height * (1.0 + 0.45 * profile)
        ridge = np.clip(ridge, 0.04, sc.horizon + 0.05)
        mask = _smoothstep(-1.2 / sc.h, 1.2 / sc.h, sc.v - ridge)
        haze = 0.6 * (1.0 - near)
        colour = base * (0.55 + 0.35 * (1 - near)) * (1 - haze) + sc.sky_low * haze
        depth = np.clip((sc.v - ridge) / 0.35, 0.0, 1.0)
        shade = (1.0 - 0.3 * depth) * (1.0 + 0.08 * rock)
        layer = colour[None, None, :] * shade[..., None]
        if snowy or rng.random() < 0.3:
            cap = (1.0 - _smoothstep(0.0, 0.035 + 0.02 * rng.random(), sc.v - ridge)) * (profile > -0.2)
            layer = _lerp(layer, np.array([0.93, 0.95, 0.99], np.float32) * (1 - haze * 0.3), cap * 0.85)
        img = _lerp(img, layer, mask)
        sc.cover = np.maximum(sc.cover, mask)
    return img


def _draw_desert(img: np.ndarray, sc: _Scene) -> np.ndarray:
    rng = sc.rng
    sand = sc.tinted("desert", np.asarray(_THEME_COLOURS["desert"][rng.integers(3)]) * 0.8 + sc.mean * 0.2)
    depth = np.clip((sc.v - sc.horizon) / max(1e-3, 1.0 - sc.horizon), 0.0, 1.0) ** 0.6
    wobble = _noise(rng, sc.h, sc.w, 3.0, sc.tile, (0.7, 1.0))
    bands = np.sin(2 * np.pi * (rng.uniform(4, 8) * depth + 0.35 * wobble))
    shade = 0.82 + 0.16 * bands + 0.1 * depth
    return _lerp(img, sand[None, None, :] * shade[..., None], sc.ground())


def _draw_water(img: np.ndarray, sc: _Scene, sun: tuple[float, float, float] | None) -> np.ndarray:
    rng = sc.rng
    deep = sc.tinted("water", np.asarray(_THEME_COLOURS["water"][0]) * 0.75 + sc.mean * 0.25)
    depth = np.clip((sc.v - sc.horizon) / max(1e-3, 1.0 - sc.horizon), 0.0, 1.0)
    # Horizontal swell plus finer ripples that grow towards the viewer.
    swell = _noise(rng, sc.h, sc.w, 2.4, sc.tile, (7.0, 1.0))
    ripple = _noise(rng, sc.h, sc.w, 1.5, sc.tile, (5.0, 1.0))
    waves = swell * (0.6 + 0.4 * depth) + ripple * (0.25 + 0.5 * depth)
    surface = sc.sky_low * 0.6 + deep * 0.4
    colour = _lerp(np.broadcast_to(surface, (sc.h, 1, 3)), deep, depth**0.6)
    layer = colour * (1.0 + 0.14 * waves)[..., None]
    foam = _smoothstep(1.3, 2.4, waves) * (0.3 + 0.5 * depth)
    layer = _lerp(layer, np.array([0.92, 0.95, 0.98], np.float32), foam)
    if sun is not None:
        cx, _, radius = sun
        dx = _wrap_delta(np.arange(sc.w, dtype=np.float32)[None, :] + 0.5 - cx, sc.w, sc.tile)
        streak = np.exp(-((dx / (radius * (1.2 + 3.0 * depth))) ** 2)) * (waves > 0.2) * 0.7
        layer = _lerp(layer, np.array([1.0, 0.85, 0.6], np.float32), streak)
    return _lerp(img, layer, sc.ground())


def _draw_forest(img: np.ndarray, sc: _Scene, strength: float, over_water: bool, trees: bool) -> np.ndarray:
    """Green ground with vertical texture; with `trees`, two rows of conifer crowns on the horizon."""
    rng = sc.rng
    theme = "forest" if trees else "grass"
    greens = [sc.tinted(theme, np.asarray(c) * 0.8 + sc.mean * 0.2) for c in _THEME_COLOURS[theme][:3]]
    streaks = _noise(rng, sc.h, sc.w, 1.9, sc.tile, (1.0, 5.0))  # vertical, like trunks, needles and blades
    leaves = _noise(rng, sc.h, sc.w, 1.2, sc.tile)
    mix = np.clip(0.5 + 0.25 * streaks + 0.15 * leaves, 0.0, 1.0)
    xs = np.arange(sc.w, dtype=np.float32) + 0.5
    for row in range(2 if trees else 1):
        if trees:
            spacing = (0.035 if row == 0 else 0.06) * min(sc.h, sc.w) / max(0.5, min(strength, 1.5))
            count = max(4, int(sc.w / spacing))
            centres = rng.random(count) * sc.w
            tall = (0.09 if row == 0 else 0.2) * rng.uniform(0.55, 1.0, count)
            half = tall * sc.h * rng.uniform(0.22, 0.32, count)
            dx = np.abs(_wrap_delta(xs[None, :] - centres[:, None], sc.w, sc.tile))
            crowns = np.max(tall[:, None] * (1.0 - dx / half[:, None]), axis=0).astype(np.float32)
            top = (sc.horizon + 0.015 * row - np.maximum(crowns, 0.01))[None, :]
        else:
            top = np.full((1, sc.w), sc.horizon, np.float32)
        mask = _smoothstep(-1.0 / sc.h, 1.0 / sc.h, sc.v - top)
        if over_water:
            mask = mask * (1.0 - sc.ground(0.012))
        layer = _lerp(np.broadcast_to(greens[2], (sc.h, sc.w, 3)), greens[row], mix)
        shade = (1.0 - 0.35 * np.clip((sc.v - top) / 0.4, 0.0, 1.0)) * (1.0 + 0.1 * streaks)
        layer = layer * shade[..., None]
        if row == 0 and trees:
            layer = _lerp(layer, sc.sky_low, 0.3)  # the far row sits in the haze
        img = _lerp(img, layer, mask)
        sc.cover = np.maximum(sc.cover, mask)
    return img


def _draw_city(img: np.ndarray, sc: _Scene, has_ground: bool) -> tuple[np.ndarray, np.ndarray]:
    """Skyline blocks on the horizon; returns the image and where the windows are (lit later)."""
    rng = sc.rng
    grey = sc.tinted("city", np.asarray(_THEME_COLOURS["city"][rng.integers(3)]) * 0.7 + sc.mean * 0.3)
    cell = max(3.0, min(sc.h, sc.w) * 0.012)
    # Window grid periods that divide the canvas, so a tile's grid wraps.
    period_x = sc.w / max(1, round(sc.w / (2.2 * cell)))
    period_y = sc.h / max(1, round(sc.h / (2.6 * cell)))
    # A random phase, so no column of window edges lines up with the frame (or a tile's seam).
    px = np.arange(sc.w) + 0.5 + rng.uniform(0.0, period_x)
    py = np.arange(sc.h) + 0.5 + rng.uniform(0.0, period_y)
    cols, rows = round(sc.w / period_x), round(sc.h / period_y)
    col = np.floor(px / period_x).astype(np.int64) % cols
    row = np.floor(py / period_y).astype(np.int64) % rows
    cells = rng.random((rows, cols), dtype=np.float32)
    lit = rng.uniform(0.15, 0.35)
    # Lit windows at different brightness; the rest stay dark.
    lit_cells = np.where(cells < lit, 0.45 + 0.55 * cells / lit, 0.0).astype(np.float32)
    in_x = (px % period_x) < cell
    in_y = (py % period_y) < cell * 1.3
    grid = lit_cells[row[:, None], col[None, :]] * (in_x[None, :] & in_y[:, None])
    windows = np.zeros((sc.h, sc.w), np.float32)
    for layer_index in range(2):
        heights = np.zeros(sc.w, np.float32)
        tint = np.zeros(sc.w, np.float32)
        start = int(rng.integers(sc.w))
        pos = 0
        while pos < sc.w:
            width = int(rng.uniform(0.025, 0.07) * sc.w) + 2
            tall = rng.uniform(0.06, 0.22) + (rng.uniform(0.1, 0.22) if rng.random() < 0.2 else 0.0)
            columns = (start + np.arange(pos, min(pos + width, sc.w))) % sc.w
            heights[columns] = tall * (1.25 if layer_index == 0 else 1.0)
            tint[columns] = rng.uniform(0.75, 1.15)
            pos += width
        top = (sc.horizon - heights)[None, :]
        mask = _smoothstep(-0.8 / sc.h, 0.8 / sc.h, sc.v - top)
        if has_ground:
            mask = mask * (1.0 - sc.ground(0.004))
        haze = 0.45 if layer_index == 0 else 0.0
        colour = grey * (1 - haze) + sc.sky_low * haze
        layer = colour[None, None, :] * tint[None, :, None] * (1.0 - 0.25 * sc.v)[..., None]
        img = _lerp(img, layer, mask)
        sc.cover = np.maximum(sc.cover, mask)
        inside = _smoothstep(0.01, 0.02, sc.v - top) * mask
        windows = np.maximum(windows * (1.0 - mask), grid * inside * (0.4 if layer_index == 0 else 1.0))
    return img, windows


def _draw_fire(img: np.ndarray, sc: _Scene, strength: float) -> np.ndarray:
    rng = sc.rng
    tongues = _noise(rng, sc.h, sc.w, 2.0, sc.tile, (1.0, 3.0))  # long vertical flames
    flicker = _noise(rng, sc.h, sc.w, 1.4, sc.tile)
    base = rng.uniform(0.3, 0.55) - 0.1 * min(strength, 1.5)
    heat = np.clip((sc.v - base) / (1.0 - base) * 1.3 + 0.35 * tongues + 0.12 * flicker, 0.0, 1.0) ** 1.4
    # Black body ramp: dark red -> red -> orange -> yellow -> near white.
    stops = np.array([0.0, 0.3, 0.55, 0.8, 1.0], np.float32)
    ramp = np.array(
        [[0.05, 0.0, 0.0], [0.6, 0.06, 0.02], [0.95, 0.35, 0.05], [1.0, 0.72, 0.2], [1.0, 0.95, 0.75]],
        np.float32,
    )
    flat = heat.ravel()
    fire = np.stack([np.interp(flat, stops, ramp[:, c]) for c in range(3)], axis=-1).reshape(sc.h, sc.w, 3)
    return img * (1.0 - 0.85 * heat[..., None]) + fire.astype(np.float32) * heat[..., None]


def _sprinkle(sc: _Scene, density: float, sigma: float) -> np.ndarray:
    """Sparse bright points (stars, snowflakes) as an HxW float field."""
    rng = sc.rng
    count = int(sc.h * sc.w * density)
    points = np.zeros((sc.h, sc.w), np.float32)
    ys, xs = rng.integers(0, sc.h, count), rng.integers(0, sc.w, count)
    points[ys, xs] = rng.random(count, dtype=np.float32) ** 3
    return np.clip(_blur(points, sigma, sc.tile) * (2 * np.pi * sigma * sigma), 0.0, 1.0)


def _draw_subject(
    img: np.ndarray, sc: _Scene, recipe: _Recipe, chaos: float, ambient: float, scenic: bool
) -> np.ndarray:
    """A central figure: body and head ellipses (plus ears for animals), outline wobbled by noise."""
    rng = sc.rng
    unit = min(sc.h, sc.w) * rng.uniform(0.15, 0.22)
    cx = sc.w * (0.5 + rng.normal(0.0, 0.06 + 0.15 * chaos))
    cy = sc.h * (0.56 + rng.normal(0.0, 0.04 + 0.1 * chaos))
    if scenic:
        # In a landscape the figure stands on the ground in front of the horizon, not in the sky.
        feet = sc.row_of(min(0.97, sc.horizon + rng.uniform(0.1, 0.22)))
        cy = feet - 1.0 * unit
    if recipe.subject in _PEOPLE:
        parts = [(cx, cy + 0.35 * unit, 0.55, 1.05), (cx, cy - 0.95 * unit, 0.36, 0.42)]
    elif recipe.subject in _ANIMALS:
        side = 1.0 if rng.random() < 0.5 else -1.0
        hx, hy = cx + side * 0.55 * unit, cy - 0.6 * unit
        parts = [
            (cx, cy + 0.25 * unit, 0.95, 0.62),
            (hx, hy, 0.42, 0.38),
            (hx - 0.22 * unit, hy - 0.38 * unit, 0.12, 0.2),
            (hx + 0.22 * unit, hy - 0.38 * unit, 0.12, 0.2),
        ]
    else:
        parts = [(cx, cy, 0.8 + rng.uniform(-0.1, 0.1), 0.8 + rng.uniform(-0.1, 0.1))]
    sdf = np.full((sc.h, sc.w), np.inf, np.float32)
    for px, py, rx, ry in parts:
        d = sc.distance(px, py, rx * unit, ry * unit)
        sdf = np.minimum(sdf, (d - 1.0) * min(rx, ry) * unit)
    wobble = _noise(sc.rng, sc.h, sc.w, 3.0, sc.tile)
    sdf = sdf + wobble * unit * 0.05
    alpha = np.clip(0.5 - sdf / 1.5, 0.0, 1.0)
    # Round shading lit from one side, plus a soft shadow on the ground below.
    inner = np.clip(-sdf / (0.5 * unit), 0.0, 1.0)
    light = rng.uniform(-1.0, 1.0)
    dx = _wrap_delta(np.arange(sc.w, dtype=np.float32)[None, :] - cx, sc.w, sc.tile) / unit
    shade = 0.55 + 0.4 * np.sqrt(inner) + 0.12 * np.clip(light * dx, -1.5, 1.5)
    colour = _hsv_jitter(recipe.subject_colour or (0.5, 0.5, 0.5), rng, 6.0 + 40.0 * chaos, 0.08, 0.08)
    figure = colour[None, None, :] * (shade * ambient)[..., None]
    shadow = np.exp(-((sc.distance(cx, cy + 1.1 * unit, 1.3 * unit, 0.25 * unit)) ** 2)) * 0.45
    img = img * (1.0 - shadow[..., None])
    return _lerp(img, figure, alpha)


def _render(
    recipe: _Recipe, prompt: PromptSpec, width: int, height: int, seed: int, tick: Callable[[], None]
) -> np.ndarray:
    """One picture as float32 RGB in 0..1."""
    rng = _rng(seed, recipe.key)
    h, w, tile = height, width, prompt.tile
    chaos = (prompt.chaos or 0) / 100.0
    weird = min(prompt.weird or 0, 3000) / 3000.0

    # Per-image choices: palette, theme strengths, layout. Chaos widens every spread.
    palette = _jitter_palette(recipe, rng, chaos, weird)
    themes = {name: s * math.exp(rng.normal(0.0, 0.15 + 0.4 * chaos)) for name, s in recipe.themes.items()}
    surprise = _SCENIC[int(rng.integers(len(_SCENIC)))]
    if rng.random() < 0.6 * chaos and surprise not in themes:
        themes[surprise] = rng.uniform(0.4, 1.0)
    horizon = float(np.clip(0.6 + rng.normal(0.0, 0.05 + 0.15 * chaos), 0.35, 0.8))
    total = sum(wt for _, wt in palette)
    mean = sum(c * wt for c, wt in palette) / total

    ys = (np.arange(h, dtype=np.float32) + 0.5) / h
    v = (0.5 - 0.5 * np.cos(2 * np.pi * ys)).astype(np.float32) if tile else ys
    v = v[:, None]
    x = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]

    # Base: the palette painted through a smooth noise field, lighter colours drifting to the top.
    lut = _palette_lut(palette)
    colour_noise = _noise(rng, h, w, 3.2, tile)
    light_noise = _noise(rng, h, w, 2.0, tile)
    u = 1.0 / (1.0 + np.exp(-1.7 * colour_noise))  # ~ Gaussian CDF: areas follow palette weights
    u = np.clip(u + (0.5 - v) * 0.35, 0.0, 1.0)
    img = lut[(u * (len(lut) - 1)).astype(np.int32)]
    img *= (1.0 + 0.12 * light_noise)[..., None]
    if not tile:
        tilt = rng.normal(0.0, 0.12)
        img *= (1.08 - 0.22 * v + tilt * (x - 0.5))[..., None]
    field_colours = img.copy() if "space" in themes else None
    tick()

    scenic = any(name in themes for name in _SCENIC)
    sky_top, sky_low = _sky_colours(themes, mean, rng)
    if "sky" in recipe.tints:  # "a pink sky"
        tint = np.asarray(recipe.tints["sky"])
        sky_top, sky_low = (
            tuple(np.asarray(sky_top) * 0.4 + tint * 0.6),
            tuple(np.asarray(sky_low) * 0.5 + tint * 0.5),
        )
    sc = _Scene(
        rng=rng,
        h=h,
        w=w,
        tile=tile,
        v=v,
        horizon=horizon,
        mean=mean.astype(np.float32),
        sky_top=np.asarray(sky_top, np.float32),
        sky_low=np.asarray(sky_low, np.float32),
        sky=1.0 - _smoothstep(horizon - 0.004, horizon + 0.004, v),
        cover=np.zeros((h, w), np.float32),
        tints=recipe.tints,
    )
    sun = None
    if scenic:
        t = np.clip(v / horizon, 0.0, 1.0) ** 0.9
        sky_colour = sc.sky_top * (1 - t[..., None]) + sc.sky_low * t[..., None]
        img = _lerp(img, sky_colour, sc.sky * 0.85)
        if "sky" in themes or ("night" not in themes and rng.random() < 0.5):
            clouds = _noise(rng, h, w, 2.6, tile, (3.0, 1.0))
            amount = 0.35 + 0.4 * min(themes.get("sky", 0.5), 1.5)
            alpha = _smoothstep(0.2, 1.6, clouds) * sc.sky * amount * (0.4 + 0.6 * np.clip(1 - v / horizon, 0, 1))
            img = _lerp(img, sc.sky_low * 0.4 + 0.6, alpha)
        if "sunset" in themes or "sun" in themes:
            warm = themes.get("sunset", 0) >= themes.get("sun", 0)
            disc, glow = ((1.0, 0.85, 0.55), (1.0, 0.55, 0.25)) if warm else ((1.0, 0.98, 0.86), (1.0, 0.92, 0.7))
            img, cx, radius = _draw_disc(img, sc, disc, glow, high=not warm)
            sun = (cx, 0.0, radius)
    if "mountains" in themes:
        img = _draw_mountains(img, sc, themes["mountains"], snowy="snow" in themes)
    if "desert" in themes:
        img = _draw_desert(img, sc)
    if "water" in themes:
        img = _draw_water(img, sc, sun)
    windows = None
    if "city" in themes:
        img, windows = _draw_city(img, sc, has_ground="water" in themes or "desert" in themes)
    if "grass" in themes and "forest" not in themes:
        img = _draw_forest(img, sc, themes["grass"], over_water="water" in themes, trees=False)
    if "forest" in themes:
        img = _draw_forest(img, sc, themes["forest"], over_water="water" in themes, trees=True)

    # Night and space dim what was painted (the night sky less: it is night-coloured already);
    # lights, stars, the subject and flames come after.
    dark = max(themes.get("night", 0.0), themes.get("space", 0.0), 0.7 * themes.get("moon", 0.0))
    if dark > 0:
        amount = min(dark, 1.0)
        if scenic:
            open_sky = sc.sky * (1.0 - sc.cover)
            dim: np.ndarray | float = (1.0 - 0.6 * amount * (1.0 - 0.6 * open_sky))[..., None]
        else:
            dim = 1.0 - 0.55 * amount
        img = _lerp(img * dim, np.array([0.02, 0.03, 0.1], np.float32), 0.2 * amount)
    if windows is not None:
        glow = np.array([1.0, 0.82, 0.45] if dark > 0 else [0.75, 0.82, 0.9], np.float32)
        img = _lerp(img, glow, windows * (0.9 if dark > 0 else 0.35))
    if field_colours is not None:
        nebula = _smoothstep(0.2, 2.2, _noise(rng, h, w, 2.4, tile))
        img = img + (nebula * 0.7)[..., None] * field_colours
    if dark > 0:
        where = sc.sky * (1.0 - sc.cover) if scenic else 1.0
        img = img + (_sprinkle(sc, 0.004 * min(dark, 1.5), 0.6) * where)[..., None]
    if "moon" in themes:
        img, _, _ = _draw_disc(img, sc, (0.93, 0.94, 0.98), (0.35, 0.4, 0.55), high=True)
    if "fire" in themes:
        img = _draw_fire(img, sc, themes["fire"])
    snow = min(themes.get("snow", 0.0), 1.5)
    if snow > 0:
        pale = np.array([0.93, 0.96, 1.0], np.float32)
        img = _lerp(img, pale, 0.25 * snow)
        if scenic:
            # A snowfield with soft drifts over the ground.
            drifts = _noise(rng, h, w, 2.6, tile, (4.0, 1.0))
            field = (
                pale * (0.9 + 0.06 * drifts)[..., None]
                - np.array([0.08, 0.04, 0.0], np.float32) * (drifts < 0)[..., None]
            )
            img = _lerp(img, field, sc.ground(0.02) * min(1.0, 0.8 * snow))
    # The subject goes in front of the scene (even of flames), so it is never hidden.
    if "subject" in themes:
        img = _draw_subject(img, sc, recipe, chaos, 1.0 - 0.35 * min(dark, 1.0), scenic)
    if snow > 0:
        img = img + (_sprinkle(sc, 0.003 * snow, 1.0) * 0.9)[..., None]
    tick()

    img = _finish(img, prompt, recipe, rng, v, x)
    tick()
    return img


def _finish(
    img: np.ndarray,
    prompt: PromptSpec,
    recipe: _Recipe,
    rng: np.random.Generator,
    v: np.ndarray,
    x: np.ndarray,
) -> np.ndarray:
    """Grain, stylisation and the `--no` colours: the last pass over a rendered picture."""
    h, w, tile = img.shape[0], img.shape[1], prompt.tile
    quality = prompt.quality or 1.0
    # --q: finer, stronger grain for more quality; lower quality also softens the picture.
    grain = _noise(rng, h, w, 1.5 - 0.2 * math.log2(quality), tile)
    img = img * (1.0 + 0.03 * quality**0.3 * grain)[..., None]
    if quality < 1:
        img = _blur(img, 1.5 * (1.0 - quality), tile)

    stylize = (prompt.stylize if prompt.stylize is not None else 100) / 1000.0
    if prompt.style == "raw":
        stylize *= 0.5
    img = np.clip(img, 0.0, 1.0)
    curve = img * img * (3.0 - 2.0 * img)
    img = img + (0.2 + 0.8 * stylize) * (curve - img)
    if not tile:
        r2 = (x - 0.5) ** 2 + (v - 0.5) ** 2
        img = img * (1.0 - (0.15 + 0.35 * stylize) * r2)[..., None]

    hsv = cv2.cvtColor(np.ascontiguousarray(img, dtype=np.float32), cv2.COLOR_RGB2HSV)
    hue, sat, val = hsv[..., 0], hsv[..., 1], hsv[..., 2]
    sat *= (0.92 + 1.1 * stylize**0.75) * recipe.saturation
    val *= recipe.brightness
    if prompt.weird:
        weird = min(prompt.weird, 3000) / 3000.0
        shift = _noise(rng, h, w, 3.0, tile) * (40.0 + 140.0 * weird) * weird**0.5 + rng.uniform(0, 90) * weird
        hue[...] = (hue + shift) % 360.0
    for colour in recipe.avoid:
        ah, a_s, av = colorsys.rgb_to_hsv(*colour)
        if a_s >= 0.25:
            dist = np.abs((hue - ah * 360.0 + 180.0) % 360.0 - 180.0)
            sat *= 1.0 - 0.92 * (1.0 - _smoothstep(18.0, 40.0, dist))
        elif av < 0.25:
            val[...] = val + (0.3 - val) * (1.0 - _smoothstep(0.12, 0.3, val))
        elif av > 0.8:
            val[...] = val - (val - 0.72) * _smoothstep(0.72, 0.9, val) * (1.0 - _smoothstep(0.1, 0.3, sat))
    np.clip(sat, 0.0, 1.0, out=sat)
    np.clip(val, 0.0, 1.0, out=val)
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


# --- the engine ----------------------------------------------------------------------------------


class ClassicEngine:
    """Procedural, weight-free engine: deterministic pictures from prompt words and seeds."""

    name = "classic"

    def __init__(self, base_size: int = 512) -> None:
        if base_size < 64:
            raise ValueError(f"base_size must be at least 64, got {base_size}")
        self.base_size = base_size

    def check(self, prompt: PromptSpec) -> None:
        """Every version and flag can be drawn: there is no model to map them to."""

    def canvas_size(self, prompt: PromptSpec) -> tuple[int, int]:
        return self.size_for(prompt.aspect_ratio)

    def size_for(self, aspect: tuple[int, int]) -> tuple[int, int]:
        ratio_w, ratio_h = aspect
        if ratio_w <= 0 or ratio_h <= 0:
            raise ValueError(f"aspect sides must be positive, got {aspect}")
        ratio = ratio_w / ratio_h
        area = float(self.base_size) ** 2
        ideal_h = math.sqrt(area / ratio)
        low = max(64, int(ideal_h // 8) * 8 - 24)
        best: tuple[float, int, int] | None = None
        for height in range(low, max(low, int(ideal_h // 8) * 8 + 32) + 1, 8):
            width = max(64, round(height * ratio / 8) * 8)
            # Ratio first, area second: a 4:1 canvas should look 4:1 even if its area drifts a bit.
            error = abs(math.log(width / height / ratio)) + 0.25 * abs(math.log(width * height / area))
            if best is None or error < best[0]:
                best = (error, width, height)
        assert best is not None
        return best[1], best[2]

    def generate(
        self,
        prompt: PromptSpec,
        size: tuple[int, int],
        seeds: Sequence[int],
        progress: Progress,
        init_images: Sequence[Image] = (),
    ) -> list[Image]:
        width, height = _check_size(size)
        recipe = _read_prompt(prompt)
        tick = _counter(progress, len(seeds) * _STAGES)
        init = _cover(init_images[0], width, height).astype(np.float32) / 255.0 if len(init_images) else None
        # --iw 1 -> the image prompt is half the picture; --iw 3 -> three quarters.
        iw = 1.0 if prompt.image_weight is None else prompt.image_weight
        weight = min(0.85, iw / (1.0 + iw))
        images = []
        for seed in seeds:
            picture = _render(recipe, prompt, width, height, seed, tick)
            if init is not None and weight > 0:
                picture = _lerp(picture, init, weight)
            images.append(_to_uint8(picture))
        return images

    def vary(
        self, image: Image, prompt: PromptSpec, strength: float, seeds: Sequence[int], progress: Progress
    ) -> list[Image]:
        strength = float(np.clip(strength, 0.0, 1.0))
        h, w = image.shape[:2]
        tick = _counter(progress, len(seeds) * (_STAGES + 1))
        if strength == 0.0:
            for _ in range(len(seeds) * (_STAGES + 1)):
                tick()
            return [image.copy() for _ in seeds]
        recipe = _read_prompt(prompt)
        source = image[..., :3].astype(np.float32) / 255.0
        grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        border = cv2.BORDER_WRAP if prompt.tile else cv2.BORDER_REFLECT
        out = []
        for seed in seeds:
            rng = _rng(seed, recipe.key, b"vary")
            # A smooth displacement field moves things around by up to a few percent of the frame.
            amplitude = strength**1.5 * 0.035 * min(h, w)
            dx = _noise(rng, h, w, 3.5, prompt.tile) * amplitude
            dy = _noise(rng, h, w, 3.5, prompt.tile) * amplitude
            warped = cv2.remap(source, grid_x + dx, grid_y + dy, cv2.INTER_LINEAR, borderMode=border)
            # Colour jitter: per-channel gain and a shared brightness shift.
            gain = 1.0 + rng.normal(0.0, 0.07 * strength, 3).astype(np.float32)
            warped = warped * gain + np.float32(rng.normal(0.0, 0.03 * strength))
            tick()
            fresh = _render(recipe, prompt, w, h, seed, tick)
            # How much of a fresh picture comes in: strength**3 on average (all of it at strength 1,
            # an eighth for Vary (Subtle)), more in some places than others (alpha = b ** e^(-k n)),
            # so parts of the picture change instead of all of it turning into a double exposure.
            patches = _noise(rng, h, w, 3.0, prompt.tile)
            alpha = np.float32(strength**3) ** np.exp(-1.5 * strength * patches)
            out.append(_to_uint8(_lerp(warped, fresh, alpha)))
        return out

    def upscale(self, image: Image, prompt: PromptSpec, mode: UpscaleMode, seed: int, progress: Progress) -> Image:
        if mode not in ("subtle", "creative"):
            raise ValueError(f"unknown upscale mode {mode!r}")
        tick = _counter(progress, 3)
        h, w = image.shape[:2]
        source = np.ascontiguousarray(image[..., :3]).astype(np.float32)
        if prompt.tile:
            # Resample a wrapped copy so the seam of a tile stays seamless at twice the size.
            pad = 4
            padded = np.pad(source, ((pad, pad), (pad, pad), (0, 0)), mode="wrap")
            up = cv2.resize(padded, ((w + 2 * pad) * 2, (h + 2 * pad) * 2), interpolation=cv2.INTER_LANCZOS4)
            up = up[2 * pad : -2 * pad, 2 * pad : -2 * pad]
        else:
            up = cv2.resize(source, (w * 2, h * 2), interpolation=cv2.INTER_LANCZOS4)
        tick()
        if mode == "creative":
            rng = _rng(seed, _read_prompt(prompt).key, b"upscale")
            soft = _blur(up, 1.4, prompt.tile)
            up = up + 0.7 * (up - soft)  # unsharp mask
            # Fine grain where there are edges already, so flat areas stay clean.
            gray = _luma(soft)
            edges = cv2.magnitude(cv2.Sobel(gray, cv2.CV_32F, 1, 0), cv2.Sobel(gray, cv2.CV_32F, 0, 1))
            scale = float(np.percentile(edges[::4, ::4], 95)) + 1e-3
            edges = _blur(np.clip(edges / scale, 0.0, 1.0), 2.0, prompt.tile)
            tick()
            grain = _blur(rng.standard_normal((2 * h, 2 * w), dtype=np.float32), 0.55, prompt.tile)
            grain /= grain.std() + 1e-6
            up = up + (grain * (3.0 + 9.0 * edges))[..., None]
        else:
            tick()
        tick()
        return np.clip(up + 0.5, 0, 255).astype(np.uint8)

    def inpaint(
        self,
        image: Image,
        mask: Mask,
        prompt: PromptSpec,
        seeds: Sequence[int],
        kind: InpaintKind,
        progress: Progress,
    ) -> list[Image]:
        if kind not in ("region", "outpaint"):
            raise ValueError(f"unknown inpaint kind {kind!r}")
        image = np.ascontiguousarray(image[..., :3])
        h, w = image.shape[:2]
        hole = np.asarray(mask, dtype=bool)
        if hole.shape != (h, w):
            raise ValueError(f"mask shape {hole.shape} does not match image shape {(h, w)}")
        total = 1 + len(seeds) * (_STAGES + 1)
        tick = _counter(progress, total)
        if not hole.any():
            for _ in range(total):
                tick()
            return [image.copy() for _ in seeds]

        # A colour prior for the hole that continues what surrounds it.
        base = _opencv_inpaint(image, hole) if kind == "region" else blur_fill(image, hole)
        ys, xs = np.nonzero(hole)
        crop = (slice(int(ys.min()), int(ys.max()) + 1), slice(int(xs.min()), int(xs.max()) + 1))
        prior = base[crop].astype(np.float32) / 255.0
        # Prompt content fades in with the distance from the hole's border, so the seam stays continuous.
        dist = cv2.distanceTransform(hole.astype(np.uint8), cv2.DIST_L2, 3)
        feather = float(np.clip(0.5 * dist.max(), 2.0, 48.0 if kind == "region" else 96.0))
        ramp = _smoothstep(0.0, feather, dist[crop])
        tick()

        recipe = _read_prompt(prompt)
        # Region: draw the new prompt into the region's box, so its subject sits inside the region.
        # Outpaint: draw the whole frame, so horizons and layout run on across the new canvas.
        box_h, box_w = prior.shape[:2]
        draw_w, draw_h = (box_w, box_h) if kind == "region" else (w, h)
        scale = min(1.0, _INPAINT_RENDER_SIDE / max(draw_w, draw_h))
        rw, rh = max(8, round(draw_w * scale)), max(8, round(draw_h * scale))
        paint_here = hole[crop][..., None]
        out = []
        for seed in seeds:
            fresh = _render(recipe, prompt, rw, rh, seed, tick)
            if (rw, rh) != (draw_w, draw_h):
                fresh = cv2.resize(fresh, (draw_w, draw_h), interpolation=cv2.INTER_CUBIC)
            if kind == "region":
                # The new prompt owns the middle of the region; the inpainted prior carries its edges.
                painted = _lerp(prior, fresh, ramp * 0.7)
            else:
                # New canvas: keep the prior's low frequencies, take the prompt's texture and a tint.
                fresh = fresh[crop]
                soft = _blur(fresh, 6.0, False)
                painted = prior + ramp[..., None] * (0.35 * (soft - prior) + 0.9 * (fresh - soft))
            candidate = image.copy()
            np.copyto(candidate[crop], _to_uint8(painted), where=paint_here)
            out.append(candidate)
            tick()
        return out


def _opencv_inpaint(image: np.ndarray, hole: np.ndarray) -> np.ndarray:
    """cv2.inpaint (Telea), on a downscaled copy when the hole is big; known pixels stay exact."""
    h, w = hole.shape
    scale = min(1.0, math.sqrt(_INPAINT_HOLE_PIXELS / max(1, int(hole.sum()))))
    if scale >= 1.0:
        filled = cv2.inpaint(image, hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
    else:
        sw, sh = max(8, round(w * scale)), max(8, round(h * scale))
        small = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA)
        # Any small pixel touched by the hole counts as hole, so known small pixels are truly known.
        small_hole = cv2.resize(hole.astype(np.float32), (sw, sh), interpolation=cv2.INTER_AREA) > 0.01
        small_filled = cv2.inpaint(small, small_hole.astype(np.uint8) * 255, 3, cv2.INPAINT_TELEA)
        filled = cv2.resize(small_filled, (w, h), interpolation=cv2.INTER_CUBIC)
    result = image.copy()
    result[hole] = filled[hole]
    return result
