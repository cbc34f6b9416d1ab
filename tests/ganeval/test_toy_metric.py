"""One registered spec is one metric: a toy metric registered from outside the package, with its own settings
dataclass (defaults and help text), count, table column and CLI options, shows in `ganeval all --help`, in the
table and in the JSON, and its count is checked before work like any other, with no edit to ganeval."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass

import click
import numpy as np
import pytest
from click.testing import CliRunner

from gancore.sources import select_indices
from ganeval import registry
from ganeval.cli import main
from ganeval.metric_utils import Needs, stream_seed
from ganeval.registry import MetricSettings, MetricSpec, register_metric, setting
from toolkit_testing.images import EXAMPLES, load_folder


@dataclass(frozen=True)
class BrightnessSettings:
    images: int = setting(8, "Brightness: generated images read.", click.IntRange(1))
    scale: float = setting(1.0, "Brightness: factor on the mean pixel value.", float)


@dataclass
class BrightnessResult:
    value: float
    num_images: int
    scale: float

    def to_dict(self) -> dict:
        return {"metric": "brightness", "value": self.value, "num_images": self.num_images, "scale": self.scale}


class BrightnessMetric:
    """scale × the mean pixel value (in [0, 1]) of the first `count` generated images."""

    name = "brightness"

    def __init__(self, count: int, scale: float):
        self.needs = Needs({"gen": count}, pixels=True)
        self.count, self.scale, self.total, self.seen = count, scale, 0.0, 0

    def add(self, batch) -> None:
        if batch.set_name == "gen" and (part := batch.head(self.count)) is not None:
            self.total += float(part.pixels.double().mean(dim=(1, 2, 3)).sum())
            self.seen += part.pixels.shape[0]

    def combine_ranks(self) -> None:
        pass

    def result(self) -> BrightnessResult:
        return BrightnessResult(self.scale * self.total / self.seen / 255, self.seen, self.scale)


@pytest.fixture
def brightness(monkeypatch):
    monkeypatch.setattr(registry, "_registry", dict(registry._registry))  # gone after the test
    return register_metric(MetricSpec(
        "brightness", "mean pixel value of the generated images", ("gen",), False,
        lambda settings, context: BrightnessMetric(settings.images, settings.scale), BrightnessSettings, "images",
        title="brightness"))


def run(*args):
    return CliRunner().invoke(main, ["all", str(EXAMPLES / "gen"), str(EXAMPLES / "real"), *map(str, args),
                                     "--quiet", "--device", "cpu"])


def test_a_toy_metric_registered_from_outside(brightness):
    shown = CliRunner().invoke(main, ["all", "--help"])
    assert "--brightness-scale" in shown.output and "Brightness: factor on the mean pixel value." in shown.output
    result = run("--metrics", "swd,brightness", "--swd-images", 8, "--brightness-images", 6,
                 "--brightness-scale", 2, "--json")
    assert result.exit_code == 0, result.output
    payload = json.loads(result.stdout)
    order = select_indices(64, 6, stream_seed(1000, "gen"))[:6]
    expected = 2 * load_folder(EXAMPLES / "gen")[order].astype(np.float64).mean() / 255
    assert payload["metrics"]["brightness"] == {"value": pytest.approx(expected, rel=1e-12), "scale": 2.0}
    assert payload["num_images"] == {"swd": 8, "brightness": 6}
    table = run("--metrics", "swd,brightness", "--swd-images", 8, "--brightness-images", 6)
    assert table.exit_code == 0 and table.stdout.splitlines()[0].rstrip().endswith("brightness")
    too_many = run("--metrics", "brightness", "--brightness-images", 100)
    assert too_many.exit_code == 2 and "brightness needs 100 (lower --brightness-images)" in too_many.stderr


def test_its_settings_by_key_and_in_the_record(brightness):
    settings = MetricSettings.from_values(seed=3, brightness_scale=0.5)
    assert settings.of("brightness") == BrightnessSettings(8, 0.5)
    assert settings.values()["brightness_scale"] == 0.5 and settings.values()["kid_subsets"] == 100


@pytest.mark.parametrize("change, reason", [
    ({"count": "pictures"}, "count 'pictures' is not a field of BrightnessSettings"),
    ({"count_default_from": "nothing"}, "count_default_from 'nothing' names no registered metric with a count"),
    ({"settings": dataclass(frozen=True)(type("Unset", (), {"__annotations__": {"images": "int | None"},
                                                          "images": None}))},
     "its count defaults to None; give a paper_count"),
])
def test_a_spec_whose_count_cannot_be_known_is_refused_at_registration(brightness, change, reason):
    with pytest.raises(ValueError, match=reason):
        register_metric(dataclasses.replace(brightness, name="broken", **change))
    assert "broken" not in registry.list_metrics()
