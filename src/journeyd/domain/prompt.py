"""Midjourney prompt syntax: image URLs, text with `::` weights, then `--flags`.

`parse_prompt` turns a prompt into a `PromptSpec`; `PromptSpec.render()` writes the canonical
prompt back, so `parse_prompt(spec.render()) == spec`. Flags we do not understand are kept
verbatim in `extra_flags` (and in the rendered prompt): nothing a user typed is silently dropped.

Besides Midjourney's own flags, `--steps` and `--cfg` set an open model's denoising steps and guidance
directly (the structured fields some dialects send, e.g. ImaginePro's `steps` and `cfgScale`, land here).
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from journeyd.domain.errors import InvalidRequest

MAX_PROMPT_CHARS = 8000
SPEEDS = ("relax", "fast", "turbo")
QUALITIES = (0.25, 0.5, 1.0, 2.0, 4.0)
DEFAULT_NIJI = "6"
MAX_ASPECT = 8.0  # widest ratio accepted either way: 8:1 .. 1:8
MAX_SIDE = 16384  # pixels, for a size given as width and height
MAX_STEPS = 150
MAX_GUIDANCE = 30.0  # FLUX.1-Fill runs at 30, the highest any supported model wants
MAX_REFERENCES = 5  # images one --sref or --cref may list

_URL = re.compile(r"<?(https?://[^\s<>]+)>?$")
# A flag starts at "--" (or the em dash phones type for it) after whitespace, followed by a letter.
_FLAG = re.compile(r"(?:^|(?<=\s))(?:--|—)([A-Za-z][A-Za-z0-9_-]*)")
_WEIGHT_SEP = re.compile(r"::\s*(-?(?:\d+\.?\d*|\.\d+))?")
_VERSION = re.compile(r"^\d{1,2}(?:\.\d{1,2})?$")
_STYLE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")

# alias -> field name
_ALIASES = {
    "ar": "aspect",
    "aspect": "aspect",
    "seed": "seed",
    "no": "no",
    "chaos": "chaos",
    "c": "chaos",
    "stylize": "stylize",
    "s": "stylize",
    "v": "version",
    "version": "version",
    "niji": "niji",
    "q": "quality",
    "quality": "quality",
    "style": "style",
    "raw": "raw",
    "tile": "tile",
    "zoom": "zoom",
    "weird": "weird",
    "w": "weird",
    "iw": "image_weight",
    "relax": "speed",
    "fast": "speed",
    "turbo": "speed",
    "steps": "steps",
    "cfg": "guidance",
    "sref": "style_refs",
    "sw": "style_weight",
    "cref": "character_refs",
    "cw": "character_weight",
}
_REFERENCES = {"style_refs": "style_weight", "character_refs": "character_weight"}  # a reference list -> its weight
# What an engine takes for --sw and --cw when --sref or --cref comes without one, as Midjourney does
DEFAULT_STYLE_WEIGHT = 100
DEFAULT_CHARACTER_WEIGHT = 100

_FLAG_NAMES = {
    "image_weight": "iw",
    "guidance": "cfg",
    "style_refs": "sref",
    "style_weight": "sw",
    "character_refs": "cref",
    "character_weight": "cw",
}  # field -> the flag errors name, where they differ


class PromptError(InvalidRequest):
    """A prompt that breaks Midjourney's syntax rules."""


@dataclass(frozen=True)
class WeightedPart:
    text: str
    weight: float


