"""The CelebA-HQ crop plan: a hand-worked example of the recipe, invariants under similarity transforms, the shrink /
super-resolution / padding branches, and the degenerate inputs that must raise."""

from __future__ import annotations

import math

import numpy as np
import pytest

from celebahq.geometry import CropPlan, oriented_square, plan_crop, source_to_output

# A frontal synthetic face (pixel offsets): left eye, right eye, nose, left and right mouth corners.
BASE_FACE = np.array([(-20.0, 0.0), (20.0, 0.0), (0.0, 22.0), (-15.0, 45.0), (15.0, 45.0)])


def similarity(points: np.ndarray, angle_deg: float, scale: float, shift) -> np.ndarray:
    theta = math.radians(angle_deg)
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    return points @ rot.T * scale + np.asarray(shift, dtype=np.float64)


# --------------------------------------------------------------------------------------------------------------
# The recipe, worked by hand


def test_hand_worked_example_r1024():
    lm = np.array([(100, 100), (140, 100), (120, 125), (105, 150), (135, 150)], dtype=np.float64)
    plan = plan_crop(lm, (400, 400), 1024)
    # eye_avg (120.5, 100.5), mouth_avg (120.5, 150.5), e2e (40, 0), e2m (0, 50); x = (40, 0) - (-50, 0) = (90, 0),
    # s = max(80, 90) = 90, y = (0, 90), c = (120.5, 105.5).
    expected_source = np.array([(30.5, 15.5), (30.5, 195.5), (210.5, 195.5), (210.5, 15.5)])
    np.testing.assert_allclose(plan.source_quad, expected_source, atol=1e-9)
    assert plan.zoom == pytest.approx(1024 / 180)
    assert plan.shrink == 1 and plan.shrunk_size == (400, 400)
    assert plan.border == 18  # rint(102.4 / 5.689) = rint(18.0)
    assert plan.crop == (12, 0, 229, 214)  # (30 - 18, max(15 - 18, 0), 211 + 18, 196 + 18)
    assert plan.superres == 8  # 2^ceil(log2 5.69)
    np.testing.assert_allclose(plan.quad, (expected_source - [12, 0]) * 8, atol=1e-9)
    assert plan.pad == (0, 0, 0, 0) and not plan.padded
    assert plan.blur_sigma == pytest.approx(1024 * 0.02 / (1024 / 180 / 8))
    assert plan.upscaled_size == (217 * 8, 214 * 8) == plan.padded_size
    assert plan.render_size == 4096 and plan.image_size == (400, 400)
    assert plan.to_dict()["crop"] == [12, 0, 229, 214]


def test_constants_scale_with_resolution():
    """zoom = R/(2s): the border, crop and shrink in source pixels do not depend on R (as the FFHQ aligner)."""
    lm = similarity(BASE_FACE, 12, 3.0, (300, 260))
    plans = {r: plan_crop(lm, (640, 560), r) for r in (128, 256, 512, 1024)}
    for r, plan in plans.items():
        assert plan.zoom == pytest.approx(r / (2 * oriented_square(lm)[1]))
        assert plan.border == plans[1024].border
        assert plan.crop == plans[1024].crop
        assert plan.shrink == 1
        assert plan.superres == max(2 ** math.ceil(math.log2(plan.zoom)), 1)
        # after the super-resolution step, zoom' = zoom / superres lies in (0.5, 1]
        if plan.superres > 1:
            assert 0.5 < plan.zoom / plan.superres <= 1.0
    assert [plans[r].superres for r in (128, 256, 512, 1024)] == [1, 1, 2, 4]


def test_half_side_uses_mouth_when_longer():
    lm = np.array([(100, 100), (110, 100), (105, 120), (100, 160), (110, 160)], dtype=np.float64)
    _, s = oriented_square(lm)
    assert s == pytest.approx(1.8 * 60)  # 1.8·|e2m| = 108 > 2·|e2e| = 20


# --------------------------------------------------------------------------------------------------------------
# Invariants: rotated / scaled / shifted faces land at the same place, eyes horizontal


