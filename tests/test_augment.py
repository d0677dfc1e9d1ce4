"""Batched augmentation: shapes and labels kept, seeded per member, each kind does what it says."""

import pytest
import torch

import rankbias as rb
from rankbias.data.augment import augment, rotate


def cfg(**kw):
    return rb.RunConfig.from_dict({"augment": kw}).augment


def images(members=2, batch=6, channels=3, side=8):
    return torch.randn(members, batch, channels, side, side)


def gens(*seeds):
    return [torch.Generator().manual_seed(s) for s in seeds]


@pytest.mark.parametrize(
    "kind",
    [
        {"crop": 2},
        {"flip": True},
        {"rotate": 15.0},
        {"rotate": 15.0, "rotate_mode": "steps"},
        {"crop": 4, "flip": True, "rotate": 15.0},
    ],
)
def test_each_kind_keeps_shapes_is_seeded_and_changes_the_images(kind):
    x = images()
    out = augment(x, gens(1, 2), cfg(**kind))
    assert out.shape == x.shape and out.dtype == x.dtype
    assert not torch.equal(out, x)
    torch.testing.assert_close(augment(x, gens(1, 2), cfg(**kind)), out)  # same generators, same images
    # member 0 does not depend on member 1's generator: a member equals its solo run
    torch.testing.assert_close(augment(x[:1], gens(1), cfg(**kind))[0], out[0])
    assert not torch.equal(augment(x, gens(1, 3), cfg(**kind))[1], out[1])


def test_crop_is_a_window_of_the_zero_padded_image():
    x = images(1, 50, 1, 6)
    out = augment(x, gens(0), cfg(crop=2))[0]
    padded = torch.nn.functional.pad(x[0], (2, 2, 2, 2))
    for image, source in zip(out, padded):
        windows = [source[:, dy : dy + 6, dx : dx + 6] for dy in range(5) for dx in range(5)]
        assert any(torch.equal(image, w) for w in windows)
    assert len({tuple(o.flatten()[:3].tolist()) for o in out}) > 5  # many different offsets


def test_flip_mirrors_about_half_of_the_images():
    x = images(1, 200, 1, 4)
    out = augment(x, gens(0), cfg(flip=True))[0]
    flipped = torch.tensor([torch.equal(o, s.flip(-1)) for o, s in zip(out, x[0])])
    kept = torch.tensor([torch.equal(o, s) for o, s in zip(out, x[0])])
    assert (flipped | kept).all() and 70 < int(flipped.sum()) < 130


def test_rotation_by_90_degrees_is_exact_and_steps_are_multiples():
    x = torch.arange(16.0).view(1, 1, 4, 4)
    torch.testing.assert_close(rotate(x, torch.tensor([90.0])), torch.rot90(x, 1, (-2, -1)))  # counter-clockwise
    torch.testing.assert_close(rotate(x, torch.tensor([0.0])), x)
    from rankbias.data.augment import _draw

    angles = _draw(torch.Generator().manual_seed(0), 500, cfg(rotate=15.0, rotate_mode="steps"))["angles"]
    assert set(angles.tolist()) <= {15.0 * k for k in range(1, 25)} and len(set(angles.tolist())) > 12
    uniform = _draw(torch.Generator().manual_seed(0), 500, cfg(rotate=15.0))["angles"]
    assert uniform.abs().max() <= 15 and uniform.min() < -10 and uniform.max() > 10
