"""Image-classification data: loaders for each dataset, the fixed splits and batched augmentation.

Every loader returns uint8 NCHW images and int64 labels on the CPU. The validation split is held
out of the training data, stratified and seeded by `data.split_seed` (never by the run seed), so
every method and every seed sees the same split; the test split is left untouched. Augmentation
(zero-padded random crop + horizontal flip, then normalisation) runs batched on the batch's device
and draws its randomness only from the generator `TensorBatches` passes in.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from harness.data import Batch, TensorBatches
from harness.errors import ConfigError, DataNotFoundError
from harness.registry import DATASETS
from harness.task import DataSplits

__all__ = [
    "Augment",
    "ImageArrays",
    "Normalize",
    "build_splits",
    "channel_stats",
    "load_arrays",
    "random_crop",
    "random_flip",
    "stratified_split",
    "stratified_subset",
]

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".ppm", ".pgm", ".tif", ".tiff", ".webp")
CIFAR_DIRS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass
class ImageArrays:
    """A dataset as loaded: uint8 images [N, C, H, W] and int64 labels [N] per split."""

    x_train: Tensor
    y_train: Tensor
    x_test: Tensor
    y_test: Tensor
    classes: list[str] = field(default_factory=list)


# ---------------------------------------------------------------- config access


def _require(cfg: Mapping[str, Any], key: str) -> Any:
    value = cfg.get(key)
    if value is None:
        name = cfg.get("name", "?")
        raise ConfigError(f"data config '{name}' lacks `{key}`; set data.{key} in conf/data/")
    return value


def declared_shape(cfg: Mapping[str, Any]) -> tuple[int, int, int]:
    """`data.shape` as (C, H, W)."""
    shape = tuple(int(s) for s in _require(cfg, "shape"))
    if len(shape) != 3:
        raise ConfigError(f"data.shape must be [C, H, W], got {list(shape)}")
    return shape  # type: ignore[return-value]


# ---------------------------------------------------------------- splits and statistics


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (kept, held out) with about `fraction` of every class held out.

    Each class keeps at least one sample when it has two or more; the result depends only on the
    labels, the fraction and the seed. Both index tensors are sorted.
    """
    if not 0.0 < fraction < 1.0:
        raise ConfigError(f"a split fraction must be in (0, 1), got {fraction}")
    rng = np.random.default_rng(seed)
    y = labels.numpy()
    held: list[np.ndarray] = []
    for c in np.unique(y):  # sorted, so the draw order is fixed
        idx = np.flatnonzero(y == c)
        k = int(np.floor(fraction * len(idx) + 0.5))
        k = min(k, len(idx) - 1) if len(idx) > 1 else k
        held.append(rng.permutation(idx)[:k])
    out = np.sort(np.concatenate(held)) if held else np.empty(0, dtype=np.int64)
    if len(out) == 0:
        raise ConfigError(f"fraction {fraction} of {len(y)} samples holds out nothing; raise it")
    mask = np.ones(len(y), dtype=bool)
    mask[out] = False
    return torch.from_numpy(np.flatnonzero(mask)), torch.from_numpy(out)


def stratified_subset(labels: Tensor, size: int, seed: Sequence[int]) -> Tensor:
    """Sorted indices of exactly `size` samples, each class in proportion to its share.

    Per-class counts follow the largest-remainder rule (ties go to the lower class), so the
    subset depends only on the labels, the size and the seed.
    """
    y = labels.numpy()
    classes, counts = np.unique(y, return_counts=True)  # sorted, so the draw order is fixed
    share = counts * (size / len(y))
    take = np.floor(share).astype(np.int64)
    by_remainder = np.argsort(-(share - take), kind="stable")
    take[by_remainder[: size - int(take.sum())]] += 1
    rng = np.random.default_rng(seed)
    chosen = [
        rng.permutation(np.flatnonzero(y == c))[:k] for c, k in zip(classes, take, strict=True)
    ]
    return torch.from_numpy(np.sort(np.concatenate(chosen)))


