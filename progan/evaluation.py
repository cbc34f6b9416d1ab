"""Scoring generators with ganeval: the one path behind the trainer's snapshot metrics and `progan evaluate`,
which scores every network snapshot of a run and writes a table (Markdown + JSON) and curves against kimg.

`score_generator_source` draws images of a generator (image i from latent (seed, i), `GeneratorSource`) and
hands them with the reals to `ganeval.compute_metrics` (one pass; generated stream `settings.seed`, reals
`settings.seed + 1`). The trainer calls it at the working resolution with the training data reduced to it;
`evaluate_run` at each snapshot's trained resolution with the reals given (ganeval pairs their sizes).

evaluation.json (format "progan-evaluation", version 1) holds one row per snapshot: file, kimg, tick, resolution,
lod, the settings it was scored with and every metric's JSON object (ganeval's, plus "resolution"). A rerun
reuses each metric of a row whose snapshot file (size, modification time) and settings are unchanged.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from gancore.errors import SourceError, UserError
from gancore.outputs import atomic_output

from .checkpoint import GeneratorSource, generator_from_checkpoint, load_checkpoint
from .runs import SNAPSHOT_NAME

FORMAT = "progan-evaluation"
CURVE_FIELDS = ("value", "avg", "mean", "precision", "recall")  # the numbers of a metric's JSON drawn as curves


def score_generator_source(G, lod: float, resolution: int, real, names: list[str], settings, device,
                           inception=None, resize: str = "tf", extractor=None, cache: bool = False,
                           cache_dir=None) -> dict[str, dict]:
    """The metrics `names` of generator G at `lod`, its images at `resolution` (box-reduced or nearest-upsampled
    as `images_to_uint8`), against `real` (any ganeval source). `cache`: the reals' Inception features through
    ganeval's feature cache (`cache_dir`). Returns {name: the metric's JSON object plus "resolution"}."""
    from ganeval.metric_main import compute_metrics
    from ganeval.registry import images_asked

    fakes = GeneratorSource(G, lod, resolution, images_asked(names, settings), seed=settings.seed, device=device)
    scores = compute_metrics(fakes, real, names, settings, inception=inception, resize=resize, device=device,
                             extractor=extractor, cache=cache, cache_dir=cache_dir)
    notes = scores.all_notes()  # default counts, reductions: recorded with every metric of the pass
    return {name: dict(result.to_dict(), resolution=resolution, **({"notes": notes} if notes else {}))
            for name, result in scores.results.items()}


def curve_values(name: str, result: dict) -> dict[str, float]:
    """The numbers of one metric's JSON object that the table and the curves show, by label: SWD's levels
    ("swd 16", …, "swd avg"), else the fields in CURVE_FIELDS that it has ("fid", "pr precision", …)."""
    out = {}
    if isinstance(result.get("levels"), dict):
        out.update({f"{name} {level}": float(value) for level, value in result["levels"].items()})
    for key in CURVE_FIELDS:
        value = result.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[name if key in ("value", "mean") else f"{name} {key}"] = float(value)
    return out


@dataclass
class SnapshotRow:
    """One snapshot's scores: its file (name, size, modification time in ns), kimg, tick, the resolution it was
    scored at, lod, the settings and each metric's JSON object."""

    snapshot: str
    size: int
    mtime_ns: int
    kimg: float
    tick: int
    resolution: int
    lod: float
    settings: dict
    metrics: dict[str, dict] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass
class RunEvaluation:
    """`evaluate_run`'s result: the rows (by kimg), how many metric values were computed and reused, the files."""

    run: str
    real: str
    metrics: list[str]
    rows: list[SnapshotRow]
    computed: int = 0
    reused: int = 0
    files: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": 1, "run": self.run, "real": self.real, "metrics": self.metrics,
                "rows": [asdict(row) for row in self.rows]}


def run_snapshots(run_dir: Path) -> list[Path]:
    """The network-snapshot-<kimg>.pt files of a run folder, oldest first; UserError when there are none."""
    if not run_dir.is_dir():
        raise UserError(f"{run_dir}: not a run folder")
    found = sorted((int(match.group(1)), file) for file in run_dir.iterdir()
                   if (match := SNAPSHOT_NAME.match(file.name)))
    if not found:
        raise UserError(f"{run_dir}: no network-snapshot-*.pt to evaluate")
    return [file for _, file in found]


def _previous_rows(path: Path, note) -> dict[str, SnapshotRow]:
    """The rows of an earlier evaluation.json by snapshot name; {} (with a note) when it cannot be read."""
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text())
        if data.get("format") != FORMAT:
            raise ValueError(f"not a {FORMAT} file")
        return {row["snapshot"]: SnapshotRow(**_current_settings(row)) for row in data["rows"]}
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
        note(f"note: {path} is unreadable ({error}); every snapshot is scored again")
        return {}


