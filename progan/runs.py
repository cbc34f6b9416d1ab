"""Run directories of `progan train`: what a run folder holds, which checkpoint a resume continues, and the
one-row-per-tick guarantee of stats.jsonl.

A run folder holds config.json, stats.jsonl (one JSON object per tick, `tick` = 1, 2, …), reals.png,
fakes<kimg>.png, network-snapshot-<kimg>.pt and interrupted-<nimg>.pt. A new run refuses a folder that holds
any of them (`check_new_run_dir`); a resume takes the newest checkpoint that loads and passes its checks
(`find_checkpoint`), and cuts stats.jsonl back to that checkpoint's tick (`truncate_stats`).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from gancore.errors import SourceError, UserError
from gancore.outputs import atomic_output

from .checkpoint import load_checkpoint
from .configs import TrainingConfig

SNAPSHOT_NAME = re.compile(r"network-snapshot-(\d+)\.pt$")
INTERRUPTED_NAME = re.compile(r"interrupted-(\d+)\.pt$")
RUN_FILES = ("config.json", "stats.jsonl", "reals.png", "network-snapshot-*.pt", "interrupted-*.pt",
             "fakes*.png")
# what a branch (--resume FILE --out DIR) must not find in DIR: another run's config and checkpoints (its
# stats.jsonl, a history the branch continues, is cut back to the checkpoint's tick)
BRANCH_REFUSES = ("config.json", "network-snapshot-*.pt", "interrupted-*.pt")


def _discard(line: str) -> None:
    """The default `note`: say nothing."""


def run_checkpoints(run_dir: Path) -> list[tuple[int, Path]]:
    """(images shown, file) of every network-snapshot-<kimg>.pt (kimg × 1000) and interrupted-<nimg>.pt in
    `run_dir`, newest first (an interrupted one first on a tie: it was written later in the same tick)."""
    found = []
    for file in run_dir.iterdir():
        if match := SNAPSHOT_NAME.match(file.name):
            found.append((int(match.group(1)) * 1000, 0, file))
        elif match := INTERRUPTED_NAME.match(file.name):
            found.append((int(match.group(1)), 1, file))
    return [(nimg, file) for nimg, _, file in sorted(found, reverse=True)]


def find_checkpoint(path, note=_discard) -> Path:
    """A checkpoint file, or the newest valid checkpoint of a run directory: of its network-snapshot-<kimg>.pt
    and interrupted-<nimg>.pt, the one with the most images shown that `load_checkpoint` accepts; each newer
    one it refuses (truncated, damaged, diverged) is skipped with a `note(line)` giving the reason."""
    path = Path(path)
    if not path.is_dir():
        if not path.is_file():
            raise UserError(f"{path}: no such checkpoint or run directory")
        return path
    candidates = run_checkpoints(path)
    if not candidates:
        raise UserError(f"{path}: no network-snapshot-*.pt or interrupted-*.pt to resume from")
    for _, file in candidates:
        try:
            load_checkpoint(file)
        except SourceError as error:
            note(f"note: skipped {file.name}: {error}")
            continue
        return file
    raise UserError(f"{path}: none of its {len(candidates)} checkpoints can be read (see the notes above)")


def check_new_run_dir(run_dir, patterns: tuple[str, ...] = RUN_FILES) -> None:
    """UserError when `run_dir` already holds a run (any file matching `patterns`): a new run would overwrite its
    snapshots and mix two histories in stats.jsonl. Nothing is written."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        return
    held = sorted({file.name for pattern in patterns for file in run_dir.glob(pattern)})
    if held:
        shown = ", ".join(held[:3]) + (f" and {len(held) - 3} more" if len(held) > 3 else "")
        raise UserError(f"{run_dir} already holds a run ({shown}); continue it with --resume {run_dir}, or give "
                        "--out a new folder")


@dataclass
class ResumeSetup:
    """What `progan train --resume` continues: the checkpoint (its kimg and tick), its config, data and run
    directory."""

    checkpoint: Path
    kimg: float
    tick: int
    config: TrainingConfig
    data_path: str | None
    run_dir: Path

    def describe(self) -> str:
        """The line that says what a resume loaded."""
        return f"resuming from {self.checkpoint} ({self.kimg:g} kimg, tick {self.tick})"


def resume_setup(resume, overrides: list[str], data_path=None, run_dir=None, note=_discard) -> ResumeSetup:
    """Find the checkpoint of `resume` (a snapshot file or a run directory: its newest valid one, see
    `find_checkpoint`) and its config: the run's config.json when readable, else the config stored in the
    checkpoint (`note` says so). `overrides` ('key=value') apply on top; --data and --out (`data_path`,
    `run_dir`) default to the run's. A checkpoint file whose run folder holds newer checkpoints is refused
    (continuing it there would leave the newer ones to a later resume)."""
    from .configs import parse_override

    checkpoint = find_checkpoint(resume, note)
    run_dir = Path(run_dir) if run_dir else checkpoint.parent
    if run_dir.resolve() != checkpoint.parent.resolve():  # a branch: never into another run's folder
        check_new_run_dir(run_dir, BRANCH_REFUSES)
    state = load_checkpoint(checkpoint)
    progress = state.get("progress") or {}
    nimg = int(progress.get("cur_nimg", round(float(state.get("kimg", 0)) * 1000)))
    if Path(resume).is_file() and run_dir.is_dir():
        newer = [file.name for images, file in run_checkpoints(run_dir) if images > nimg]
        if newer:
            raise UserError(f"{run_dir} holds checkpoints newer than {checkpoint.name} ({', '.join(newer[:3])}); "
                            f"continue the newest with --resume {run_dir}, or give --out a new folder")
    config_file = checkpoint.parent / "config.json"
    try:
        values = json.loads(config_file.read_text())
        if not isinstance(values, dict):
            raise TypeError("not a JSON object")
    except (OSError, ValueError, TypeError) as error:
        values = {**state["config"], "data_path": state.get("data_path")}
        reason = "missing" if isinstance(error, FileNotFoundError) else f"unreadable ({error})"
        note(f"note: {config_file} is {reason}; using the config stored in {checkpoint.name}")
    data_path = data_path or values.pop("data_path", None)
    values.pop("data_path", None)
    values.update(parse_override(text) for text in overrides)
    if data_path is None:
        raise UserError(f"{checkpoint}: the run's data path is unknown (no config.json, an old checkpoint); "
                        "pass --data")
    return ResumeSetup(checkpoint, nimg / 1000, int(progress.get("tick", 0)), TrainingConfig.from_dict(values),
                       str(data_path), run_dir)


def truncate_stats(stats_file: Path, last_tick: int) -> None:
    """Keep one row per tick 1 … `last_tick` in stats.jsonl (the last written of each; rows of later ticks, torn
    lines and rows without a tick are dropped), atomically."""
    if not stats_file.is_file():
        return
    rows: dict[int, str] = {}
    for line in stats_file.read_text().splitlines():
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict) and isinstance(row.get("tick"), int) and 1 <= row["tick"] <= last_tick:
            rows[row["tick"]] = line
    with atomic_output(stats_file) as temporary:
        temporary.write_text("".join(rows[tick] + "\n" for tick in sorted(rows)))