def train_subset_size(cfg: Mapping[str, Any], available: int, num_classes: int) -> int | None:
    """`data.train_subset` checked against the training data: None (all of it) or a count."""
    value = cfg.get("train_subset")
    if value is None:
        return None
    smallest = 2 * num_classes  # one training and one validation image per class at the least
    if isinstance(value, bool) or not isinstance(value, int) or not smallest <= value <= available:
        raise ConfigError(
            f"data.train_subset={value!r} is not a whole number in [{smallest}, {available}] "
            f"(the {cfg.get('name')} training images); pass e.g. data.train_subset="
            f"{min(available, 5000)}, or data.train_subset=null for all of them"
        )
    return value


def channel_stats(x: Tensor) -> tuple[Tensor, Tensor]:
    """Per-channel mean and std of uint8 images [N, C, H, W], in [0, 1] units, shape [C]."""
    x = x.to(torch.float64).div_(255.0)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3)).clamp_min(1e-6)  # constant channels would divide by zero
    return mean.float(), std.float()


# ---------------------------------------------------------------- batched transforms


def random_crop(x: Tensor, pad: int, generator: torch.Generator) -> Tensor:
    """Zero-pad by `pad` on each side and take one random H×W window per image (any dtype).

    Offsets are drawn on the CPU from `generator` and moved to the batch's device, so the result
    is the same on every device for a given generator state.
    """
    if pad <= 0:
        return x
    n, c, h, w = x.shape
    offsets = torch.randint(0, 2 * pad + 1, (2, n), generator=generator).to(x.device)
    padded = F.pad(x, (pad, pad, pad, pad))  # [N, C, H+2p, W+2p], zeros
    rows = offsets[0, :, None] + torch.arange(h, device=x.device)  # [N, H]
    cols = offsets[1, :, None] + torch.arange(w, device=x.device)  # [N, W]
    n_idx = torch.arange(n, device=x.device)[:, None, None, None]
    c_idx = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[n_idx, c_idx, rows[:, None, :, None], cols[:, None, None, :]]


def random_flip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image left-right with probability 1/2."""
    flip = (torch.rand(len(x), generator=generator) < 0.5).to(x.device)
    return torch.where(flip[:, None, None, None], x.flip(3), x)


class Normalize:
    """uint8 → float32 in [0, 1] → (x − mean) / std per channel; labels pass through."""

    def __init__(self, mean: Sequence[float] | Tensor, std: Sequence[float] | Tensor) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.as_tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        # (x/255 − mean)/std folded into one multiply-add: x·scale + shift
        self._scale = 1.0 / (255.0 * self.std)
        self._shift = -self.mean / self.std

    def normalize(self, x: Tensor) -> Tensor:
        if self._scale.device != x.device:  # move once, not per batch
            self._scale, self._shift = self._scale.to(x.device), self._shift.to(x.device)
        return torch.addcmul(self._shift, x.float(), self._scale)

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        x, *rest = batch
        return (self.normalize(x), *rest)


class Augment(Normalize):
    """Training transform: random crop with zero padding, optional flip, then normalisation."""

    def __init__(
        self,
        mean: Sequence[float] | Tensor,
        std: Sequence[float] | Tensor,
        *,
        crop_pad: int = 4,
        flip: bool = True,
    ) -> None:
        super().__init__(mean, std)
        self.crop_pad = crop_pad
        self.flip = flip

    def __call__(self, batch: Batch, generator: torch.Generator) -> Batch:
        x, *rest = batch
        x = random_crop(x, self.crop_pad, generator)  # on uint8: padding is black, as torchvision
        if self.flip:
            x = random_flip(x, generator)
        return (self.normalize(x), *rest)


# ---------------------------------------------------------------- loaders


def _as_images(x: np.ndarray, *, channels_last: bool) -> Tensor:
    """uint8 [N, H, W(, C)] → contiguous uint8 tensor [N, C, H, W]."""
    if x.ndim == 3:
        x = x[:, None] if not channels_last else x[..., None]
    if channels_last:
        x = x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: Any) -> Tensor:
    return torch.as_tensor(np.asarray(y), dtype=torch.int64).reshape(-1)


@DATASETS.register("digits", task="classification", offline=True)
def load_digits(cfg: Mapping[str, Any]) -> ImageArrays:
    """scikit-learn's 1,797 8×8 handwritten digits (ships with the package: no download).

    Pixel values 0..16 are scaled to 0..255. The test part (`data.test_fraction`, default 0.2) is
    a stratified split seeded by `data.split_seed`, fixed for every run.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    bunch = sk_load_digits()
    x = torch.from_numpy(np.rint(bunch.images * (255.0 / 16.0)).astype(np.uint8))[:, None]
    y = _labels(bunch.target)
    # stream 0 of the split seed; the validation split uses stream 1
    train, test = stratified_split(
        y, float(cfg.get("test_fraction", 0.2)), _stream(cfg.get("split_seed", 0), 0)
    )
    return ImageArrays(x[train], y[train], x[test], y[test], [str(i) for i in range(10)])


