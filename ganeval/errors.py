"""User-facing errors: the CLIs print these as one line, without a traceback."""


class GanevalError(Exception):
    """A problem with the user's input or environment that has a clear, one-paragraph explanation."""


class SourceError(GanevalError):
    """An image source cannot deliver what was asked (missing, empty, unreadable, too small, mixed sizes)."""
