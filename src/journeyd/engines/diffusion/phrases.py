"""A prompt's phrases, as Shorten weighs them; torch-free, so an API node checks a shorten at submit.

Phrases are what commas (or `::` weights) separate; a prompt of fewer than three is taken word by
word. Five different shorter prompts need three different phrases at least.
"""

from __future__ import annotations

import re

from journeyd.domain.errors import InvalidRequest

FEWEST_PHRASES = 3
SEPARATORS = re.compile(r"\s*(?:::-?[\d.]*|[,;|])\s*")


def phrases_of(text: str) -> list[str]:
    phrases = [phrase for phrase in SEPARATORS.split(text) if phrase.strip()]
    return phrases if len(phrases) >= FEWEST_PHRASES else " ".join(phrases).split()


def check_shortenable(text: str) -> list[str]:
    """The phrases of `text`; InvalidRequest when there are too few different ones to shorten."""
    phrases = phrases_of(text)
    if len(set(phrases)) < FEWEST_PHRASES:
        raise InvalidRequest(
            f"shorten: the prompt needs at least {FEWEST_PHRASES} different words or comma-separated phrases, "
            f"got {len(set(phrases))}"
        )
    return phrases
