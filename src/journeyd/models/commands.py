"""`journeyd models list` and `journeyd models pull NAME`."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from journeyd.command_failed import CommandFailed
from journeyd.models import hub
from journeyd.models.catalog import CATALOG, GB, UnknownModel, entry, human


def add_commands(commands: Any) -> None:
    """The `models` command and its two subcommands, on the `journeyd` parser's subparsers."""
    parser = commands.add_parser("models", help="the curated models: list them, pull one into the Hugging Face cache")
    models = parser.add_subparsers(dest="models_command", required=True)
    models.add_parser("list", help="each model, what it is good for, its size and whether it is here").set_defaults(
        func=models_list
    )
    pull_parser = models.add_parser("pull", help="download a model (and its inpainting model) into the cache")
    pull_parser.add_argument("name", help="a name from `journeyd models list`")
    pull_parser.set_defaults(func=models_pull)


def models_list(args: argparse.Namespace) -> int:
    rows = [("NAME", "DOWNLOAD", "MEMORY", "IN CACHE", "GOOD FOR")]
    for item in CATALOG:
        name = item.name + (" *" if item.gated else "")
        rows.append((name, human(item.size), f"{item.memory / GB:.0f} GB", hub.cache_state(item), item.good_for))
    w = [max(len(row[i]) for row in rows) for i in range(4)]
    for name, size, memory, state, good_for in rows:
        print(f"{name:<{w[0]}}  {size:>{w[1]}}  {memory:>{w[2]}}  {state:<{w[3]}}  {good_for}")
    print(
        "\n* gated: accept its terms on huggingface.co, then log in with `hf auth login` (or set HF_TOKEN)\n"
        "MEMORY is GPU memory in half precision; a CPU needs about twice that in RAM.\n"
        f"cache: {hub.hub_cache()} (HF_HUB_CACHE or HF_HOME moves it)\n"
        "`journeyd models pull NAME` downloads one; `journeyd serve` serves the first one in the cache, "
        "`journeyd serve --model NAME` another."
    )
    return 0


def models_pull(args: argparse.Namespace) -> int:
    try:
        item = entry(args.name)
    except UnknownModel as error:
        raise CommandFailed(str(error)) from None
    cache = hub.hub_cache()
    if hub.cache_state(item) == "yes":
        print(f"{item.name} is already in the cache ({cache}); `journeyd serve --model {item.name}` serves it")
        return 0
    repos = ", ".join(repo.id for repo in item.repos)
    print(f"pulling {item.name} ({repos}: about {human(item.size)}) into {cache}", file=sys.stderr)
    try:
        hub.pull(item)
    except hub.PullFailed as error:
        raise CommandFailed(f"models pull {item.name}: {error}") from None
    except KeyboardInterrupt:
        print(
            f"\ninterrupted: what was fetched is kept, the last file's part too; `journeyd models pull {item.name}` "
            "fetches the rest, resuming that file from the byte it reached",
            file=sys.stderr,
        )
        return 130
    print(f"{item.name} is in the cache; `journeyd serve --model {item.name}` serves it")
    return 0