@dataclass(frozen=True)
class PromptSpec:
    """A parsed prompt. `None` means "not given": engines apply their own defaults."""

    text: str = ""
    image_urls: tuple[str, ...] = ()
    aspect: tuple[int, int] | None = None
    seed: int | None = None
    no: tuple[str, ...] = ()
    chaos: int | None = None
    stylize: int | None = None
    version: str | None = None
    niji: str | None = None
    quality: float | None = None
    style: str | None = None
    tile: bool = False
    zoom: float | None = None
    weird: int | None = None
    image_weight: float | None = None
    speed: str | None = None
    steps: int | None = None  # denoising steps, instead of the model's own (and --q's scaling of them)
    guidance: float | None = None  # classifier-free guidance scale, instead of the model's (and --stylize's)
    style_refs: tuple[str, ...] = ()  # --sref: images whose style to follow
    style_weight: int | None = None  # --sw 0..1000 (default 100): how strongly
    character_refs: tuple[str, ...] = ()  # --cref: images of the character to keep
    character_weight: int | None = None  # --cw 0..100 (default 100): 0 the face only, 100 face, hair and clothes
    extra_flags: tuple[str, ...] = field(default=())

    @property
    def parts(self) -> tuple[WeightedPart, ...]:
        return split_weights(self.text)

    @property
    def negative(self) -> str:
        """Everything the image should avoid: `--no` terms and parts with a negative weight."""
        terms = list(self.no) + [p.text for p in self.parts if p.weight < 0]
        return ", ".join(terms)

    @property
    def aspect_ratio(self) -> tuple[int, int]:
        return self.aspect or (1, 1)

    @property
    def model_version(self) -> str:
        """The version label used for buttons and price keys: "7", "6.1", "niji6"."""
        if self.niji is not None:
            return f"niji{self.niji}"
        return self.version or DEFAULT_VERSION

    def render(self) -> str:
        """The canonical prompt: what the engine is asked for (Midjourney's `finalPrompt`)."""
        words: list[str] = [*self.image_urls]
        if self.text:
            words.append(self.text)
        if self.aspect is not None:
            words.append(f"--ar {self.aspect[0]}:{self.aspect[1]}")
        if self.chaos is not None:
            words.append(f"--chaos {self.chaos}")
        if self.no:
            words.append("--no " + ", ".join(self.no))
        if self.quality is not None:
            words.append(f"--q {_num(self.quality)}")
        if self.seed is not None:
            words.append(f"--seed {self.seed}")
        if self.stylize is not None:
            words.append(f"--stylize {self.stylize}")
        if self.style is not None:
            words.append(f"--style {self.style}")
        if self.tile:
            words.append("--tile")
        if self.niji is not None:
            words.append(f"--niji {self.niji}")
        if self.version is not None:
            words.append(f"--v {self.version}")
        if self.weird is not None:
            words.append(f"--weird {self.weird}")
        if self.image_weight is not None:
            words.append(f"--iw {_num(self.image_weight)}")
        if self.zoom is not None:
            words.append(f"--zoom {_num(self.zoom)}")
        if self.speed is not None:
            words.append(f"--{self.speed}")
        if self.steps is not None:
            words.append(f"--steps {self.steps}")
        if self.guidance is not None:
            words.append(f"--cfg {_num(self.guidance)}")
        if self.style_refs:
            words.append("--sref " + " ".join(self.style_refs))
        if self.style_weight is not None:
            words.append(f"--sw {self.style_weight}")
        if self.character_refs:
            words.append("--cref " + " ".join(self.character_refs))
        if self.character_weight is not None:
            words.append(f"--cw {self.character_weight}")
        words.extend(self.extra_flags)
        return " ".join(words)

    def inherit(self, base: PromptSpec) -> PromptSpec:
        """This spec, with every flag it leaves unset taken from `base` (a modal prompt inherits
        the parent's parameters). Text, image prompts and references are never inherited: their images
        were fetched for the parent."""
        changes = {
            f.name: getattr(base, f.name)
            for f in dataclasses.fields(self)
            if f.name not in ("text", "image_urls", "style_refs", "character_refs")
            and getattr(self, f.name) in (None, (), False)
        }
        if self.niji is not None or self.version is not None:
            changes.pop("niji", None)
            changes.pop("version", None)
        return dataclasses.replace(self, **changes)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PromptSpec:
        values = dict(data)
        for name in ("image_urls", "no", "extra_flags", "style_refs", "character_refs"):
            values[name] = tuple(values.get(name) or ())
        if values.get("aspect") is not None:
            values["aspect"] = tuple(values["aspect"])
        return cls(**values)


DEFAULT_VERSION = "7"


def parse_prompt(prompt: str) -> PromptSpec:
    """Parse a Midjourney prompt. Raises `PromptError` with a message naming the bad part."""
    if not isinstance(prompt, str):
        raise PromptError("prompt must be a string")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise PromptError(f"prompt is {len(prompt)} characters; the limit is {MAX_PROMPT_CHARS}")
    if "\x00" in prompt:
        raise PromptError("prompt contains a NUL character")
    body = " ".join(prompt.split())

    urls, body = _leading_urls(body)
    flags = list(_FLAG.finditer(body))
    text = (body[: flags[0].start()] if flags else body).strip()

    values: dict[str, Any] = {}
    extras: list[str] = []
    for i, match in enumerate(flags):
        end = flags[i + 1].start() if i + 1 < len(flags) else len(body)
        name = match.group(1).lower()
        arg = body[match.end() : end].strip()
        target = _ALIASES.get(name)
        if target is None:
            extras.append(f"--{match.group(1)}" + (f" {arg}" if arg else ""))
            continue
        if target in values or (target == "raw" and "style" in values) or (target == "style" and "raw" in values):
            raise PromptError(f"--{name} is given more than once")
        values[target] = _parse_flag(name, target, arg)

    if "raw" in values:
        values["style"] = values.pop("raw")
    if values.get("version") is not None and values.get("niji") is not None:
        raise PromptError("use either --v or --niji, not both")
    for refs, weight in _REFERENCES.items():
        if weight in values and refs not in values:
            raise PromptError(
                f"--{_FLAG_NAMES[weight]} weighs --{_FLAG_NAMES[refs]} images; add --{_FLAG_NAMES[refs]} URL"
            )
    return PromptSpec(text=text, image_urls=tuple(urls), extra_flags=tuple(extras), **values)