@pytest.mark.parametrize("resolution", [128, 1024])
def test_eye_midpoint_and_eye_line_invariant(resolution):
    """Each variant's eye midpoint is within 1 px of the common target. The residual is the original's +0.5 in the
    PIL call: half a final-image pixel along the source axes, so it turns with the face (≤ 0.71 output px)."""
    s = max(2 * 40.0, 1.8 * 45.0)  # half-side of the base face
    expected = np.array([resolution / 2 - 0.5, resolution / 2 - 0.5 - 0.1 * 45.0 * resolution / (2 * s)])
    seen = []
    for angle in (-40.0, -7.0, 0.0, 25.0, 90.0, 180.0):
        for scale in (0.2, 1.0, 3.7, 12.0):
            for shift in ((0.3, 0.7), (57.0, 11.0)):
                lm = similarity(BASE_FACE, angle, scale, (0, 0))
                lm = lm - lm.min(axis=0) + 200 * scale + np.asarray(shift)
                size = (int(lm[:, 0].max() + 200 * scale + 50), int(lm[:, 1].max() + 200 * scale + 50))
                plan = plan_crop(lm, size, resolution)
                out = source_to_output(plan, lm)
                eyes = out[:2]
                mid = eyes.mean(axis=0)
                assert np.hypot(*(mid - expected)) <= 0.75
                assert abs(eyes[1, 1] - eyes[0, 1]) < 0.05, "the eye line must be horizontal"
                assert eyes[1, 0] > eyes[0, 0], "left eye on the left"
                assert out[3:, 1].mean() > mid[1], "mouth below the eyes"
                seen.append(mid)
    seen = np.array(seen)
    assert np.ptp(seen, axis=0).max() < 1.5


@pytest.mark.parametrize("angle", [0.0, 33.0])
def test_source_to_output_maps_quad_corners_to_output_corners(angle):
    lm = similarity(BASE_FACE, angle, 2.0, (400, 380))
    plan = plan_crop(lm, (800, 800), 256)
    # quad corners are continuous coordinates: pixel index = corner - 0.5
    corners = source_to_output(plan, plan.source_quad - 0.5)
    expected = np.array([(0, 0), (0, 256), (256, 256), (256, 0)], dtype=np.float64) - 0.5
    # the +0.5 the original passes to PIL shifts everything by (-0.5, -0.5) final-image pixels, zoom' output px each
    shift = 0.5 * plan.zoom / plan.superres
    if angle == 0.0:
        np.testing.assert_allclose(corners, expected - shift, atol=1e-6)
    np.testing.assert_allclose(np.hypot(*(corners - expected).T), shift * math.sqrt(2), atol=1e-6)


# --------------------------------------------------------------------------------------------------------------
# Branches: shrink, super-resolution, padding


def test_large_face_shrinks():
    lm = similarity(BASE_FACE, 5, 14.0, (1500, 1300))  # s = 81·14 = 1134 → zoom = 256/2268 = 0.113
    plan = plan_crop(lm, (3001, 2999), 256)
    zoom = 256 / (2 * 81 * 14)
    assert plan.shrink == math.floor(0.5 / zoom) == 4
    assert plan.shrunk_size == (round(3001 / 4), round(2999 / 4)) == (750, 750)
    np.testing.assert_allclose(plan.quad, plan.source_quad / 4 - plan.crop[:2], atol=1e-9)
    assert plan.superres == 1
    assert plan.border == max(round(256 * 0.1 / (zoom * 4)), 3)


def test_shrink_of_two_or_less_is_skipped():
    lm = similarity(BASE_FACE, 0, 5.0, (700, 700))  # zoom = 256/810 = 0.316 → floor(0.5/zoom) = 1
    plan = plan_crop(lm, (1400, 1400), 256)
    assert plan.shrink == 1 and plan.shrunk_size == (1400, 1400)


