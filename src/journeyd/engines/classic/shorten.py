"""Shorten for the classic engine: a word matters as much as what the engine draws for it.

A subject word is drawn as the central figure, a scene word as its own layers and colours, a colour word
as a colour of the palette, a palette word ("dark", "pastel") changes the whole picture; any other word
only lends one faint colour from its hash, and filler ("a", "highly detailed", "8k") nothing at all.
A part's `::` weight scales its words. The five shorter prompts keep fewer and fewer of the words that
matter, most important first.
"""

from __future__ import annotations

import re

from journeyd.domain.errors import InvalidRequest
from journeyd.domain.prompt import PromptSpec
from journeyd.engines.base import SHORTENED_OPTIONS, Shortened
from journeyd.engines.classic.lexicon import COLOURS, MODIFIERS, STOPWORDS, SUBJECTS, THEME_OF
from journeyd.engines.classic.recipe import lookup

_TOKEN = re.compile(r"[A-Za-z0-9'-]+")
DRAWN = {"subject": 1.0, "scene": 0.9, "colour": 0.75, "palette": 0.55, "hashed": 0.25, "filler": 0.0}


def word_weight(word: str) -> float:
    """How much of the picture the classic engine draws from one word (before `::` weights)."""
    found = lookup(word.lower())
    if found in STOPWORDS or not found.isalpha():
        return DRAWN["filler"]
    if found in SUBJECTS:
        return DRAWN["subject"]
    if found in THEME_OF:
        return DRAWN["scene"]
    if found in COLOURS:
        return DRAWN["colour"]
    if found in MODIFIERS:
        return DRAWN["palette"]
    return DRAWN["hashed"]


def shorten_prompt(prompt: PromptSpec) -> Shortened:
    words: list[tuple[str, float]] = []
    for part in prompt.parts:
        scale = min(max(part.weight, 0.0), 2.0)  # negative parts are things to avoid: nothing drawn
        words.extend((token, word_weight(token) * scale) for token in _TOKEN.findall(part.text))
    top = max((weight for _, weight in words), default=0.0)
    weights = [(word, round(weight / top, 2) if top else 0.0) for word, weight in words]
    content = [i for i, (_, weight) in enumerate(weights) if weight > 0]
    ranked = sorted(content, key=lambda i: (-weights[i][1], i))  # most important first, then prompt order

    def phrase(indices: list[int]) -> str:
        return " ".join(weights[i][0] for i in indices)

    candidates = [phrase(sorted(ranked[:k])) for k in range(len(ranked), 0, -1)]  # fewer and fewer, in order
    candidates += [weights[i][0] for i in ranked]  # each word that matters, alone
    candidates += [phrase(ranked[:k]) for k in range(2, len(ranked) + 1)]  # the most important words first
    prompts = list(dict.fromkeys(c for c in candidates if c))[:SHORTENED_OPTIONS]
    if len(prompts) < SHORTENED_OPTIONS:
        raise InvalidRequest(
            f"the classic engine draws only {len(content)} of this prompt's words, too few for "
            f"{SHORTENED_OPTIONS} shorter prompts; give it more words (subjects, scenes, colours)"
        )
    return Shortened(weights, prompts)
