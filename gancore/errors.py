"""The toolkit-wide user error: every CLI prints it as one `error:` line (exit status 2), without a traceback."""

from __future__ import annotations

import os
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment that has a clear, one-paragraph explanation."""


class SourceError(UserError):
    """An image source cannot deliver what was asked (missing, empty, unreadable, too small, mixed sizes).

    `advice` is the sentence telling the user what to do (e.g. the --skip-bad hint); a command whose options differ
    replaces it with `with_advice` instead of editing the message text."""

    def __init__(self, problem: str, advice: str | None = None):
        super().__init__(problem if advice is None else f"{problem}. {advice}")
        self.problem, self.advice = problem, advice

    def with_advice(self, advice: str) -> SourceError:
        return SourceError(self.problem, advice)


def printable(text: object) -> str:
    """`text` (a path, a name, a message) safe to print in a one-line message: every character that is not
    printable (newlines, tabs, other control characters, Unicode line separators, the surrogates that stand for
    undecodable bytes in file names) written as its Python escape (`\\n`, `\\x1b`, `\\udcff`), so that a file name
    cannot start a second line of its own, e.g. a forged `error:` line."""
    text = str(text)
    if text.isprintable():
        return text
    return "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)


SKIP_BAD_ADVICE = "Fix or remove them, or pass --skip-bad to skip them"


def read_text_file(path: str | os.PathLike, encoding: str, what: str = "file", missing: str = "",
                   error: type[UserError] = UserError) -> str:
    """The text of `path`, or `error` in one line for a missing file ('PATH: WHAT not found' + `missing`, a hint), a
    binary one and any other read failure."""
    path = Path(path)
    try:
        return path.read_text(encoding=encoding)
    except FileNotFoundError:
        raise error(f"{path}: {what} not found{missing}") from None
    except UnicodeDecodeError as failure:
        raise error(f"{path}: not a text file ({failure.reason} at byte {failure.start})") from None
    except OSError as failure:
        raise error(f"{path}: cannot read the {what} ({failure.strerror or failure})") from None