def _current_settings(row: dict) -> dict:
    """A row as this version records it: files written before each metric's settings became its own record held
    an empty `extra` among the settings, which says nothing."""
    settings = row.get("settings")
    if isinstance(settings, dict) and settings.get("extra") == {}:
        row = dict(row, settings={key: value for key, value in settings.items() if key != "extra"})
    return row


@dataclass
class SnapshotScoring:
    """What scores each snapshot of a run: the reals, the metrics and their settings, the device, one feature
    network for the whole run (`features`, loaded once) and the feature cache (the reals' features, computed once
    per resolution and kept for reruns)."""

    real: object
    metrics: list[str]
    settings: object  # ganeval.registry.MetricSettings
    device: object  # torch.device
    features: object  # ganeval.features.LazyExtractor
    cache: bool = False
    cache_dir: object = None

    def score(self, G, names: list[str]) -> dict[str, dict]:
        return score_generator_source(G, float(G.lod), G.resolution, self.real, names, self.settings, self.device,
                                      extractor=self.features, cache=self.cache, cache_dir=self.cache_dir)


def evaluate_run(run_dir, real, metrics: list[str], settings, out_dir=None, device=None, inception=None,
                 resize: str = "tf", extractor=None, plots: bool = True,
                 note: Callable[[str], None] = lambda line: None, cache: bool = False,
                 cache_dir=None) -> RunEvaluation:
    """Score every network snapshot of `run_dir` with `metrics` (ganeval names) against `real`, each at its trained
    resolution, through `score_generator_source`; write OUT/evaluation.json and evaluation.md after each
    snapshot and, with `plots`, one OUT/<metric>.png per metric at the end (all atomically; OUT defaults to
    RUN/evaluation). Metrics already in evaluation.json for an unchanged snapshot and equal settings are reused.
    The Inception is loaded once for the run; with `cache` (off in the Python API, on in the CLI) the reals'
    features go through ganeval's feature cache (`cache_dir`, else $GANEVAL_CACHE/fid), so snapshots at one
    resolution compute them once.
    `note(line)` receives one line per snapshot and any notes."""
    from gancore.runtime import resolve_device
    from ganeval.features import LazyExtractor
    from ganeval.registry import metric_spec

    run_dir = Path(run_dir)
    out_dir = Path(out_dir) if out_dir is not None else run_dir / "evaluation"
    snapshots = run_snapshots(run_dir)
    if plots:
        check_plotting()
    device = resolve_device(device)
    lazy = LazyExtractor(extractor, inception, resize, device)
    if any(metric_spec(name).features for name in metrics):
        lazy.fetch_weights()  # offline without the Inception weights: said now, not after the first snapshot's SWD
    out_dir.mkdir(parents=True, exist_ok=True)
    common = {"real": str(Path(real).resolve()) if isinstance(real, (str, os.PathLike)) else repr(real),
              "resize": resize, "extractor": None if extractor is None else type(extractor).__name__,
              **settings.values()}
    previous = _previous_rows(out_dir / "evaluation.json", note)
    result = RunEvaluation(str(run_dir), common["real"], list(metrics), [])
    scoring = SnapshotScoring(real, list(metrics), settings, device, lazy, cache, cache_dir)
    said: set[str] = set()
    for file in snapshots:
        row = _score_snapshot(file, previous.get(file.name), scoring, common, result)
        result.rows.append(row)
        write_table(result, out_dir)
        for text in dict.fromkeys(text for entry in row.metrics.values() for text in entry.get("notes", [])):
            if text not in said:  # each note once, not once per snapshot
                said.add(text)
                note(f"note: {text}")
        shown = ", ".join(f"{label} {value:.4g}" for name in metrics
                          for label, value in curve_values(name, row.metrics.get(name, {})).items())
        note(f"{file.name}: {row.kimg:g} kimg at {row.resolution}x{row.resolution}: {shown}")
    result.files = [str(out_dir / "evaluation.json"), str(out_dir / "evaluation.md")]
    if plots:
        result.files += [str(path) for path in plot_curves(result, out_dir)]
    return result


