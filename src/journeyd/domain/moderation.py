"""Banned words: the operator's list, matched whole-word and case-insensitively."""

from __future__ import annotations

import re
from collections.abc import Iterable

from journeyd.domain.errors import InvalidRequest


class BannedPrompt(InvalidRequest):
    """A prompt with a word the operator does not allow (midjourney-proxy code 24)."""

    kind = "banned_prompt"


class BannedWords:
    def __init__(self, words: Iterable[str] = ()) -> None:
        self.words = tuple(sorted({w.strip().lower() for w in words if w.strip()}))
        pattern = "|".join(re.escape(w) for w in self.words)
        self._pattern = re.compile(rf"(?<!\w)({pattern})(?!\w)", re.IGNORECASE) if pattern else None

    def check(self, prompt: str) -> None:
        """Raise BannedPrompt naming the first banned word found."""
        if self._pattern is None:
            return
        match = self._pattern.search(prompt)
        if match:
            word = match.group(1).lower()
            raise BannedPrompt(f"the prompt contains the banned word {word!r}; rephrase it", banned_word=word)
