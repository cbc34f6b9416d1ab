"""The build's manifest: `OUT/manifest.jsonl`, one JSON object per source image, appended as images finish.

Each line records the source file, the landmarks and where they came from, the crop quad, zoom, the stages
applied, the output file and its md5, the status ("ok" or "skipped" with a reason) and `quality` (filled by
the ranking). Lines are appended and flushed one at a time, so a build killed at any moment leaves a manifest
whose complete lines are all true; a torn last line is ignored on reading and rewritten by the next run.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Self

MANIFEST_NAME = "manifest.jsonl"


def read_manifest(out_dir: str | os.PathLike, name: str = MANIFEST_NAME) -> list[dict]:
    """All complete records of one manifest file, in the order written (a torn last line is dropped)."""
    path = Path(out_dir) / name
    if not path.is_file():
        return []
    records = []
    with open(path, encoding="utf-8") as file:
        for line in file:
            if not line.endswith("\n"):
                break  # the last line of a killed run
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                break
    return records


def manifest_names(out_dir: str | os.PathLike) -> list[str]:
    """manifest.jsonl (when present) then every shard's manifest-<i>-of-<N>.jsonl, sorted."""
    shards = sorted(p.name for p in Path(out_dir).glob("manifest-*-of-*.jsonl"))
    return [name for name in [MANIFEST_NAME, *shards] if (Path(out_dir) / name).is_file()]


def read_all_manifests(out_dir: str | os.PathLike) -> list[dict]:
    """Records of manifest.jsonl followed by those of every shard's manifest-<i>-of-<N>.jsonl."""
    return [record for name in manifest_names(out_dir) for record in read_manifest(out_dir, name)]


def latest_records(records: Iterable[dict]) -> dict[str, dict]:
    """The last record of every source file (a rerun may append a newer one)."""
    latest = {}
    for record in records:
        latest[record["source"]] = record
    return latest


class ManifestWriter:
    """Appends records to `OUT/manifest.jsonl`; drops a torn last line left by a killed run first."""

    def __init__(self, out_dir: str | os.PathLike, name: str = MANIFEST_NAME):
        self.path = Path(out_dir) / name
        self.path.parent.mkdir(parents=True, exist_ok=True)
        complete = read_manifest(out_dir, name)
        if self.path.is_file() and self.path.stat().st_size != sum(len(_encode(r)) for r in complete):
            write_manifest(out_dir, complete, name)  # rewrite without the torn tail
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - held open until close()

    def append(self, record: dict) -> None:
        self.file.write(_encode(record))
        self.file.flush()

    def close(self) -> None:
        self.file.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def write_manifest(out_dir: str | os.PathLike, records: Iterable[dict], name: str = MANIFEST_NAME) -> None:
    """Replace a manifest atomically (temp file + rename), e.g. after the ranking filled `quality`."""
    path = Path(out_dir) / name
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.writelines(_encode(record) for record in records)
        file.flush()
        os.fsync(file.fileno())
    os.replace(temporary, path)


def _encode(record: dict) -> str:
    return json.dumps(record, sort_keys=True) + "\n"  # ASCII: characters == bytes for the torn-line check
