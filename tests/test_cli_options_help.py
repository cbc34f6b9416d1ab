"""Every option of every `ganeval`, `celebahq` and `progan` command has help text (what `--help` shows)."""

from __future__ import annotations

import click
import pytest

from celebahq.cli import main as celebahq_main
from ganeval.cli import main as ganeval_main
from progan.cli import main as progan_main


def _commands(group: click.Group, prefix: str):
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            yield from _commands(command, f"{prefix} {name}")
        else:
            yield f"{prefix} {name}", command


COMMANDS = [pair for group, name in ((ganeval_main, "ganeval"), (celebahq_main, "celebahq"),
                                     (progan_main, "progan")) for pair in _commands(group, name)]


@pytest.mark.parametrize("path,command", COMMANDS, ids=[path for path, _ in COMMANDS])
def test_every_option_has_help_text(path, command):
    missing = [option.opts[0] for option in command.params
               if isinstance(option, click.Option) and not option.hidden and not (option.help or "").strip()]
    assert not missing, f"{path}: options without help text: {missing}"
