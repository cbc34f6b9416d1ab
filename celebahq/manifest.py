"""The build's manifest: `OUT/manifest.jsonl`, one JSON object per source image, appended as images finish.

Each line records the source file (its path relative to the source folder: the key), the landmarks and where
they came from, the crop quad, zoom, the stages applied, the quality score, the md5 of the rendered pixels, `t`
(when the line was appended), the status and, once written, the output file: "scored" (pass 1 of a two-pass
build: rendered and scored, no file), "ok" (written; `rank` and `selected` once a selection was made) or
"skipped" with a reason. A rerun appends newer records; the newest record of a source wins.

Lines are appended and flushed one at a time while the folder's writer lock is held (celebahq/pipeline.py), so a
build killed at any moment leaves a manifest whose complete lines are all true. Damage is never silent:

- a torn *last* line (no newline: the write of a killed run) is ignored on reading and cut off by the next writer;
- a damaged line anywhere else (not JSON, not an object with a "source") is reported with its line number and
  skipped; every later record is kept. A rewrite (`write_manifest`, after a ranking) keeps damaged lines verbatim
  at the end, so they stay visible.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from gancore.outputs import atomic_output

if TYPE_CHECKING:  # typing.Self is Python ≥ 3.11; we support 3.10
    from typing import Self

MANIFEST_NAME = "manifest.jsonl"


@dataclass
class ManifestFile:
    """One manifest file as read: its records in order, the damaged lines skipped and whether the last was torn."""

    name: str
    records: list[dict] = field(default_factory=list)
    damaged: list[tuple[int, str]] = field(default_factory=list)  # (1-based line number, the line's text)
    torn: bool = False  # an incomplete last line (ignored)
    complete_bytes: int = 0  # bytes up to and including the last newline

    def describe_damage(self) -> str:
        """'' when undamaged, else e.g. 'manifest.jsonl: damaged lines 4, 9 skipped'."""
        if not self.damaged:
            return ""
        numbers = ", ".join(str(number) for number, _ in self.damaged[:10])
        more = f" and {len(self.damaged) - 10} more" if len(self.damaged) > 10 else ""
        return f"{self.name}: damaged line{'s' if len(self.damaged) > 1 else ''} {numbers}{more} skipped"


@dataclass
class ManifestSummary:
    """Every manifest of a build folder (manifest.jsonl, then the shards' files)."""

    files: list[ManifestFile]

    @property
    def records(self) -> list[dict]:
        return [record for file in self.files for record in file.records]

    @property
    def damaged_lines(self) -> int:
        return sum(len(file.damaged) for file in self.files)

    def describe(self) -> str:
        """One line: how many records were read and how many damaged lines were skipped (and where)."""
        text = f"read {len(self.records)} manifest records, skipped {self.damaged_lines} damaged lines"
        damage = "; ".join(file.describe_damage() for file in self.files if file.damaged)
        return f"{text} ({damage})" if damage else text


def load_manifest(out_dir: str | os.PathLike, name: str = MANIFEST_NAME) -> ManifestFile:
    """Read one manifest file; damaged lines and a torn last line are recorded, never raised."""
    path = Path(out_dir) / name
    loaded = ManifestFile(name)
    if not path.is_file():
        return loaded
    data = path.read_bytes()
    loaded.complete_bytes = data.rfind(b"\n") + 1
    loaded.torn = loaded.complete_bytes < len(data)
    lines = data[:loaded.complete_bytes].decode("utf-8", errors="replace").split("\n")[:-1]
    for number, line in enumerate(lines, start=1):
        record = _decode(line)
        if record is None:
            loaded.damaged.append((number, line))
        else:
            loaded.records.append(record)
    return loaded


def _decode(line: str) -> dict | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    return record if isinstance(record, dict) and isinstance(record.get("source"), str) else None


def manifest_names(out_dir: str | os.PathLike) -> list[str]:
    """manifest.jsonl (when present) then every shard's manifest-<i>-of-<N>.jsonl, sorted."""
    shards = sorted(p.name for p in Path(out_dir).glob("manifest-*-of-*.jsonl"))
    return [name for name in [MANIFEST_NAME, *shards] if (Path(out_dir) / name).is_file()]


def load_all_manifests(out_dir: str | os.PathLike) -> ManifestSummary:
    """Every manifest of a build folder, with the damage found."""
    return ManifestSummary([load_manifest(out_dir, name) for name in manifest_names(out_dir)])


def read_all_manifests(out_dir: str | os.PathLike) -> list[dict]:
    """Records of manifest.jsonl followed by those of every shard's manifest-<i>-of-<N>.jsonl."""
    return load_all_manifests(out_dir).records


def latest_records(records: Iterable[dict]) -> dict[str, dict]:
    """The newest record of every source file (a rerun may append a newer one): by the time `t` each record was
    appended, then by position (records of older builds have no `t` and count as oldest). The time matters across
    files: a shard's manifest and manifest.jsonl may both hold records of a source (a sharded score pass, then the
    unsharded write pass), and the order in which the files are read must not decide which is current."""
    latest = {}
    for record in sorted(records, key=lambda r: r.get("t", 0.0)):  # stable: equal times keep their order
        latest[record["source"]] = record
    return latest


class ManifestWriter:
    """Appends records to `OUT/manifest.jsonl`; cuts off a torn last line left by a killed run first (the complete
    lines before it are never rewritten)."""

    def __init__(self, out_dir: str | os.PathLike, name: str = MANIFEST_NAME):
        self.path = Path(out_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loaded = load_manifest(out_dir, name)
        if loaded.torn:
            os.truncate(self.path, loaded.complete_bytes)
        self.last_time = max((r.get("t", 0.0) for r in loaded.records), default=0.0)
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open until close()

    def append(self, record: dict) -> None:
        """Append `record` with `t`, the time of appending (seconds since the epoch; never decreasing in a file)."""
        self.extend([record])

    def extend(self, records: list[dict]) -> None:
        """Append `records` (each with `t`, as `append`) in one write: a batch's records cost one system call
        (a killed write leaves complete lines and at most one torn last line, which the next run cuts off)."""
        self.last_time = max(time.time(), self.last_time)
        stamp = round(self.last_time, 6)
        try:
            self.file.write("".join(_encode(record | {"t": stamp}) for record in records))
            self.file.flush()
        except OSError as error:  # e.g. a full disk: name the file (a write's error names none)
            raise OSError(error.errno, error.strerror, str(self.path)) from None

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_manifest(out_dir: str | os.PathLike, records: Iterable[dict], name: str = MANIFEST_NAME,
                   damaged: Iterable[str] = ()) -> None:
    """Replace a manifest atomically (temp file + rename), e.g. after the ranking filled `quality`; `damaged`
    lines (text without newline) are kept verbatim at the end."""
    with atomic_output(Path(out_dir) / name) as temporary, open(temporary, "w", encoding="utf-8") as file:
        file.writelines(_encode(record) for record in records)
        file.writelines(f"{line}\n" for line in damaged)
        file.flush()
        os.fsync(file.fileno())


def _encode(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"