def with_overrides(spec: PromptSpec, **fields: Any) -> PromptSpec:
    """Structured request fields win over prompt flags; `None` leaves a flag alone.

    Accepts `aspect` as "16:9" or as a (width, height) pair in pixels (reduced: 1024x768 is 4:3), `no`
    as a comma-separated string or list, `version` as "6.1" or "niji 6", and the plain values of the
    other fields (`steps`, `guidance` as for --steps, --cfg). Values are checked like flags."""
    changes: dict[str, Any] = {}
    for name, value in fields.items():
        if value is None:
            continue
        if name == "aspect":
            changes["aspect"] = (
                aspect_of(*value) if isinstance(value, tuple) else parse_aspect(str(value), source="size")
            )
        elif name == "no":
            terms = value.split(",") if isinstance(value, str) else list(value)
            changes["no"] = tuple(t.strip() for t in terms if str(t).strip())
        elif name == "version":
            version = str(value).strip().lower()
            if version.startswith("niji"):
                changes["niji"] = _parse_niji(version[4:].strip(" -") or DEFAULT_NIJI)
                changes["version"] = None
            else:
                changes["version"] = _parse_version(version)
                changes["niji"] = None
        elif name in (
            "seed",
            "chaos",
            "stylize",
            "weird",
            "quality",
            "image_weight",
            "zoom",
            "style",
            "steps",
            "guidance",
        ):
            changes[name] = _parse_flag(_FLAG_NAMES.get(name, name), name, str(value))
        elif name == "tile":
            changes["tile"] = bool(value)
        elif name == "speed":
            changes["speed"] = parse_speed(str(value))
        else:
            raise ValueError(f"unknown prompt field {name!r}")
    return dataclasses.replace(spec, **changes)


def split_weights(text: str) -> tuple[WeightedPart, ...]:
    """`hot dog::2 cat::-0.5` -> (hot dog, 2), (cat, -0.5); a part with no weight weighs 1."""
    parts: list[WeightedPart] = []
    position = 0
    for match in _WEIGHT_SEP.finditer(text):
        chunk = text[position : match.start()].strip()
        if chunk:
            parts.append(WeightedPart(chunk, float(match.group(1)) if match.group(1) else 1.0))
        position = match.end()
    tail = text[position:].strip()
    if tail:
        parts.append(WeightedPart(tail, 1.0))
    return tuple(parts)


def parse_aspect(value: str, *, source: str = "--ar") -> tuple[int, int]:
    match = re.fullmatch(r"\s*(\d{1,5})\s*[:xX]\s*(\d{1,5})\s*", value)
    if not match:
        raise PromptError(f"{source} must look like 16:9 (two whole numbers), got {_shown(value)}")
    width, height = int(match.group(1)), int(match.group(2))
    if width == 0 or height == 0:
        raise PromptError(f"{source} sides must be at least 1, got {_shown(value)}")
    return _within_limits(width, height, f"{source} {value}")