def test_small_face_superres():
    lm = similarity(BASE_FACE, -10, 0.25, (60, 50))  # s = 20.25 → zoom = 256/40.5 = 6.3
    plan = plan_crop(lm, (130, 120), 256)
    assert plan.shrink == 1
    assert plan.superres == 2 ** math.ceil(math.log2(256 / 40.5)) == 8
    left, top = plan.crop[:2]
    np.testing.assert_allclose(plan.quad, (plan.source_quad - [left, top]) * 8 + plan.pad[:2], atol=1e-9)
    assert plan.border == max(round(256 * 0.1 / plan.zoom), 3)  # computed before the upscale, not rescaled


def test_padding_branch_for_face_at_border():
    lm = similarity(BASE_FACE, 0, 1.0, (30, 60))  # the square (half-side 81) leaves the image on the left and top
    plan = plan_crop(lm, (300, 300), 128)
    assert plan.padded
    zoom_after = plan.zoom / plan.superres
    minimum = round(128 * 0.3 / zoom_after)
    assert min(plan.pad) >= minimum and plan.pad[0] > minimum
    assert plan.blur_sigma == pytest.approx(128 * 0.02 / zoom_after)
    assert plan.padded_size == (plan.upscaled_size[0] + plan.pad[0] + plan.pad[2],
                                plan.upscaled_size[1] + plan.pad[1] + plan.pad[3])
    # the final quad lies inside the padded image
    assert plan.quad.min() >= 0 and plan.quad[:, 0].max() <= plan.padded_size[0]
    assert plan.quad[:, 1].max() <= plan.padded_size[1]


def test_no_padding_for_centred_face():
    lm = similarity(BASE_FACE, 20, 1.0, (250, 250))
    plan = plan_crop(lm, (500, 500), 128)
    assert not plan.padded and plan.pad == (0, 0, 0, 0)


def test_padding_threshold_is_border_minus_four():
    """Padding only when the square comes closer than 4 px to the image edge (max(pad) > border - 4)."""
    base = similarity(BASE_FACE, 0, 1.0, (0, 0))  # zoom = 128/162 < 1: no shrink, no superres; border = 16
    quad, _ = oriented_square(base)
    for gap, padded in ((4.5, False), (3.5, True)):
        lm = base - quad[:, 0].min() + [gap, 300]
        plan = plan_crop(lm, (400, 600), 128)
        assert plan.superres == 1 and plan.border == 16
        assert plan.padded is padded, gap


# --------------------------------------------------------------------------------------------------------------
# Bad input


@pytest.mark.parametrize("landmarks, message", [
    (np.array([(50, 50), (50, 50), (50, 60), (45, 70), (55, 70)]), "eyes coincide"),
    (np.zeros((5, 2)), "eyes coincide"),
    (np.array([(40, 50), (np.nan, 50), (50, 60), (45, 70), (55, 70)]), "non-finite"),
    (np.array([(40, 50), (60, 50), (np.inf, 60), (45, 70), (55, 70)]), "non-finite"),
    (np.zeros((4, 2)), "shape"),
    (np.array([(40, 50), (60, 50), (50, 60), (50, 30), (50, 30)]) * 1.0, "orientation"),
])
def test_degenerate_landmarks_raise(landmarks, message):
    with pytest.raises(ValueError, match=message):
        plan_crop(landmarks, (100, 100), 128)


@pytest.mark.parametrize("shift", [(-500, 50), (50, 900), (2000, 2000)])
def test_landmarks_far_outside_raise(shift):
    lm = similarity(BASE_FACE, 0, 1.0, shift)
    with pytest.raises(ValueError, match="outside the image"):
        plan_crop(lm, (400, 300), 128)


def test_landmarks_slightly_outside_are_accepted():
    lm = similarity(BASE_FACE, 0, 1.0, (10, 100))  # the left eye is 10 px left of the image
    plan = plan_crop(lm, (400, 300), 128)
    assert isinstance(plan, CropPlan) and plan.padded


@pytest.mark.parametrize("size", [(0, 100), (100, -3), "abc"])
def test_bad_image_size_raises(size):
    with pytest.raises(ValueError, match="image_size"):
        plan_crop(similarity(BASE_FACE, 0, 1.0, (50, 50)), size, 128)
