"""What a build reports (report.json): per pass, per stage."""

from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass, field


@dataclass
class StageSeconds:
    prepare: float = 0.0  # in the workers (thread time summed over them)
    render: float = 0.0  # main process, wall: everything from a prepared batch to its host pixels and scores
    write: float = 0.0  # in the writers (summed over them)
    # Parts of `render`, as the device spent them (gancore.runtime.DeviceTimer: CUDA events, or the wall clock):
    cleanup: float = 0.0  # the cleanup net on the device (torch backend)
    draw: float = 0.0  # the render proper: shrink/crop, super-resolution, padding, 4R sampling, downscale
    sr: float = 0.0  # of which the super-resolution stage
    score: float = 0.0  # the quality score
    host: float = 0.0  # queueing the copy to the host (the md5s follow in `render`, beside the next batch)


@dataclass
class PassReport:
    """One pass over sources: how many it rendered and how fast."""

    name: str  # "score" or "write"
    sources: int = 0  # sources this pass had to do
    rendered: int = 0
    skipped: int = 0
    written: int = 0
    wall_seconds: float = 0.0
    stage_seconds: StageSeconds = field(default_factory=StageSeconds)

    @property
    def sources_per_second(self) -> float:
        return self.sources / self.wall_seconds if self.wall_seconds > 0 else 0.0


@dataclass
class BuildReport:
    sources: int
    processed: int  # sources rendered or skipped in this run (over all passes)
    already_done: int  # sources whose work an earlier run had finished
    ok: int  # images written in this run
    skipped: dict[str, str] = field(default_factory=dict)
    passes: list[PassReport] = field(default_factory=list)
    images_per_second: float = 0.0  # processed / wall time
    md5_mismatches: list[str] = field(default_factory=list)  # write pass != score pass (should never happen)
    options: dict = field(default_factory=dict)
    ranking: dict = field(default_factory=dict)  # celebahq.rank.RankReport of the selection, or {"deferred": …}
    manifest: str = ""  # what was read from the existing manifests (damaged lines included)

    @property
    def seconds(self) -> dict[str, float]:
        """Seconds per stage, summed over the passes."""
        total = StageSeconds()
        for report in self.passes:
            for name in (f.name for f in dataclasses.fields(StageSeconds)):
                setattr(total, name, getattr(total, name) + getattr(report.stage_seconds, name))
        return {name: round(value, 3) for name, value in asdict(total).items()}

    def to_dict(self) -> dict:
        data = asdict(self)
        data["seconds"] = self.seconds
        for report, saved in zip(self.passes, data["passes"]):
            saved["sources_per_second"] = round(report.sources_per_second, 3)
        return data

