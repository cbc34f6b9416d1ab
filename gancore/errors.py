"""The toolkit-wide user error: every CLI prints it as one `error:` line (exit status 2), without a traceback."""

from __future__ import annotations


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


SKIP_BAD_ADVICE = "Fix or remove them, or pass --skip-bad to skip them"
