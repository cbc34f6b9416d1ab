"""The manual reads as a manual: README.md and docs/*.md name no issue numbers and no work sessions, every command
in their code blocks names subcommands and options the CLIs have, and every figure in benchmarks/RESULTS.md says
which command, date, machine and load produced it."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import click
import pytest

from celebahq.cli import main as celebahq_main
from ganeval.cli import main as ganeval_main
from progan.cli import main as progan_main

ROOT = Path(__file__).resolve().parent.parent
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RESULTS = ROOT / "benchmarks" / "RESULTS.md"
TOOLS: dict[str, click.Group] = {"ganeval": ganeval_main, "celebahq": celebahq_main, "progan": progan_main}
FENCE = re.compile(r"^```([^\n]*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
NOT_SHELL = {"text", "json", "python"}  # fence languages whose lines are no commands (trees, outputs, code)


def page_id(path: Path) -> str:
    return str(path.relative_to(ROOT))


def prose(text: str) -> str:
    """`text` without its fenced code blocks and inline code spans."""
    return re.sub(r"`[^`\n]*`", "", FENCE.sub("", text))


def command_lines(text: str) -> list[str]:
    """The lines of the fenced code blocks that may hold commands, continuation lines (ending in a backslash)
    joined."""
    lines = []
    for language, block in FENCE.findall(text):
        if language.strip() not in NOT_SHELL:
            lines += block.replace("\\\n", " ").splitlines()
    return lines


def tool_invocations(line: str) -> list[tuple[str, list[str]]]:
    """(tool, arguments) of each `ganeval` / `celebahq` / `progan` call in a shell line, including
    `torchrun … -m ganeval.cli …`; environment assignments before the tool are skipped."""
    found = []
    for segment in re.split(r"&&|;|\s\|\s", line):
        try:
            words = shlex.split(segment, comments=True)
        except ValueError:  # an unbalanced quote in a synopsis line: no shell command
            continue
        for position, word in enumerate(words):
            module = words[position + 1] if word == "-m" and position + 1 < len(words) else ""
            if module.removesuffix(".cli") in TOOLS and module.endswith(".cli"):
                found.append((module.removesuffix(".cli"), words[position + 2:]))
                break
            if word in TOOLS:
                if all("=" in before for before in words[:position]):
                    found.append((word, words[position + 1:]))
                break
    return found


def option_names(command: click.Command) -> set[str]:
    names = {"-h", "--help"}
    for parameter in command.params:
        names.update(parameter.opts)
        names.update(parameter.secondary_opts)
    return names


def unknown_parts(tool: str, arguments: list[str]) -> list[str]:
    """Subcommands and options in `arguments` that `tool`'s click group does not define."""
    group = TOOLS[tool]
    if not arguments or arguments[0].startswith("-"):
        known = option_names(group)
        return [word for word in arguments[:1] if word not in known]
    command = group.commands.get(arguments[0])
    if command is None:
        return [f"{tool} {arguments[0]}"]
    known = option_names(command)
    unknown = []
    for word in arguments[1:]:
        for part in word.strip("[](){}").split("|"):
            name = part.split("=", 1)[0].strip("[]")
            if re.fullmatch(r"--?[A-Za-z][\w-]*", name) and name not in known:
                unknown.append(f"{tool} {arguments[0]} {name}")
    return unknown


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_no_issue_numbers_or_sessions(page):
    text = page.read_text()
    issues = re.findall(r"#\d+", prose(text))
    sessions = re.findall(r"\bsessions?\b", text, re.IGNORECASE)
    assert not issues and not sessions, (issues, sessions)


@pytest.mark.parametrize("page", PAGES, ids=page_id)
def test_commands_name_existing_subcommands_and_options(page):
    invocations = [call for line in command_lines(page.read_text()) for call in tool_invocations(line)]
    unknown = [part for tool, arguments in invocations for part in unknown_parts(tool, arguments)]
    assert not unknown


def test_readme_has_the_quick_start_and_the_test_command():
    readme = (ROOT / "README.md").read_text()
    assert 'python3 -m pip install -q -e ".[test,faces]" && python3 -m pytest -q' in readme
    calls = [call for line in command_lines(readme) for call in tool_invocations(line)]
    assert ("celebahq", ["build", "--src", "examples/celeba_wild_mini", "--out", "out/mini"]) in calls
    assert len(calls) >= 10  # the tours of the three tools are checked too


def test_the_checker_sees_a_wrong_option_and_subcommand():
    calls = tool_invocations("FOO=1 ganeval swd a b --num-images 3 --no-such-flag && torchrun -m progan.cli trian")
    assert calls == [("ganeval", ["swd", "a", "b", "--num-images", "3", "--no-such-flag"]), ("progan", ["trian"])]
    assert unknown_parts(*calls[0]) == ["ganeval swd --no-such-flag"]
    assert unknown_parts(*calls[1]) == ["progan trian"]
    assert unknown_parts("celebahq", ["official", "[--legacy|--fast]", "[--h5", "FILE]"]) == []
    assert re.findall(r"#\d+", prose("see issue #12, not `#3`\n```\n#4\n```\n")) == ["#12"]


def results_sections() -> dict[str, str]:
    text = RESULTS.read_text()
    return dict(re.findall(r"^## ([^\n]+)\n(.*?)(?=^## |\Z)", text, re.MULTILINE | re.DOTALL))


def test_every_recorded_figure_has_its_command_date_machine_and_load():
    sections = results_sections()
    assert sections
    for title, body in sections.items():
        head = body.strip().split("\n\n")[0]
        for field in ("- command: ", "- date", "- machine", "load"):
            assert field in head, (title, field)


def test_links_into_results_name_existing_sections():
    anchors = {re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-") for title in results_sections()}
    for page in PAGES:
        for anchor in re.findall(r"RESULTS\.md#([\w-]+)", page.read_text()):
            assert anchor in anchors, (page_id(page), anchor)