def _load_cifar(cfg: Mapping[str, Any], name: str) -> ImageArrays:
    root = Path(str(_require(cfg, "root"))).expanduser()
    folder = root / CIFAR_DIRS[name]
    download = bool(cfg.get("download", False))
    if not folder.is_dir() and not download:
        raise DataNotFoundError(
            f"{name} not found at {folder}: expected the python version of the dataset in "
            f"<root>/{CIFAR_DIRS[name]}/ (root = data.root = {root}). Fix: pass "
            f"data.download=true to fetch it into {root}, point data.root (or the "
            "PRUNEBENCH_DATA_ROOT environment variable) at an existing copy, or use the offline "
            "dataset with data=digits."
        )
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    splits = []
    for train in (True, False):
        try:
            ds = cls(root=str(root), train=train, download=download)
        except RuntimeError as e:  # torchvision's "not found or corrupted" (md5 mismatch)
            raise DataNotFoundError(
                f"{name} at {folder} is incomplete or corrupted ({e}); delete it and pass "
                "data.download=true, or use data=digits"
            ) from e
        splits.append((_as_images(ds.data, channels_last=True), _labels(ds.targets)))
    (xtr, ytr), (xte, yte) = splits
    return ImageArrays(xtr, ytr, xte, yte, list(ds.classes))


@DATASETS.register("cifar10", task="classification", offline=False)
def load_cifar10(cfg: Mapping[str, Any]) -> ImageArrays:
    """CIFAR-10 through torchvision; downloads only with `data.download=true`."""
    return _load_cifar(cfg, "cifar10")


@DATASETS.register("cifar100", task="classification", offline=False)
def load_cifar100(cfg: Mapping[str, Any]) -> ImageArrays:
    """CIFAR-100 (fine labels) through torchvision; downloads only with `data.download=true`."""
    return _load_cifar(cfg, "cifar100")


