"""How any `journeyd` subcommand stops when it cannot go on (cli.py and models/commands.py raise it)."""


class CommandFailed(Exception):
    """A command that cannot go on: its message is printed as one line, and the exit status is 2."""
