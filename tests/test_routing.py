"""A task's routing label: which workers may run it."""

from __future__ import annotations

import pytest

from journeyd.domain.prompt import parse_prompt
from journeyd.domain.routing import routing_label


@pytest.mark.parametrize(
    ("prompt", "label"),
    [
        ("a fox --niji 6", "niji6"),
        ("a fox --niji", "niji6"),  # --niji alone is the default niji version
        ("a fox --v 6.1", "6.1"),
        ("a fox --version 7", "7"),
        ("a fox", "default"),  # no model asked for: whatever the worker's default is
        ("a fox --ar 16:9 --seed 3", "default"),
    ],
)
def test_the_label_names_the_model_the_prompt_asked_for(prompt: str, label: str) -> None:
    assert routing_label(parse_prompt(prompt)) == label