def aspect_of(width: int, height: int) -> tuple[int, int]:
    """The aspect ratio of an image size in pixels, reduced: (1024, 768) -> (4, 3)."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        raise PromptError(f"width and height must be from 1 to {MAX_SIDE} pixels, got {width}x{height}")
    divisor = math.gcd(width, height)
    return _within_limits(width // divisor, height // divisor, f"width x height {width}x{height}")


def _within_limits(width: int, height: int, shown: str) -> tuple[int, int]:
    if not 1 / MAX_ASPECT <= width / height <= MAX_ASPECT:
        raise PromptError(f"{shown} is too extreme; use a ratio between 1:8 and 8:1")
    return width, height


def parse_speed(value: str) -> str:
    speed = value.strip().lower()
    if speed not in SPEEDS:
        raise PromptError(f"speed must be one of relax, fast, turbo; got {_shown(value)}")
    return speed


def _leading_urls(body: str) -> tuple[list[str], str]:
    urls: list[str] = []
    words = body.split(" ") if body else []
    while words:
        match = _URL.match(words[0])
        if not match:
            break
        urls.append(match.group(1))
        words.pop(0)
    return urls, " ".join(words)


def _parse_flag(name: str, target: str, arg: str) -> Any:
    if target in ("tile", "raw", "speed"):
        if arg:
            raise PromptError(f"--{name} takes no value, but got {_shown(arg)}")
        return {"tile": True, "raw": "raw"}.get(target, name)
    if target == "niji":
        return _parse_niji(arg or DEFAULT_NIJI)
    if not arg:
        raise PromptError(f"--{name} needs a value")
    if target == "aspect":
        return parse_aspect(arg, source=f"--{name}")
    if target == "no":
        terms = tuple(t.strip() for t in arg.split(",") if t.strip())
        if not terms:
            raise PromptError("--no needs at least one word")
        return terms
    if target == "version":
        return _parse_version(arg)
    if target == "style":
        if not _STYLE.match(arg):
            raise PromptError(f"--style takes one word such as raw, got {_shown(arg)}")
        return arg.lower()
    if target == "seed":
        return _int(name, arg, 0, 4294967295)
    if target == "chaos":
        return _int(name, arg, 0, 100)
    if target == "stylize":
        return _int(name, arg, 0, 1000)
    if target == "weird":
        return _int(name, arg, 0, 3000)
    if target == "quality":
        value = _float(name, arg, 0.25, 4.0)
        if value not in QUALITIES:
            raise PromptError(f"--{name} must be one of .25, .5, 1, 2, 4; got {_shown(arg)}")
        return value
    if target == "image_weight":
        return _float(name, arg, 0.0, 3.0)
    if target == "zoom":
        return _float(name, arg, 1.0, 2.0)
    if target == "steps":
        return _int(name, arg, 1, MAX_STEPS)
    if target == "guidance":
        return _float(name, arg, 0.0, MAX_GUIDANCE)
    if target in _REFERENCES:
        return _reference_urls(name, arg)
    if target == "style_weight":
        return _int(name, arg, 0, 1000)
    if target == "character_weight":
        return _int(name, arg, 0, 100)
    raise AssertionError(target)


def _reference_urls(name: str, arg: str) -> tuple[str, ...]:
    """--sref/--cref: one or more image URLs (Midjourney's numeric style codes name its own styles, which
    no model here has)."""
    urls = []
    for word in arg.split():
        match = _URL.match(word)
        if not match:
            raise PromptError(f"--{name} takes image URLs (https://...), got {_shown(word)}")
        urls.append(match.group(1))
    if len(urls) > MAX_REFERENCES:
        raise PromptError(f"--{name} has {len(urls)} images; the limit is {MAX_REFERENCES}")
    return tuple(urls)


def _parse_version(arg: str) -> str:
    if not _VERSION.match(arg):
        raise PromptError(f"--v takes a version number such as 7 or 6.1, got {_shown(arg)}")
    major, _, minor = arg.partition(".")
    major = str(int(major))
    minor = minor.rstrip("0")
    return f"{major}.{minor}" if minor else major


def _parse_niji(arg: str) -> str:
    if not re.fullmatch(r"\d{1,2}", arg):
        raise PromptError(f"--niji takes a version number such as 6, got {_shown(arg)}")
    return str(int(arg))


def _int(name: str, arg: str, low: int, high: int) -> int:
    if not re.fullmatch(r"-?[0-9]{1,20}", arg):  # ASCII digits, and few enough for int() to be cheap
        raise PromptError(f"--{name} takes a whole number from {low} to {high}, got {_shown(arg)}")
    value = int(arg)
    if not low <= value <= high:
        raise PromptError(f"--{name} must be from {low} to {high}, got {value}")
    return value


def _float(name: str, arg: str, low: float, high: float) -> float:
    try:
        value = float(arg)
    except ValueError:
        raise PromptError(f"--{name} takes a number from {_num(low)} to {_num(high)}, got {_shown(arg)}") from None
    if not math.isfinite(value) or not low <= value <= high:
        raise PromptError(f"--{name} must be from {_num(low)} to {_num(high)}, got {_shown(arg)}")
    return value


def _shown(arg: str, limit: int = 40) -> str:
    """A value quoted back in an error, cut short: a 5,000-digit --seed needs no echo."""
    return repr(arg if len(arg) <= limit else arg[:limit] + "…")


def _num(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
