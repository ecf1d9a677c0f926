"""Reading a prompt: which colours, scenes, subject and palette changes its words ask for."""

from __future__ import annotations

import colorsys
import hashlib
import re
from dataclasses import dataclass, field

from journeyd.domain.prompt import PromptSpec
from journeyd.engines.classic.lexicon import (
    COLOURS,
    MODIFIERS,
    MOTIF_OF,
    RGB,
    STOPWORDS,
    SUBJECTS,
    THEME_COLOURS,
    THEME_OF,
)

_WORD = re.compile(r"[a-z]+")


@dataclass(frozen=True)
class Recipe:
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


def lookup(word: str) -> str:
    """The lexicon spelling of a word: tries the word, then its singular."""
    for candidate in (
        word,
        word[:-1] if word.endswith("s") else "",
        word[:-2] if word.endswith("es") else "",
    ):
        if candidate and (candidate in COLOURS or candidate in THEME_OF or candidate in SUBJECTS):
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


def _avoided(colour: RGB, avoid: tuple[RGB, ...]) -> bool:
    return any(_close_to(colour, a) for a in avoid)


def read_prompt(prompt: PromptSpec) -> Recipe:
    """The recipe for a prompt: the same words always give the same recipe, in any process."""
    negative = {lookup(w) for w in _words(prompt.negative)}
    avoid = tuple(COLOURS[w] for w in sorted(negative) if w in COLOURS)
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
            word = lookup(raw)
            if word in negative or word in STOPWORDS:
                continue
            colour_before, before = before, None
            if word in MODIFIERS:
                before = colour_before  # "dark red fox" is still a red fox
                sat, bright = MODIFIERS[word]
                saturation *= sat ** min(weight, 2.0)
                brightness *= bright ** min(weight, 2.0)
            elif word in COLOURS:
                palette.append((COLOURS[word], weight))
                named_colours.append((weight, COLOURS[word]))
                before = COLOURS[word]
            elif word in THEME_OF:
                theme = THEME_OF[word]
                themes[theme] = themes.get(theme, 0.0) + weight
                if colour_before is not None:
                    tints.setdefault(theme, colour_before)
                    named_colours.pop()  # "a red desert" paints the desert, not the figure in it
                colours = THEME_COLOURS[theme]
                palette.extend((c, 0.9 * weight / len(colours)) for c in colours)
            elif word in SUBJECTS:
                subjects.append((weight, word, colour_before))
                colour = SUBJECTS[word] or _hash_colour(word)
                palette.append((colour, 0.6 * weight))
            else:
                palette.append((_hash_colour(word), 0.3 * weight))

    # A scene word given as a negative removes its whole structure: `--no mountains`.
    for word in negative:
        themes.pop(THEME_OF.get(word, ""), None)
    themes = {name: min(strength, 2.0) for name, strength in themes.items()}

    palette = [(c, w) for c, w in palette if not _avoided(c, avoid)]
    if not palette:
        # Nothing (left) to paint with: hash colours of the prompt itself, minus the avoided ones.
        candidates = [_hash_colour(f"{prompt.text}#{i}") for i in range(16)]
        palette = [(c, 1.0) for c in candidates if not _avoided(c, avoid)][:3]
        palette = palette or [((0.5, 0.5, 0.5), 1.0)]

    subject = subject_colour = None
    if subjects:
        _, subject, adjective = max(subjects, key=lambda item: item[0])
        # "a blue fox" is blue; "a fox in a green forest" is a fox-coloured fox; "a cat, purple" is purple.
        strongest = max(named_colours, key=lambda item: item[0])[1] if named_colours else None
        subject_colour = adjective or SUBJECTS[subject] or strongest or _hash_colour(subject)
        if _avoided(subject_colour, avoid):
            subject_colour = max(palette, key=lambda item: item[1])[0]
        themes["subject"] = 1.0
    return Recipe(
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


@dataclass(frozen=True)
class RegionRecipe:
    """What a Vary (Region) prompt asks to paint into its region."""

    key: bytes  # as `Recipe.key`
    motif: str | None  # the last drawable thing named (`lexicon.MOTIF_OF`), or None: heal only
    motif_colour: RGB | None  # the colour named right before it: "a golden sun"
    tint: RGB | None  # with no motif, the first colour named: "a red balloon" tints the healed region red


def read_region_prompt(prompt: PromptSpec) -> RegionRecipe:
    """The region recipe for a prompt; words the engine cannot draw paint nothing (the region heals)."""
    negative = {lookup(w) for w in _words(prompt.negative)}
    key = hashlib.sha256(f"{prompt.text}\x00{prompt.negative}".encode()).digest()[:16]
    motif: str | None = None
    motif_colour = tint = None
    for part in prompt.parts:
        if part.weight <= 0:
            continue
        before: RGB | None = None
        for raw in _words(part.text):
            word = lookup(raw)
            if word in negative or word in STOPWORDS:
                continue
            if word in MODIFIERS:
                continue  # "dark red boat" is still a red boat
            colour_before, before = before, COLOURS.get(word)
            if before is not None:
                tint = tint or before
            elif raw in MOTIF_OF or word in MOTIF_OF:
                motif, motif_colour = MOTIF_OF.get(raw) or MOTIF_OF[word], colour_before
    return RegionRecipe(key=key, motif=motif, motif_colour=motif_colour, tint=None if motif else tint)
