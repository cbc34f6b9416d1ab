"""`progan --help` and every command's options read well: a one-line summary per command, help text on every
option; `progan info` prints the resolved config as text too."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from progan.cli import main as progan_main


@pytest.mark.parametrize("name", sorted(progan_main.commands))
def test_every_option_has_help_and_the_summary_is_a_sentence(name):
    command = progan_main.commands[name]
    missing = [param.name for param in command.params if isinstance(param, click.Option) and not param.help]
    assert not missing, f"progan {name}: options without help: {missing}"
    summary = command.get_short_help_str(limit=200)
    assert summary.endswith(".") and not summary.endswith(("e.g.", "...")) and len(summary) <= 75, summary


def test_group_help_lists_whole_summaries():
    result = CliRunner().invoke(progan_main, ["--help"], terminal_width=120)
    assert result.exit_code == 0
    assert "e.g.\n" not in result.output.split("Commands:")[1] and "..." not in result.output.split("Commands:")[1]
    assert "train        Train a ProGAN from scratch (--out) or continue a run (--resume)." in result.output


def test_info_prints_the_resolved_config_without_json():
    result = CliRunner().invoke(progan_main, ["info", "--config", "tiny", "--set", "total_kimg=3"])
    assert result.exit_code == 0, result.output
    text = result.output.split("resolved config")[1]
    assert "\n  total_kimg                 3.0\n" in text and '\n  metrics                    ["swd", "fid"]\n' in text
