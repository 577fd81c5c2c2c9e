"""Classification data: fixed stratified splits, device-side augmentation, and the loaders'
errors for missing or malformed data (all offline, files under tmp_path)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

import tasks.classification  # noqa: F401  (registers the datasets)
from harness.errors import ConfigError, DataNotFoundError
from harness.registry import DATASETS
from tasks.classification.data import (
    Augment,
    Normalize,
    build_splits,
    load_arrays,
    random_crop,
    random_flip,
    stratified_split,
    stratified_subset,
)

DIGITS = {
    "name": "digits",
    "shape": [1, 8, 8],
    "num_classes": 10,
    "test_fraction": 0.2,
    "val_fraction": 0.1,
    "split_seed": 0,
    "crop_pad": 1,
    "flip": False,
}


def splits(cfg: dict, seed: int = 0, batch_size: int = 64):
    return build_splits(
        OmegaConf.create(cfg), batch_size=batch_size, eval_batch_size=256, seed=seed
    )


def rows(x: torch.Tensor) -> list[bytes]:
    return sorted(r.tobytes() for r in x.reshape(len(x), -1).numpy())


@pytest.fixture(scope="module")
def digits():
    return splits(DIGITS)


def test_classification_datasets_registered():
    for name in ("digits", "cifar10", "cifar100", "npz", "imagefolder"):
        assert DATASETS.info(name)["task"] == "classification"


def test_stratified_split_is_a_stratified_partition():
    labels = torch.arange(10).repeat_interleave(torch.arange(10, 110, 10))  # 10..100 per class
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert len(set(kept.tolist()) & set(held.tolist())) == 0
    assert sorted(kept.tolist() + held.tolist()) == list(range(len(labels)))
    per_class = torch.bincount(labels[held], minlength=10)
    assert per_class.tolist() == [round(0.2 * n) for n in range(10, 110, 10)]
    again, _ = stratified_split(labels, 0.2, seed=3)
    other, _ = stratified_split(labels, 0.2, seed=4)
    assert torch.equal(kept, again) and not torch.equal(kept, other)


def test_digits_splits_partition_the_dataset(digits):
    from sklearn.datasets import load_digits

    info = digits.info
    assert info["num_train"] + info["num_val"] + info["num_test"] == 1797
    assert info["num_test"] == pytest.approx(0.2 * 1797, abs=10)
    assert info["num_val"] == pytest.approx(0.1 * (1797 - info["num_test"]), abs=10)
    parts = torch.cat([digits.train.tensors[0], digits.val.tensors[0], digits.test.tensors[0]])
    full = torch.from_numpy(np.rint(load_digits().images * 255 / 16).astype(np.uint8))[:, None]
    assert parts.dtype == torch.uint8 and parts.shape[1:] == (1, 8, 8)
    assert rows(parts) == rows(full)  # every image in exactly one split
    for split in (digits.val, digits.test):  # stratified: every class about equally present
        counts = torch.bincount(split.tensors[1], minlength=10)
        assert counts.min() >= 0.8 * counts.float().mean()


def test_splits_depend_on_split_seed_not_run_seed(digits):
    other_run = splits(DIGITS, seed=7)
    for a, b in ((digits.val, other_run.val), (digits.test, other_run.test)):
        assert all(torch.equal(s, t) for s, t in zip(a.tensors, b.tensors, strict=True))
    assert torch.equal(digits.train.tensors[0], other_run.train.tensors[0])
    first = next(iter(splits(DIGITS, seed=0).train))[1]
    assert not torch.equal(first, next(iter(other_run.train))[1])  # run seed orders the batches
    resplit = splits({**DIGITS, "split_seed": 1})
    assert not torch.equal(digits.val.tensors[1], resplit.val.tensors[1])
    assert not torch.equal(digits.test.tensors[1], resplit.test.tensors[1])


def test_training_batches_are_augmented_and_reproducible():
    a, b = splits(DIGITS, seed=3), splits(DIGITS, seed=3)
    xa, ya = next(iter(a.train))
    xb, yb = next(iter(b.train))
    assert xa.dtype == torch.float32 and xa.shape == (64, 1, 8, 8) and ya.dtype == torch.int64
    torch.testing.assert_close(xa, xb)
    assert torch.equal(ya, yb)
    xv, yv = next(iter(a.val))
    assert xv.dtype == torch.float32 and len(xv) == a.info["num_val"]


def test_normalisation_uses_training_statistics(digits):
    x = digits.train.tensors[0]
    z = Normalize(digits.info["mean"], digits.info["std"])((x,), torch.Generator())[0]
    assert z.mean().item() == pytest.approx(0.0, abs=1e-4)
    assert z.std().item() == pytest.approx(1.0, abs=1e-3)


def test_random_crop_takes_a_window_of_the_zero_padded_image():
    x = torch.randint(1, 256, (6, 3, 5, 5), dtype=torch.uint8)
    out = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert out.shape == x.shape and out.dtype == torch.uint8
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(len(x)):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    again = random_crop(x, 2, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)
    assert torch.equal(random_crop(x, 0, torch.Generator()), x)


def test_random_flip_mirrors_some_images():
    x = torch.arange(16 * 4 * 4, dtype=torch.float32).view(16, 1, 4, 4)
    out = random_flip(x, torch.Generator().manual_seed(0))
    same = [torch.equal(o, i) for o, i in zip(out, x, strict=True)]
    mirrored = [torch.equal(o, i.flip(2)) for o, i in zip(out, x, strict=True)]
    assert all(s or m for s, m in zip(same, mirrored, strict=True))
    assert 0 < sum(mirrored) < 16


def test_augment_keeps_shape_and_depends_only_on_generator():
    x = torch.randint(0, 256, (8, 3, 6, 6), dtype=torch.uint8)
    y = torch.arange(8)
    aug = Augment([0.5, 0.5, 0.5], [0.25, 0.25, 0.25], crop_pad=2, flip=True)
    a = aug((x, y), torch.Generator().manual_seed(1))
    b = aug((x, y), torch.Generator().manual_seed(1))
    c = aug((x, y), torch.Generator().manual_seed(2))
    assert a[0].shape == x.shape and a[0].dtype == torch.float32 and torch.equal(a[1], y)
    torch.testing.assert_close(a[0], b[0])
    assert not torch.equal(a[0], c[0])


@pytest.mark.parametrize("name,folder", [("cifar10", "cifar-10-batches-py"),
                                         ("cifar100", "cifar-100-python")])  # fmt: skip
def test_missing_cifar_without_download_names_path_and_fixes(tmp_path, name, folder):
    cfg = {"name": name, "root": str(tmp_path / "nowhere"), "download": False,
           "shape": [3, 32, 32], "num_classes": 10}  # fmt: skip
    with pytest.raises(DataNotFoundError) as err:
        load_arrays(OmegaConf.create(cfg))
    msg = str(err.value)
    assert str(tmp_path / "nowhere" / folder) in msg
    assert "data.download=true" in msg and "data=digits" in msg


def write_npz(path, n_train=40, n_test=12, hw=(8, 8), classes=4, drop=()):
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 256, (n_train, *hw, 3), dtype=np.uint8),
        "y_train": np.arange(n_train, dtype=np.uint8) % classes,
        "x_test": rng.integers(0, 256, (n_test, *hw, 3), dtype=np.uint8),
        "y_test": np.arange(n_test, dtype=np.uint8) % classes,
        "class_names": np.array([f"c{i}" for i in range(classes)]),
    }
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return arrays


def npz_cfg(path, shape=(3, 8, 8), classes=4):
    return {"name": "npz", "path": str(path), "shape": list(shape), "num_classes": classes,
            "val_fraction": 0.2, "split_seed": 0, "crop_pad": 1, "flip": True}  # fmt: skip


def test_npz_round_trip(tmp_path):
    arrays = write_npz(tmp_path / "tiny.npz")
    data = load_arrays(OmegaConf.create(npz_cfg(tmp_path / "tiny.npz")))
    assert torch.equal(data.x_test, torch.from_numpy(arrays["x_test"]).permute(0, 3, 1, 2))
    assert data.y_test.dtype == torch.int64 and data.y_test.tolist() == arrays["y_test"].tolist()
    assert data.classes == ["c0", "c1", "c2", "c3"]
    s = splits(npz_cfg(tmp_path / "tiny.npz"), batch_size=8)
    assert (s.info["num_train"], s.info["num_val"], s.info["num_test"]) == (32, 8, 12)
    assert next(iter(s.train))[0].shape == (8, 3, 8, 8)


def test_npz_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="missing.npz"):
        load_arrays(OmegaConf.create(npz_cfg(tmp_path / "missing.npz")))
    write_npz(tmp_path / "nokeys.npz", drop=("y_test",))
    with pytest.raises(DataNotFoundError, match=r"lacks keys \['y_test'\]"):
        load_arrays(OmegaConf.create(npz_cfg(tmp_path / "nokeys.npz")))
    x = np.zeros((4, 8, 8, 3), np.float32)
    np.savez(tmp_path / "float.npz", x_train=x, y_train=np.zeros(4), x_test=x, y_test=np.zeros(4))
    with pytest.raises(DataNotFoundError, match="float32"):
        load_arrays(OmegaConf.create(npz_cfg(tmp_path / "float.npz")))
    write_npz(tmp_path / "tiny.npz")
    with pytest.raises(ConfigError, match=r"data.shape=\[3, 8, 8\]"):
        load_arrays(OmegaConf.create(npz_cfg(tmp_path / "tiny.npz", shape=(3, 32, 32))))
    with pytest.raises(ConfigError, match="data.num_classes=4"):
        load_arrays(OmegaConf.create(npz_cfg(tmp_path / "tiny.npz", classes=3)))


def test_imagefolder_loads_and_resizes(tmp_path):
    from PIL import Image

    colors = {"cat": (255, 0, 0), "dog": (0, 0, 255)}
    for split, n in (("train", 5), ("test", 2)):
        for name, color in colors.items():
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (12, 10), color).save(tmp_path / split / name / f"{i}.png")
    (tmp_path / "train" / "cat" / "notes.txt").write_text("not an image")
    cfg = {"name": "imagefolder", "root": str(tmp_path), "shape": [3, 8, 8], "num_classes": 2,
           "val_fraction": 0.2, "split_seed": 0}  # fmt: skip
    data = load_arrays(OmegaConf.create(cfg))
    assert data.classes == ["cat", "dog"]
    assert data.x_train.shape == (10, 3, 8, 8) and data.x_test.shape == (4, 3, 8, 8)
    assert data.y_test.tolist() == [0, 0, 1, 1]
    assert data.x_test[0, :, 4, 4].tolist() == [255, 0, 0]
    s = splits(cfg, batch_size=4)
    assert (s.info["num_train"], s.info["num_val"]) == (8, 2)
    with pytest.raises(DataNotFoundError, match="train/<class>"):
        load_arrays(OmegaConf.create({**cfg, "root": str(tmp_path / "train")}))


def test_stratified_subset_is_exact_proportional_and_seeded():
    labels = torch.arange(4).repeat_interleave(torch.tensor([10, 20, 30, 40]))
    picked = stratified_subset(labels, 25, seed=[0, 2])
    assert len(picked) == len(set(picked.tolist())) == 25
    assert torch.bincount(labels[picked], minlength=4).tolist() == [3, 5, 7, 10]  # tie: lower class
    assert torch.equal(picked, stratified_subset(labels, 25, seed=[0, 2]))
    assert not torch.equal(picked, stratified_subset(labels, 25, seed=[1, 2]))


def test_train_subset_shrinks_train_and_val_only(digits):
    small = splits({**DIGITS, "train_subset": 300}, seed=5)
    assert small.info["num_train"] + small.info["num_val"] == 300
    assert small.info["train_subset"] == 300 and digits.info["train_subset"] is None
    assert torch.equal(small.test.tensors[1], digits.test.tensors[1])  # the test split is whole
    full_train = rows(torch.cat([digits.train.tensors[0], digits.val.tensors[0]]))
    assert set(rows(small.train.tensors[0]) + rows(small.val.tensors[0])) <= set(full_train)
    counts = torch.bincount(torch.cat([small.train.tensors[1], small.val.tensors[1]]))
    assert counts.min() >= 28 and counts.max() <= 32  # every class near 300 / 10
    again = splits({**DIGITS, "train_subset": 300}, seed=9)  # the run seed does not move it
    assert torch.equal(small.val.tensors[0], again.val.tensors[0])
    assert torch.equal(small.train.tensors[0], again.train.tensors[0])


@pytest.mark.parametrize("bad", [0, 19, 5000, 12.5, "many", True])
def test_train_subset_rejects_bad_values_in_one_line(bad):
    with pytest.raises(ConfigError, match=r"data.train_subset=.*\[20, 1438\]") as e:
        splits({**DIGITS, "train_subset": bad})
    assert "\n" not in str(e.value)


def test_train_subset_too_small_for_the_validation_split_names_both_keys():
    with pytest.raises(ConfigError, match="train_subset=20 is too small for data.val_fraction"):
        splits({**DIGITS, "train_subset": 20})
