"""The text Midjourney answers /describe and /shorten with, which clients show as the task's `finalPrompt`.

Describe: "1️⃣ first\\n\\n2️⃣ second\\n\\n3️⃣ third\\n\\n4️⃣ fourth". Shorten: the prompt with its important
phrases in bold and its filler struck through, each phrase's weight, then five numbered shorter prompts.
Clients that pick a prompt from the text (trueai's proxy does) split it into lines and drop the number.
"""

from __future__ import annotations

from collections.abc import Sequence

NUMBERS = ("1️⃣", "2️⃣", "3️⃣", "4️⃣", "5️⃣")
IMPORTANT = 0.5  # a phrase weighing this much or more is shown in bold
FILLER = 0.15  # one weighing less is struck through: leaving it out changes nothing much


def numbered(prompts: Sequence[str], separator: str = "\n") -> str:
    return separator.join(f"{number} {prompt}" for number, prompt in zip(NUMBERS, prompts, strict=False))


def describe_text(prompts: Sequence[str]) -> str:
    return numbered(prompts, "\n\n")


def shorten_text(weights: Sequence[tuple[str, float]], prompts: Sequence[str]) -> str:
    marked = " ".join(
        f"**{phrase}**" if weight >= IMPORTANT else f"~~{phrase}~~" if weight < FILLER else phrase
        for phrase, weight in weights
    )
    details = "\n".join(f"{phrase}: {weight:.2f}" for phrase, weight in weights)
    return (
        f"**IMPORTANT TOKENS**\n{marked}\n\n**TOKEN WEIGHTS**\n{details}\n\n**SHORTENED OPTIONS**\n{numbered(prompts)}"
    )
