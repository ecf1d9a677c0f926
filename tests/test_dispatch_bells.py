"""Where a bell goes: routing labels, routing keys, queue names, and the models an engine serves."""

from __future__ import annotations

from journeyd.dispatch.bells import bell_priority, binding_keys, queue_name, routing_key
from journeyd.domain.lifecycle import Speed
from journeyd.domain.prompt import parse_prompt
from journeyd.domain.routing import routing_label
from journeyd.engines.base import served_models
from journeyd.engines.classic import ClassicEngine
from journeyd.engines.diffusion.profiles import Versions, profile_from


def test_a_task_is_labelled_by_the_model_it_asked_for() -> None:
    assert routing_label(parse_prompt("a cat --niji 6")) == "niji6"
    assert routing_label(parse_prompt("a cat --v 6.1")) == "6.1"
    assert routing_label(parse_prompt("a cat")) == "default"  # not "7": whichever model draws unversioned prompts


def test_routing_keys_and_queue_names() -> None:
    assert routing_key("6.1") == "model.6_1"  # a '.' would split the topic word
    assert binding_keys(None) == ["model.#"]
    assert binding_keys(["niji6", "default", "niji6"]) == ["model.default", "model.niji6"]
    assert queue_name("journeyd", None) == "journeyd.any"
    assert queue_name("journeyd", ["niji6", "default"]) == queue_name("journeyd", ["default", "niji6"])
    assert queue_name("journeyd", ["default", "niji6"]) == "journeyd.models.default,niji6"
    assert bell_priority(Speed.TURBO) > bell_priority(Speed.FAST) > bell_priority(Speed.RELAX)


class _Diffusers:
    """What `served_models` reads of the diffusers engine: its versions table."""

    def __init__(self, *version_lists: list[str]) -> None:
        self.versions = Versions.of(
            profile_from({"model": "m", "family": "sdxl", "versions": v}) for v in version_lists
        )


def test_the_models_an_engine_serves() -> None:
    assert served_models(ClassicEngine(base_size=64)) is None  # draws every version
    assert served_models(_Diffusers(["7", "6.1"], ["niji6"])) == ["6.1", "7", "default", "niji6"]  # type: ignore[arg-type]
    assert served_models(_Diffusers(["*"])) is None  # type: ignore[arg-type]
