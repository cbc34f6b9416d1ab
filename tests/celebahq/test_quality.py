"""The frequency-based quality score on real photographs: blur, defects, invariances; files and the CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from celebahq.cli import main
from celebahq.quality import quality_components, quality_score, score_paths
from gancore.errors import UserError
from toolkit_testing.quality_cases import (
    BLUR_SIGMAS,
    DEFECTS,
    NEUTRAL,
    SKIMAGE_PHOTOS,
    gaussian_blur,
    sample_photographs,
)
from toolkit_testing.quality_reference import reference_quality


@pytest.fixture(scope="module")
def photos() -> dict[str, np.ndarray]:
    return sample_photographs()


def scores(*images: np.ndarray) -> np.ndarray:
    """uint8 HW3 images of one size -> their quality scores."""
    return quality_score(torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)).numpy()


def test_the_photographs_are_large_real_photos(photos):
    assert len(photos) == 9
    assert all(min(image.shape[:2]) >= 512 and image.dtype == np.uint8 for image in photos.values())


def test_agrees_with_the_numpy_reference(photos):
    for name in ("astronaut", "retina"):
        for image in (photos[name], gaussian_blur(photos[name], 2)):
            assert scores(image)[0] == pytest.approx(reference_quality(image), rel=1e-5)


@pytest.mark.parametrize("name", [*SKIMAGE_PHOTOS, "grace_hopper"])
def test_score_falls_strictly_as_blur_grows(photos, name):
    blurred = scores(*(gaussian_blur(photos[name], sigma) for sigma in BLUR_SIGMAS))
    assert np.all(np.diff(blurred) < 0), dict(zip(BLUR_SIGMAS, blurred.round(4)))


def test_halftone_stripes_and_jpeg_blocking_lower_it(photos):
    for name, image in photos.items():
        clean, *defective = scores(image, *(apply(image) for apply in DEFECTS.values()))
        for defect, value in zip(DEFECTS, defective):
            assert value < 0.995 * clean, (name, defect, value / clean)


def test_rotation_mirroring_and_brightness_move_it_less_than_2_percent(photos):
    for name, image in photos.items():
        clean, *changed = scores(image, *(apply(image) for apply in NEUTRAL.values()))
        for change, value in zip(NEUTRAL, changed):
            assert abs(value / clean - 1) < 0.02, (name, change, value / clean)


def test_shapes_ranges_and_edge_cases(photos):
    image = photos["astronaut"]
    batch = torch.from_numpy(np.stack([image, image[::-1]])).permute(0, 3, 1, 2)
    breadth, symmetry = quality_components(batch)
    assert breadth.shape == symmetry.shape == (2,) and breadth.dtype == torch.float64
    assert torch.all((breadth > 0) & (breadth < 1) & (symmetry > 0) & (symmetry <= 1))
    # uint8 and float input agree; one image alone scores as it does in a batch
    np.testing.assert_allclose(quality_score(batch.float()).numpy(), quality_score(batch).numpy(), rtol=1e-6)
    np.testing.assert_allclose(scores(image), quality_score(batch[:1]).numpy(), rtol=1e-9)
    # a flat image has no detail; a non-square crop works; too small is refused
    assert scores(np.full((64, 64, 3), 128, np.uint8))[0] == 0
    assert 0 < scores(image[:300, :512])[0] < 1
    with pytest.raises(ValueError, match="at least 64"):
        scores(image[:32, :32])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU")
def test_gpu_agrees_with_cpu(photos):
    batch = torch.from_numpy(np.stack(list(photos.values())[:4])).permute(0, 3, 1, 2)
    np.testing.assert_allclose(quality_score(batch.cuda()).cpu().numpy(), quality_score(batch).numpy(), rtol=1e-4)


def write_folder(folder, photos) -> None:
    folder.mkdir()
    Image.fromarray(photos["astronaut"]).save(folder / "sharp.png")
    Image.fromarray(gaussian_blur(photos["astronaut"], 2)).save(folder / "blurred.jpg", quality=95)
    Image.fromarray(photos["camera"][:100, :80]).save(folder / "other_size.png")
    Image.fromarray(photos["camera"][:40, :40]).save(folder / "tiny.png")
    (folder / "broken.png").write_bytes(b"not a png")


def test_files_and_folders_with_bad_images(tmp_path, photos):
    write_folder(tmp_path / "images", photos)
    report = score_paths([tmp_path / "images"], num_workers=0, progress=False)
    ranked = [name.rsplit("/", 1)[1] for name, _ in report.ranked()]
    assert sorted(ranked) == ["blurred.jpg", "other_size.png", "sharp.png"]
    assert ranked.index("sharp.png") < ranked.index("blurred.jpg")
    assert {name.rsplit("/", 1)[1] for name in report.skipped} == {"broken.png", "tiny.png"}
    assert "cannot decode" in report.skipped[str(tmp_path / "images" / "broken.png")]
    single = score_paths([tmp_path / "images" / "sharp.png"], progress=False)
    assert single.scores == {str(tmp_path / "images" / "sharp.png"): pytest.approx(scores(photos["astronaut"])[0])}
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty source"):
        score_paths([tmp_path / "empty"], progress=False)
    with pytest.raises(UserError, match="no image could be scored"):
        score_paths([tmp_path / "images" / "broken.png"], progress=False)


def test_cli_quality(tmp_path, photos):
    write_folder(tmp_path / "images", photos)
    runner = CliRunner()
    result = runner.invoke(main, ["quality", str(tmp_path / "images" / "sharp.png"), str(tmp_path / "images"),
                                  "--json", "--quiet", "--workers", "0"])
    assert result.exit_code == 0, result.output
    listed = json.loads(result.stdout)
    assert [sorted(entry) for entry in listed] == [["file", "quality"]] * 3  # a file given twice is scored once
    assert [entry["quality"] for entry in listed] == sorted((entry["quality"] for entry in listed), reverse=True)
    assert listed[-1]["file"].endswith("blurred.jpg")
    assert "skipped" in result.stderr and "broken.png" in result.stderr
    text = runner.invoke(main, ["quality", str(tmp_path / "images"), "--quiet"])
    assert text.exit_code == 0 and text.stdout.splitlines()[-1].endswith("blurred.jpg")
    missing = runner.invoke(main, ["quality", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such file" in missing.stderr
