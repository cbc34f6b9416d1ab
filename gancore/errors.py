"""The toolkit-wide user error: every CLI prints it as one `error:` line (exit status 2), without a traceback."""


class UserError(Exception):
    """A problem with the user's input or environment that has a clear, one-paragraph explanation."""


class SourceError(UserError):
    """An image source cannot deliver what was asked (missing, empty, unreadable, too small, mixed sizes)."""
