"""Write a benchmark's figures into benchmarks/RESULTS.md, each under its own heading with the command that made
them, the date, the machine and its load, so that no figure is copied by hand.

A script calls `record_section(title, body_markdown)` when run with `--record`; the section headed `## title` is
replaced (or appended when new), other sections are kept as they are. The file is written atomically.

    python benchmarks/train_vs_original.py --record      # updates "## progan: one training step vs the original"

A script that prints its figures can instead hand its `main` to `run_main(title, main)`: with `--record` on the
command line, what `main` prints becomes the section's body (a code block).
"""

from __future__ import annotations

import contextlib
import datetime
import io
import os
import platform
import re
import shlex
import sys
from collections.abc import Callable
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = ("# Measured figures\n\nEvery figure the docs quote, written by the benchmark that measured it "
          "(`--record`): its command, date, machine and load.\n")


def machine_summary() -> str:
    """One line: CPU model, logical cores, memory (GiB), Python and torch versions, when known."""
    model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        memory_text = f", {memory:.0f} GiB"
    except (ValueError, OSError, AttributeError):
        memory_text = ""
    versions = f"Python {platform.python_version()}"
    if "torch" in sys.modules:
        versions += f", torch {sys.modules['torch'].__version__}"
    return f"{model}, {os.cpu_count()} logical cores{memory_text}; {versions}"


def load_summary() -> str:
    """The 1/5/15-minute load averages, e.g. 'load 0.12 / 0.30 / 0.41'."""
    try:
        one, five, fifteen = os.getloadavg()
    except OSError:
        return "load unknown"
    return f"load {one:.2f} / {five:.2f} / {fifteen:.2f}"


def section_text(title: str, body: str, command: str | None = None, load_before: str | None = None) -> str:
    """The Markdown of one section: heading, command, date, machine, load (before and after when given), body."""
    command = command or " ".join(["python"] + [shlex.quote(part) for part in sys.argv])
    when = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    load = load_summary() if load_before is None else f"before: {load_before}; after: {load_summary()}"
    return (f"## {title}\n\n- command: `{command}`\n- date: {when}\n- machine: {machine_summary()}\n"
            f"- {load}\n\n{body.strip()}\n")


def markdown_table(header: list[str], rows: list[list[str]], align: str = "---:") -> str:
    """A Markdown table: `header`, one alignment cell per column (`align`, right by default), one line per row of
    already formatted cells."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join([align] * len(header)) + "|"]
    return "\n".join(lines + ["| " + " | ".join(cells) + " |" for cells in rows])


def replace_section(document: str, title: str, section: str) -> str:
    """`document` with the section headed `## title` replaced by `section` (appended when absent)."""
    pattern = re.compile(rf"^## {re.escape(title)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    if pattern.search(document):
        return pattern.sub(lambda _: section.rstrip("\n") + "\n\n", document, count=1).rstrip("\n") + "\n"
    return document.rstrip("\n") + "\n\n" + section


def record_section(title: str, body: str, command: str | None = None, load_before: str | None = None,
                   path: Path = RESULTS) -> Path:
    """Write `body` (Markdown) under `## title` in RESULTS.md with its command, date, machine and load."""
    document = path.read_text() if path.exists() else HEADER
    updated = replace_section(document, title, section_text(title, body, command, load_before))
    temporary = path.with_name(f".{path.name}.{os.getpid()}.partial")
    temporary.write_text(updated)
    os.replace(temporary, path)
    return path


RECORD_HELP = "also write the printed figures into their section of benchmarks/RESULTS.md"


class _Tee(io.TextIOBase):
    """A text stream writing to `stream` and keeping a copy."""

    def __init__(self, stream):
        self.stream, self.copy = stream, io.StringIO()

    def write(self, text: str) -> int:
        self.copy.write(text)
        return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()


def run_main(title: str, main: Callable[[], object], path: Path = RESULTS) -> None:
    """Run a benchmark's `main()`; with `--record` among the arguments, record what it printed on stdout
    under `## title` (the command recorded without `--record`). `main` parses the arguments itself (it
    should accept `--record`, with `RECORD_HELP`). Nothing is recorded when `main` raises."""
    if "--record" not in sys.argv[1:]:
        main()
        return
    command = " ".join(["python"] + [shlex.quote(part) for part in sys.argv if part != "--record"])
    load_before = load_summary()
    tee = _Tee(sys.stdout)
    with contextlib.redirect_stdout(tee):
        main()
    printed = tee.copy.getvalue().strip("\n")
    path = record_section(title, f"```\n{printed}\n```", command=command, load_before=load_before, path=path)
    print(f"recorded: {path} (## {title})")
