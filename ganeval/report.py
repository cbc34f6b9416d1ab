"""The one JSON shape of every `ganeval` command (`--json`), and the metric entries inside it.

Every command prints one object::

    {"command": "fid",                       # the ganeval command
     "metrics": {"fid": {"value": 12.3, ...}},  # one entry per metric computed (none for `stats`)
     "num_images": {"fid": {"a": 64, "b": 64}}, # images read per set, by metric (MS-SSIM: 2 per pair)
     "seed": 1000, "sources": {"a": "gen/", "b": "real/"},
     "notes": ["..."],                       # every note line the command printed on stderr (a list, maybe [])
     "skipped": {"a": ["file: reason"], "b": []},  # skipped files by set (a list per set, maybe [])
     "device": "cuda:0", "seconds": 12.345}   # once, for the whole command

plus, for `stats`, "statistics" (what was written: source, count, dim, cache) and "output". A metric's entry is
its result's `to_dict()` without the fields the envelope says once (`ENVELOPE_FIELDS`).
"""

from __future__ import annotations

from collections.abc import Mapping

ENVELOPE_FIELDS = ("metric", "num_images", "seed", "device", "seconds", "skipped", "notes")


def metric_entry(result) -> dict:
    """A metric's own numbers and settings: `result.to_dict()` less the envelope's fields."""
    return {key: value for key, value in result.to_dict().items() if key not in ENVELOPE_FIELDS}


def skipped_by_set(skipped, set_name: str) -> dict[str, list[str]]:
    """Skipped files as {set: [file: reason, ...]} (a single set's list goes under `set_name`)."""
    if isinstance(skipped, Mapping):
        return {name: list(items) for name, items in skipped.items()}
    return {set_name: list(skipped)}


def command_report(command: str, metrics: Mapping[str, object], *, num_images: Mapping[str, object],
                   seed: int | None, sources: Mapping[str, str], notes: list[str], skipped, device: str,
                   seconds: float, **extra) -> dict:
    """The JSON object of a `ganeval` command (see the module docstring); `extra`: command-specific fields."""
    first_set = next(iter(sources), "gen")
    return {"command": command, "metrics": {name: metric_entry(result) for name, result in metrics.items()},
            "num_images": dict(num_images), "seed": seed, "sources": {k: str(v) for k, v in sources.items()},
            "notes": list(notes), "skipped": skipped_by_set(skipped, first_set), "device": str(device),
            "seconds": round(float(seconds), 3), **extra}


__all__ = ["ENVELOPE_FIELDS", "command_report", "metric_entry", "skipped_by_set"]
