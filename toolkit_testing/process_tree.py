"""Which processes exist, from Linux's /proc: what a test or benchmark checks is gone after a kill, or sums the
memory of."""

from __future__ import annotations

from pathlib import Path


def process_state(pid: int) -> str | None:
    """The kernel's one-letter state of process `pid` (R running, S or D sleeping, T stopped, Z zombie, …), from
    Linux's /proc; None when it is gone (or elsewhere)."""
    fields = _stat_fields(Path(f"/proc/{pid}/stat"))
    return None if fields is None else fields[0]


def _stat_fields(path: Path) -> tuple[str, int] | None:
    """(state, parent pid) from a /proc/PID/stat file; None when it cannot be read (the process is gone). Read after
    the last ')': the command name before it may hold spaces and parentheses."""
    try:
        stat = path.read_text()
    except OSError:
        return None
    state, parent = stat[stat.rindex(")") + 2:].split()[:2]
    return state, int(parent)


def descendants(pid: int) -> set[int]:
    """Every live (not zombie) descendant of process `pid`, from Linux's /proc (an empty set elsewhere): what a
    test or benchmark checks is gone after killing `pid`, or sums the memory of."""
    parents: dict[int, set[int]] = {}
    proc = Path("/proc")
    for entry in proc.iterdir() if proc.is_dir() else ():
        fields = _stat_fields(entry / "stat") if entry.name.isdigit() else None
        if fields is not None and fields[0] != "Z":
            parents.setdefault(fields[1], set()).add(int(entry.name))
    found, frontier = set(), {pid}
    while frontier:
        frontier = set().union(*(parents.get(p, set()) for p in frontier)) - found
        found |= frontier
    return found
