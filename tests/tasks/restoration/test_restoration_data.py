"""Restoration data: bicubic LR/HR alignment, patch sampling, noise, embedded and folder sets."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from PIL import Image

import tasks  # noqa: F401  (registers the datasets)
from harness.errors import ConfigError, DataNotFoundError
from harness.registry import DATASETS
from tasks.denoise.data import add_noise, fixed_noisy
from tasks.restoration import (
    BUNDLED_IMAGES,
    ImageBatches,
    PatchBatches,
    bicubic_downscale,
    bundled_image,
    crop_to_multiple,
    dihedral,
)
from tasks.sr.data import make_pair

CONF = Path(__file__).resolve().parents[3] / "conf"
SHARED = Path(
    os.environ.get("PRUNEBENCH_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared/data")
)
needs_shared = pytest.mark.skipif(not (SHARED / "Set5").is_dir(), reason="no shared data")


def _smooth_rgb(h: int, w: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(1, 3, h // 8 + 1, w // 8 + 1, generator=g)
    x = torch.nn.functional.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)[0]


def _data_cfg(name: str, **over) -> OmegaConf:
    cfg = OmegaConf.load(CONF / "data" / f"{name}.yaml")
    return OmegaConf.merge(cfg, over)


# -- degradation ---------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_lr_hr_sizes_align_after_cropping_to_a_multiple(scale: int) -> None:
    hr = _smooth_rgb(50, 37)
    lr, hr_c = make_pair(hr, scale)
    assert lr.dtype == torch.uint8 and hr_c.dtype == torch.uint8
    assert hr_c.shape[-2:] == (50 - 50 % scale, 37 - 37 % scale)
    assert lr.shape[-2:] == (hr_c.shape[-2] // scale, hr_c.shape[-1] // scale)
    torch.testing.assert_close(hr_c, hr[:, : hr_c.shape[-2], : hr_c.shape[-1]])  # top-left crop


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_keeps_a_constant_image_constant(scale: int) -> None:
    hr = torch.full((3, 12 * scale, 8 * scale), 137, dtype=torch.uint8)
    assert torch.equal(bicubic_downscale(hr, scale), torch.full((3, 12, 8), 137, dtype=torch.uint8))


def test_bicubic_is_close_to_pillow() -> None:
    hr = _smooth_rgb(96, 96)
    lr = bicubic_downscale(hr, 4).float()
    ref = Image.fromarray(hr.permute(1, 2, 0).numpy()).resize((24, 24), Image.BICUBIC)
    ref = torch.from_numpy(np.array(ref)).permute(2, 0, 1).float()
    assert (lr - ref).abs().mean() < 0.5


def test_bicubic_refuses_an_uncropped_image() -> None:
    with pytest.raises(ValueError, match="multiple of scale"):
        bicubic_downscale(torch.zeros(3, 10, 9, dtype=torch.uint8), 2)
    assert crop_to_multiple(torch.zeros(3, 10, 9), 4).shape == (3, 8, 8)


# -- patch sampling ------------------------------------------------------------------------------


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize("augment", [False, True])
def test_patches_keep_lr_and_hr_aligned(scale: int, augment: bool) -> None:
    images = [_smooth_rgb(96, 120, seed=1), _smooth_rgb(72, 66, seed=2)]
    pairs = [make_pair(im, scale) for im in images]
    p = 12
    batches = PatchBatches(
        [lr for lr, _ in pairs],
        [hr for _, hr in pairs],
        scale=scale,
        patch_size=p,
        batch_size=8,
        num_batches=3,
        augment=augment,
        seed=0,
    )
    assert len(batches) == 3 and batches.num_samples == 24
    for lr, hr in batches:
        assert lr.shape == (8, 3, p, p) and hr.shape == (8, 3, p * scale, p * scale)
        assert lr.dtype == torch.float32 and 0 <= lr.min() and lr.max() <= 1
        # downscaling the HR patch gives the LR patch away from the patch border
        re = torch.stack([bicubic_downscale((h * 255).round().byte(), scale) for h in hr])
        inner = (slice(None), slice(None), slice(2, -2), slice(2, -2))
        diff = (re.float() - lr * 255)[inner].abs()
        # MATLAB rounds to uint8 after the row pass, so a transposed patch (rows and columns
        # swapped) may land 2 grey levels away; a misaligned patch would be far off
        assert diff.max() <= (2.0 if augment else 0.0)


def test_patch_stream_is_seeded() -> None:
    images = [_smooth_rgb(40, 40, seed=k) for k in range(3)]

    def first(seed: int) -> torch.Tensor:
        b = PatchBatches(images, patch_size=8, batch_size=4, num_batches=1, seed=seed)
        return next(iter(b))[0]

    assert torch.equal(first(0), first(0))
    assert not torch.equal(first(0), first(1))


def test_forked_streams_share_images_and_are_independent() -> None:
    images = [_smooth_rgb(40, 40, seed=k) for k in range(3)]
    base = PatchBatches(images, patch_size=8, batch_size=4, num_batches=2, seed=0)
    a, b = base.fork(5), base.fork(5)
    assert a.source.buffer is base.source.buffer and len(a) == len(base)
    first = next(iter(a))[0]
    next(iter(base))  # reading another stream does not move this one
    assert torch.equal(first, next(iter(b))[0])
    assert not torch.equal(first, next(iter(base.fork(6)))[0])


def test_dihedral_gives_the_eight_transforms() -> None:
    x = torch.arange(9).view(1, 1, 3, 3).expand(8, 1, 3, 3)
    out = dihedral(x, torch.arange(8))
    assert len({tuple(o.flatten().tolist()) for o in out}) == 8
    assert torch.equal(out[0], x[0])


def test_images_too_small_for_a_patch_are_skipped_or_refused() -> None:
    big, small = _smooth_rgb(40, 40), _smooth_rgb(10, 10)
    b = PatchBatches([big, small], patch_size=16, batch_size=2, num_batches=1)
    assert b.num_images == 1
    with pytest.raises(ConfigError, match="patch_size"):
        PatchBatches([small], patch_size=16, batch_size=2, num_batches=1)


def test_image_batches_yield_one_float_image_at_a_time() -> None:
    items = [
        (torch.zeros(3, 4, 5, dtype=torch.uint8), torch.full((3, 8, 10), 255, dtype=torch.uint8))
    ]
    ib = ImageBatches(items * 2, ["a", "b"], ["Set5", "Set14"])
    assert len(ib) == 2 and ib.groups == ["Set5", "Set14"]
    lr, hr = next(iter(ib))
    assert lr.shape == (1, 3, 4, 5) and hr.dtype == torch.float32 and hr.max() == 1.0


# -- noise ---------------------------------------------------------------------------------------


def test_noise_is_seeded_and_not_clipped() -> None:
    clean = torch.cat([torch.zeros(1, 64, 32), torch.ones(1, 64, 32)], dim=-1)

    def noisy(seed: int) -> torch.Tensor:
        return add_noise(clean, 50.0, torch.Generator().manual_seed(seed))

    assert torch.equal(noisy(0), noisy(0))
    assert not torch.equal(noisy(0), noisy(1))
    n = noisy(0)
    assert n.min() < 0 and n.max() > 1  # not clipped
    assert (n - clean).std().item() == pytest.approx(50 / 255, rel=0.05)


def test_evaluation_noise_is_fixed_by_the_noise_seed() -> None:
    clean = [("a", torch.full((1, 16, 16), 128, dtype=torch.uint8), "set")]
    a, b, c = fixed_noisy(clean, 25, 0), fixed_noisy(clean, 25, 0), fixed_noisy(clean, 25, 1)
    assert torch.equal(a[0][0], b[0][0]) and not torch.equal(a[0][0], c[0][0])
    assert torch.equal(a[0][1], clean[0][1])


# -- embedded datasets ---------------------------------------------------------------------------


def test_every_listed_bundled_image_loads_without_download() -> None:
    for name, (_, is_gray) in BUNDLED_IMAGES.items():
        img = bundled_image(name, 1)
        assert img.dtype == torch.uint8 and img.shape[0] == 1 and min(img.shape[-2:]) >= 128
        if not is_gray:
            assert bundled_image(name, 3).shape[0] == 3
    with pytest.raises(ConfigError, match="gray"):
        bundled_image("camera", 3)
    with pytest.raises(ConfigError, match="known: "):
        bundled_image("lena", 3)


def test_sr_embedded_builds_offline_with_disjoint_splits() -> None:
    cfg = _data_cfg("sr_embedded", patches_per_epoch=32, batch_size=4, patch_size=16)
    splits = DATASETS.get("sr_embedded")(cfg, scale=3, seed=0)
    names = [set(cfg.train_images), set(cfg.val_images), set(cfg.test_images)]
    assert not (names[0] & names[1] or names[0] & names[2] or names[1] & names[2])
    assert len(splits.train) == 8
    lr, hr = next(iter(splits.train))
    assert lr.shape == (4, 3, 16, 16) and hr.shape == (4, 3, 48, 48)
    for split in (splits.val, splits.test):
        for lr, hr in split:
            assert hr.shape[-2:] == (lr.shape[-2] * 3, lr.shape[-1] * 3)
    assert len(splits.test) == len(cfg.test_images)
    assert max(lr.shape[-1] for lr, _ in splits.val) <= cfg.val_crop


def test_denoise_embedded_builds_offline_with_fixed_test_noise() -> None:
    cfg = _data_cfg("denoise_embedded", patches_per_epoch=8, batch_size=4, patch_size=32)
    a = DATASETS.get("denoise_embedded")(cfg, seed=0)
    b = DATASETS.get("denoise_embedded")(cfg, seed=1)
    noisy, clean = next(iter(a.train))
    assert noisy.shape == clean.shape == (4, 1, 32, 32)
    assert (noisy - clean).std().item() == pytest.approx(cfg.sigma / 255, rel=0.2)
    assert not torch.equal(next(iter(b.train))[1], clean)  # the run seed moves training patches
    for (na, ca), (nb, cb) in zip(a.test, b.test, strict=True):  # ... but not the test noise
        assert torch.equal(na, nb) and torch.equal(ca, cb)
    assert a.info["sigma"] == 50.0


# -- folder datasets -----------------------------------------------------------------------------


def test_missing_folders_raise_data_not_found_with_the_path(tmp_path: Path) -> None:
    cfg = _data_cfg("sr_folders", root=str(tmp_path), train="DIV2K")
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "DIV2K")) as err:
        DATASETS.get("sr_folders")(cfg, scale=4, seed=0)
    assert "DIV2K_train_HR" in str(err.value)
    cfg = _data_cfg("denoise_folders", root=str(tmp_path / "nowhere"))
    with pytest.raises(DataNotFoundError, match="nowhere"):
        DATASETS.get("denoise_folders")(cfg, seed=0)
    cfg = _data_cfg("denoise_folders", root=str(tmp_path))
    with pytest.raises(DataNotFoundError, match=str(tmp_path / "Train400")):
        DATASETS.get("denoise_folders")(cfg, seed=0)


def _save(img: torch.Tensor, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(img.permute(1, 2, 0).numpy()).save(path)


def test_div2k_and_benchmark_layouts_use_stored_lr(tmp_path: Path) -> None:
    for k in range(3):
        hr = _smooth_rgb(64, 48, seed=k)
        _save(hr, tmp_path / "DIV2K" / "DIV2K_train_HR" / f"{k:04d}.png")
        # a stored LR that is not the bicubic one, to see that it is used
        _save(
            torch.full((3, 32, 24), 7, dtype=torch.uint8),
            tmp_path / "DIV2K" / "DIV2K_train_LR_bicubic" / "X2" / f"{k:04d}x2.png",
        )
    _save(_smooth_rgb(40, 40), tmp_path / "Bench" / "HR" / "bird.png")
    _save(
        torch.full((3, 20, 20), 9, dtype=torch.uint8),
        tmp_path / "Bench" / "LR_bicubic" / "X2" / "birdx2.png",
    )
    cfg = _data_cfg(
        "sr_folders",
        root=str(tmp_path),
        train="DIV2K",
        val_holdout=1,
        test=["Bench"],
        patch_size=8,
        batch_size=2,
        patches_per_epoch=4,
    )
    splits = DATASETS.get("sr_folders")(cfg, scale=2, seed=0)
    assert splits.info["train_images"] == 2 and splits.info["val_images"] == 1
    lr, hr = next(iter(splits.train))
    assert torch.all(lr * 255 == 7) and hr.shape == (2, 3, 16, 16)
    ((lr, hr),) = list(splits.test)
    assert torch.all(lr * 255 == 9) and hr.shape == (1, 3, 40, 40)
    # an LR folder without the matching file is malformed data
    (tmp_path / "Bench" / "LR_bicubic" / "X2" / "birdx2.png").unlink()
    with pytest.raises(DataNotFoundError, match="birdx2"):
        DATASETS.get("sr_folders")(cfg, scale=2, seed=0)


@needs_shared
def test_sr_folders_on_shared_data() -> None:
    cfg = _data_cfg(
        "sr_folders",
        root=str(SHARED),
        train=["Set14"],
        val_holdout=2,
        test=["Set5"],
        patch_size=24,
        batch_size=4,
        patches_per_epoch=8,
    )
    splits = DATASETS.get("sr_folders")(cfg, scale=3, seed=0)  # Set14 has a gray image: → RGB
    assert splits.info["train_images"] == 12 and splits.info["val_images"] == 2
    assert splits.test.names == ["baby", "bird", "butterfly", "head", "woman"]
    lr, hr = next(iter(splits.test))  # Set5 baby: 512² cropped to 510² at ×3
    assert hr.shape == (1, 3, 510, 510) and lr.shape == (1, 3, 170, 170)
    assert next(iter(splits.train))[1].shape == (4, 3, 72, 72)


@needs_shared
def test_denoise_folders_on_shared_data() -> None:
    cfg = _data_cfg(
        "denoise_folders",
        root=str(SHARED),
        train="Set12",
        val_holdout=2,
        test=["BSD68"],
        patch_size=32,
        batch_size=4,
        patches_per_epoch=8,
    )
    splits = DATASETS.get("denoise_folders")(cfg, seed=0)
    assert splits.info["train_images"] == 10 and len(splits.test) == 68
    noisy, clean = next(iter(splits.test))
    assert clean.shape[1] == 1 and sorted(clean.shape[-2:]) == [321, 481]
    assert noisy.min() < 0 or noisy.max() > 1  # σ = 50 unclipped noise leaves 0..1


@pytest.mark.parametrize("name", ["sr_embedded", "denoise_embedded"])
@pytest.mark.parametrize("bad", [0, 3, -16, 12.5, "lots"])
def test_an_epoch_smaller_than_one_batch_is_refused_in_one_line(name: str, bad: object) -> None:
    cfg = _data_cfg(name, patches_per_epoch=bad, batch_size=4, patch_size=16)
    kwargs = {"scale": 2} if name.startswith("sr") else {}
    with pytest.raises(
        ConfigError, match=r"data.patches_per_epoch=.* ≥ data.batch_size \(4\)"
    ) as e:
        DATASETS.get(name)(cfg, seed=0, **kwargs)
    assert "\n" not in str(e.value)