def _score_snapshot(file: Path, previous: SnapshotRow | None, scoring: SnapshotScoring, common: dict,
                    result: RunEvaluation) -> SnapshotRow:
    """One row: the previous row's metrics where the file and settings are unchanged, the others computed."""
    metrics = scoring.metrics
    stat = file.stat()
    same = previous is not None and (previous.size, previous.mtime_ns, previous.settings) == (
        stat.st_size, stat.st_mtime_ns, common)
    kept = {name: previous.metrics[name] for name in metrics if same and name in previous.metrics}
    missing = [name for name in metrics if name not in kept]
    result.reused += len(kept)
    if not missing:
        return previous
    started = time.perf_counter()
    state = load_checkpoint(file)
    G = generator_from_checkpoint(state, scoring.device)
    progress = state.get("progress") or {}
    scores = scoring.score(G, missing)
    result.computed += len(missing)
    del state
    return SnapshotRow(file.name, stat.st_size, stat.st_mtime_ns, float(state_kimg(progress, file)),
                       int(progress.get("tick", 0)), G.resolution, round(float(G.lod), 6), common,
                       {name: (kept.get(name) or scores[name]) for name in metrics},
                       round(time.perf_counter() - started, 3))


def state_kimg(progress: dict, file: Path) -> float:
    """Images shown (thousands) at a snapshot: its progress counters, else the kimg in its file name."""
    if isinstance(progress.get("cur_nimg"), int):
        return progress["cur_nimg"] / 1000
    match = SNAPSHOT_NAME.match(file.name)
    if match is None:
        raise SourceError(f"{file}: not a network snapshot")
    return float(match.group(1))


def write_table(result: RunEvaluation, out_dir: Path) -> None:
    """evaluation.json (RunEvaluation.to_dict) and evaluation.md (one row per snapshot, one column per number
    of `curve_values`), each atomically."""
    with atomic_output(out_dir / "evaluation.json") as temporary:
        temporary.write_text(json.dumps(result.to_dict(), indent=1) + "\n")
    with atomic_output(out_dir / "evaluation.md") as temporary:
        temporary.write_text(markdown_table(result))


def markdown_table(result: RunEvaluation) -> str:
    """The rows as a Markdown table: snapshot, kimg, resolution, then every metric number (4 significant
    digits; blank where a row lacks it)."""
    values = [{label: value for name in result.metrics
               for label, value in curve_values(name, row.metrics.get(name, {})).items()} for row in result.rows]
    labels = list(dict.fromkeys(label for row in values for label in row))
    lines = [f"Run `{result.run}` against `{result.real}`.", "",
             "| snapshot | kimg | resolution | " + " | ".join(labels) + " |",
             "|---|---:|---:|" + "---:|" * len(labels)]
    for row, numbers in zip(result.rows, values):
        cells = [f"{numbers[label]:.4g}" if label in numbers else "" for label in labels]
        lines.append(f"| {row.snapshot} | {row.kimg:g} | {row.resolution} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


PLOT_EXTRA = "pip install 'progan-toolkit[plot]'"


def check_plotting() -> None:
    """UserError (before any work) when matplotlib, which draws the curves, is not installed."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        raise UserError(f"the curves need matplotlib: {PLOT_EXTRA} (or pass --no-plots for the table only)") from None


def plot_curves(result: RunEvaluation, out_dir: Path) -> list[Path]:
    """One PNG per metric, OUT/<metric>.png: each of its numbers (SWD: one line per level and the average)
    against kimg, written atomically. Returns the paths."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    for name in result.metrics:
        series: dict[str, list[tuple[float, float]]] = {}
        for row in result.rows:
            for label, value in curve_values(name, row.metrics.get(name, {})).items():
                if math.isfinite(value):
                    series.setdefault(label, []).append((row.kimg, value))
        if not series:
            continue
        figure, axes = plt.subplots(figsize=(6.4, 4.0), dpi=100)
        for label, points in series.items():
            kimg, values = zip(*points)
            average = label == f"{name} avg"   # SWD's mean of the levels: black and dashed over them
            axes.plot(kimg, values, marker="o", markersize=3, label=label, linewidth=1.6,
                      **({"color": "black", "linestyle": "--"} if average else {}))
        axes.set_xlabel("kimg (thousands of real images shown)")
        axes.set_ylabel(_axis_label(name))
        axes.set_title(f"{name} of {Path(result.run).name}")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=8)
        figure.tight_layout()
        path = out_dir / f"{name}.png"
        with atomic_output(path) as temporary:
            figure.savefig(temporary, format="png")
        plt.close(figure)
        paths.append(path)
    return paths


def _axis_label(name: str) -> str:
    return {"swd": "SWD ×10³ per level (lower is better)", "fid": "FID (lower is better)",
            "kid": "KID (lower is better)", "is": "Inception score (higher is better)",
            "pr": "precision / recall (higher is better)",
            "msssim": "MS-SSIM (lower: more diverse)"}.get(name, name)