@DATASETS.register("npz", task="classification", offline=True)
def load_npz(cfg: Mapping[str, Any]) -> ImageArrays:
    """A `.npz` with uint8 `x_train`/`x_test` [N, H, W, C] (or [N, H, W]) and integer labels.

    This is what `shared/tools/cifar10_decode.py OUT.npz` writes; `class_names` is optional.
    """
    path = Path(str(_require(cfg, "path"))).expanduser()
    layout = (
        "expected a numpy .npz with keys x_train [N,H,W,C] uint8, y_train [N], x_test, y_test "
        "(e.g. written by `python shared/tools/cifar10_decode.py OUT.npz`)"
    )
    if not path.is_file():
        raise DataNotFoundError(f"npz dataset not found at {path}; {layout}; set data.path")
    try:
        with np.load(path, allow_pickle=False) as f:
            missing = [k for k in NPZ_KEYS if k not in f.files]
            if missing:
                raise DataNotFoundError(
                    f"{path} lacks keys {missing} (has {sorted(f.files)}); {layout}"
                )
            arrays = {k: f[k] for k in NPZ_KEYS}
            classes = [str(c) for c in f["class_names"]] if "class_names" in f.files else []
    except DataNotFoundError:
        raise
    except Exception as e:  # noqa: BLE001 - zip, zlib, pickle and header errors all mean "bad file"
        reason = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise DataNotFoundError(
            f"{path} is not a readable .npz ({type(e).__name__}: {reason}): corrupt or "
            f"truncated; re-create it. {layout}"
        ) from e
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim not in (3, 4):
            raise DataNotFoundError(
                f"{path}: x_{split} is {x.dtype} with shape {x.shape}; {layout}"
            )
        if len(x) != len(y) or not np.issubdtype(y.dtype, np.integer):
            raise DataNotFoundError(
                f"{path}: y_{split} ({y.dtype}, {len(y)} labels) does not match x_{split} "
                f"({len(x)} images); labels must be integers, one per image"
            )
    return ImageArrays(
        _as_images(arrays["x_train"], channels_last=True),
        _labels(arrays["y_train"]),
        _as_images(arrays["x_test"], channels_last=True),
        _labels(arrays["y_test"]),
        classes,
    )


def _read_folder(folder: Path, classes: list[str], shape: tuple[int, int, int]):
    from PIL import Image

    c, h, w = shape
    mode = "L" if c == 1 else "RGB"
    images, labels = [], []
    for label, name in enumerate(classes):
        sub = folder / name
        files = (
            sorted(p for p in sub.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if sub.is_dir()
            else []
        )
        for p in files:
            try:
                with Image.open(p) as img:
                    img = img.convert(mode)
                    if img.size != (w, h):
                        img = img.resize((w, h), Image.BILINEAR)
                    images.append(np.asarray(img, dtype=np.uint8).reshape(h, w, c))
            except (OSError, ValueError, SyntaxError) as e:  # PIL's errors for bad image files
                raise DataNotFoundError(
                    f"cannot read image {p} ({type(e).__name__}: {e}); it is corrupt or not an "
                    "image: replace or remove it"
                ) from e
            labels.append(label)
    if not images:
        raise DataNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) under {folder}/<class>/")
    return _as_images(np.stack(images), channels_last=True), _labels(labels)


@DATASETS.register("imagefolder", task="classification", offline=True)
def load_imagefolder(cfg: Mapping[str, Any]) -> ImageArrays:
    """`data.root/train/<class>/*` and `data.root/test/<class>/*`, resized to `data.shape`.

    Classes are the sorted folder names under train/; images are loaded into memory once.
    """
    root = Path(str(_require(cfg, "root"))).expanduser()
    layout = "expected <root>/train/<class>/*.png|jpg and <root>/test/<class>/*"
    if not (root / "train").is_dir() or not (root / "test").is_dir():
        raise DataNotFoundError(f"image folder dataset not found at {root}; {layout}")
    classes = sorted(p.name for p in (root / "train").iterdir() if p.is_dir())
    extra = sorted(
        p.name for p in (root / "test").iterdir() if p.is_dir() and p.name not in classes
    )
    if extra:
        raise DataNotFoundError(f"{root}/test has classes missing from train/: {extra}; {layout}")
    shape = declared_shape(cfg)
    xtr, ytr = _read_folder(root / "train", classes, shape)
    xte, yte = _read_folder(root / "test", classes, shape)
    return ImageArrays(xtr, ytr, xte, yte, classes)


# ---------------------------------------------------------------- assembly


def _stream(split_seed: int, stream: int) -> list[int]:
    """Independent, fixed seeds for the test and validation draws of one `split_seed`."""
    return [int(split_seed), stream]


def load_arrays(cfg: Mapping[str, Any]) -> ImageArrays:
    """Load the dataset named by `data.name` and check it against the declared shape/classes."""
    name = str(_require(cfg, "name"))
    loader = DATASETS.get(name)
    task = DATASETS.info(name).get("task")
    if task != "classification":
        known = [n for n in DATASETS.names() if DATASETS.info(n).get("task") == "classification"]
        raise ConfigError(
            f"dataset '{name}' belongs to task '{task}'; classification datasets: {known}"
        )
    data = loader(cfg)
    shape = declared_shape(cfg)
    num_classes = int(_require(cfg, "num_classes"))
    for split, x, y in (("train", data.x_train, data.y_train), ("test", data.x_test, data.y_test)):
        if tuple(x.shape[1:]) != shape:
            raise ConfigError(
                f"{name} {split} images are {list(x.shape[1:])} (C, H, W) but data.shape is "
                f"{list(shape)}; set data.shape={list(x.shape[1:])}"
            )
        if len(y) and (int(y.min()) < 0 or int(y.max()) >= num_classes):
            raise ConfigError(
                f"{name} {split} labels span {int(y.min())}..{int(y.max())} but "
                f"data.num_classes={num_classes}; set data.num_classes={int(y.max()) + 1}"
            )
    return data


def build_splits(
    cfg: Mapping[str, Any], *, batch_size: int, eval_batch_size: int, seed: int
) -> DataSplits:
    """Train / val / test batches of CPU tensors for the dataset `cfg` describes.

    `seed` (the run seed) only orders the training batches and draws the augmentation; the
    validation split depends on `data.split_seed` alone.
    """
    data = load_arrays(cfg)
    x_all, y_all = data.x_train, data.y_train
    subset = train_subset_size(cfg, len(y_all), int(_require(cfg, "num_classes")))
    if subset is not None:  # stream 2 of the split seed: the same subset for every method and seed
        keep = stratified_subset(y_all, subset, _stream(cfg.get("split_seed", 0), 2))
        x_all, y_all = x_all[keep], y_all[keep]
    val_fraction = float(cfg.get("val_fraction", 0.1))
    try:
        train_idx, val_idx = stratified_split(
            y_all, val_fraction, _stream(cfg.get("split_seed", 0), 1)
        )
    except ConfigError as e:
        if subset is None:
            raise
        raise ConfigError(
            f"data.train_subset={subset} is too small for data.val_fraction={val_fraction} "
            f"({e}); raise either"
        ) from e
    x_train, y_train = x_all[train_idx], y_all[train_idx]
    x_val, y_val = x_all[val_idx], y_all[val_idx]
    mean, std = channel_stats(x_train)
    augment = Augment(
        mean, std, crop_pad=int(cfg.get("crop_pad", 0)), flip=bool(cfg.get("flip", False))
    )
    splits = DataSplits(
        train=TensorBatches(
            (x_train, y_train),
            batch_size,
            shuffle=True,
            drop_last=True,
            transform=augment,
            seed=seed,
        ),
        val=TensorBatches((x_val, y_val), eval_batch_size, transform=Normalize(mean, std)),
        test=TensorBatches(
            (data.x_test, data.y_test), eval_batch_size, transform=Normalize(mean, std)
        ),
        info={
            "dataset": str(cfg.get("name")),
            "classes": data.classes,
            "train_subset": subset,
            "num_train": len(y_train),
            "num_val": len(y_val),
            "num_test": len(data.y_test),
            "mean": mean.tolist(),
            "std": std.tolist(),
        },
    )
    log.info(
        "%s%s: %d train / %d val / %d test images of shape %s",
        cfg.get("name"),
        f" (train_subset={subset} of {len(data.y_train)})" if subset is not None else "",
        len(y_train),
        len(y_val),
        len(data.y_test),
        list(x_train.shape[1:]),
    )
    return splits
