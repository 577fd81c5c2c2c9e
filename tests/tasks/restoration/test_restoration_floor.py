"""The restoration protocol's exact parts and every result's floor: MATLAB's bicubic `imresize`
(checked against its published definition by hand and against the SR tables' bicubic rows),
per-image test noise, gray files in RGB sets, and the no-op score beside each result."""

from __future__ import annotations

import math
import os
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

import tasks  # noqa: F401  (registers tasks, datasets, models)
from harness.errors import ConfigError
from harness.registry import DATASETS, TASKS
from harness.report.compare import StudyPoints, _markdown, compare_tables
from harness.runtime.device import pick_runtime
from harness.train import evaluate
from tasks.denoise.data import fixed_noisy, image_noise_seed
from tasks.restoration import (
    ImageBatches,
    bicubic_downscale,
    bicubic_upscale,
    crop_to_multiple,
    imresize,
    is_gray_file,
    list_images,
    load_image,
    psnr,
    rgb_to_y,
    shave,
)
from tasks.restoration.imresize import resize_weights
from tasks.sr.metrics import sr_scores

CONF = Path(__file__).resolve().parents[3] / "conf"
SHARED = Path(
    os.environ.get("PRUNEBENCH_SHARED_DATA", Path(__file__).resolve().parents[4] / "shared/data")
)
CPU = pick_runtime("cpu")

# -- MATLAB imresize, by hand from its definition ----------------------------------------------
# cubic(t), a = −0.5: cubic(0.25) = 0.8671875, cubic(0.75) = 0.2265625,
# cubic(1.25) = −0.0703125, cubic(1.75) = −0.0234375.
#
# ×1/2 on n = 4 (antialiased: h(t) = ½·cubic(t/2), width 8): output 1 samples u = 1.5, taps
# −2 … 5 at distances 3.5 … −3.5 with weights ½·cubic(1.75, 1.25, 0.75, 0.25, …); the
# symmetric mirror sends taps −2, −1, 0 to pixels 3, 2, 1 and tap 5 to pixel 4, so
# out1 = 0.546875 a + 0.3984375 b + 0.1015625 c − 0.046875 d (and out2 mirrored).
HALF_OF_4 = [
    [0.546875, 0.3984375, 0.1015625, -0.046875],
    [-0.046875, 0.1015625, 0.3984375, 0.546875],
]
# ×2 on n = 2: u = 0.75, 1.25, 1.75, 2.25. For u = 0.75 the taps −1 … 2 sit at 1.75, 0.75,
# −0.25, −1.25; tap −1 mirrors to pixel 2, tap 0 to pixel 1: out1 = (0.2265625 + 0.8671875) a
# + (−0.0234375 − 0.0703125) b = 1.09375 a − 0.09375 b. For u = 1.25: taps 0 … 3 at 1.25, 0.25,
# −0.75, −1.75 → 0.796875 a + 0.203125 b.
DOUBLE_OF_2 = [[1.09375, -0.09375], [0.796875, 0.203125], [0.203125, 0.796875], [-0.09375, 1.09375]]


def test_imresize_weights_follow_matlabs_definition() -> None:
    torch.testing.assert_close(
        torch.from_numpy(resize_weights(4, 2, 0.5)), torch.tensor(HALF_OF_4, dtype=torch.float64)
    )
    torch.testing.assert_close(
        torch.from_numpy(resize_weights(2, 4, 2.0)), torch.tensor(DOUBLE_OF_2, dtype=torch.float64)
    )


def test_imresize_of_uint8_rounds_half_away_from_zero_and_saturates() -> None:
    # [10, 20, 30, 40] ×1/2: 14.609375 → 15 and 35.390625 → 35
    x = torch.tensor([[10, 20, 30, 40]], dtype=torch.uint8)
    assert imresize(x, size=(1, 2)).tolist() == [[15, 35]]
    # [2, 18] ×2: 1.09375·2 − 0.09375·18 = 0.5 exactly → 1 (MATLAB), not 0 (round half even)
    x = torch.tensor([[2, 18]], dtype=torch.uint8)
    out = imresize(x, size=(1, 4))
    assert out.dtype == torch.uint8 and out[0, 0].item() == 1
    # [0, 255] ×2: −23.9 → 0, 51.797 → 52, 203.203 → 203, 278.9 → 255
    assert imresize(torch.tensor([[0, 255]], dtype=torch.uint8), size=(1, 4)).tolist() == [
        [0, 52, 203, 255]
    ]
    with pytest.raises(ValueError, match="positive scale"):
        imresize(x, -1.0)
    # float input: the same weights, nothing rounded
    f = imresize(torch.tensor([[10.0, 20.0, 30.0, 40.0]]), size=(1, 2))
    torch.testing.assert_close(f, torch.tensor([[14.609375, 35.390625]], dtype=torch.float64))


def test_imresize_resizes_rows_then_columns_rounding_in_between() -> None:
    """MATLAB resizes rows first (equal scales) and returns uint8 from each pass: on this image
    both choices show (rounding only at the end, or columns first, give other pixels)."""
    x = torch.tensor([[172, 47], [117, 192]], dtype=torch.uint8)
    w = torch.tensor(DOUBLE_OF_2, dtype=torch.float64)

    def to_uint8(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(0, 255).add(0.5).floor()

    rows_then_cols = to_uint8(to_uint8(w @ x.double()) @ w.T)
    out = imresize(x, 2.0)
    assert out.dtype == torch.uint8 and out.shape == (4, 4)
    assert out.tolist() == rows_then_cols.to(torch.uint8).tolist()
    assert not torch.equal(rows_then_cols, to_uint8(w @ x.double() @ w.T))
    assert not torch.equal(rows_then_cols, to_uint8(w @ to_uint8(x.double() @ w.T)))


def test_imresize_to_a_size_resizes_the_smaller_scale_first() -> None:
    """2×4 → 4×2: columns (×1/2) before rows (×2), as MATLAB orders the passes; rows first
    would give other pixels on this image."""
    x = torch.tensor([[172, 47, 117, 192], [67, 251, 195, 103]], dtype=torch.uint8)
    rows, cols = (torch.tensor(m, dtype=torch.float64) for m in (DOUBLE_OF_2, HALF_OF_4))

    def to_uint8(t: torch.Tensor) -> torch.Tensor:
        return t.clamp(0, 255).add(0.5).floor()

    cols_first = to_uint8(rows @ to_uint8(x.double() @ cols.T))
    assert imresize(x, size=(4, 2)).tolist() == cols_first.to(torch.uint8).tolist()
    assert not torch.equal(cols_first, to_uint8(to_uint8(rows @ x.double()) @ cols.T))


@pytest.mark.parametrize("scale", [2, 3, 4])
def test_bicubic_down_and_up_keep_a_constant_image(scale: int) -> None:
    hr = torch.full((3, 6 * scale, 5 * scale), 201, dtype=torch.uint8)
    lr = bicubic_downscale(hr, scale)
    assert torch.equal(lr, torch.full((3, 6, 5), 201, dtype=torch.uint8))
    assert torch.equal(bicubic_upscale(lr, scale), hr)


# -- the SR tables' bicubic rows ---------------------------------------------------------------

TABLES = [
    ("Set5", 2, 33.66),
    ("Set5", 4, 28.42),
    pytest.param("Set14", 4, 26.00, marks=pytest.mark.slow),
    pytest.param("B100", 4, 25.96, marks=pytest.mark.slow),  # ~15 s on a loaded 2-core CPU
]
needs_sets = pytest.mark.skipif(
    not all((SHARED / s).is_dir() for s in ("Set5", "Set14", "B100")),
    reason=f"shared data (Set5, Set14, B100) not found under {SHARED}; set PRUNEBENCH_SHARED_DATA",
)


def _table_protocol_psnr(path: Path, scale: int) -> float:
    """The SRCNN/VDSR MATLAB scripts behind these rows: Y of the uint8 image, rounded (a gray
    file as it is), degraded and upsampled by `imresize` in double, the output quantised,
    `scale` pixels shaved."""
    img = crop_to_multiple(load_image(path, 3), scale).double()[None]
    y = img[:, :1] if is_gray_file(path) else rgb_to_y(img).add(0.5).floor()
    h, w = y.shape[-2:]
    lr = imresize(y / 255.0, size=(h // scale, w // scale))
    up = imresize(lr, size=(h, w)).mul(255.0).clamp(0, 255).add(0.5).floor()
    return psnr(shave(up, scale), shave(y, scale)).item()


@needs_sets
@pytest.mark.parametrize(("name", "scale", "published"), TABLES)
def test_bicubic_rows_of_the_sr_tables_are_reproduced(
    name: str, scale: int, published: float
) -> None:
    """imresize under the tables' own protocol gives their bicubic rows within 0.01 dB; the
    task's no-op floor (RGB LR rounded to uint8, scored on unrounded Y) within 0.02 dB (Set5 ×2
    sits 0.013 dB above: the tables degraded Y in double, the task degrades uint8 RGB)."""
    files = list_images(SHARED / name)
    table = sum(_table_protocol_psnr(f, scale) for f in files) / len(files)
    assert table == pytest.approx(published, abs=0.01)
    task = TASKS.get("sr")(OmegaConf.create({"name": "sr", "scale": scale}))
    d = OmegaConf.load(CONF / "data" / "sr_folders.yaml")
    d.merge_with({"root": str(SHARED), "train": "Set5", "val_holdout": 1, "test": [name]})
    floor = evaluate(task, task.noop_model(), task.build_data(d, seed=0).test, CPU)["psnr"]
    assert floor == pytest.approx(published, abs=0.02)


# -- gray files in RGB sets --------------------------------------------------------------------


def test_a_gray_file_is_scored_on_its_gray_values_as_the_tables_do() -> None:
    g = torch.Generator().manual_seed(0)
    gray = (torch.rand(1, 1, 24, 24, generator=g) * 255).round()
    hr, out = gray.expand(1, 3, 24, 24) / 255, (gray + 10).clamp(0, 255).expand(1, 3, 24, 24) / 255
    luma = sr_scores(out, hr, 2)["psnr"].item()
    plain = sr_scores(out, hr, 2, gray=True)["psnr"].item()
    # Y compresses a gray error by 219/255: the tables' score is 20·log10(255/219) dB lower
    assert luma - plain == pytest.approx(20 * math.log10(255 / 219), abs=1e-4)
    ref = psnr(shave(out * 255, 2)[:, :1].round(), shave(hr * 255, 2)[:, :1].round()).item()
    assert plain == pytest.approx(ref, abs=1e-4)


def test_sr_task_applies_the_gray_choice_per_image() -> None:
    g = torch.Generator().manual_seed(1)
    hr = (torch.rand(1, 20, 20, generator=g) * 255).to(torch.uint8).expand(3, 20, 20).clone()
    lr = bicubic_downscale(hr, 2)
    items = ImageBatches([(lr, hr), (lr, hr)], ["bridge", "copy"], ["Set14", "Set14"])
    items.gray = [True, False]

    def scores(mode: str) -> list[float]:
        task = TASKS.get("sr")(OmegaConf.create({"name": "sr", "scale": 2, "gray_images": mode}))
        one = [
            ImageBatches([it], [n], gray=[gr])
            for it, n, gr in zip(items.items, items.names, items.gray, strict=True)
        ]
        return [evaluate(task, task.noop_model(), b, CPU)["psnr"] for b in one]

    table, luma = scores("table"), scores("luma")
    assert table[1] == pytest.approx(luma[1]) and luma[0] == pytest.approx(luma[1])
    assert luma[0] - table[0] == pytest.approx(20 * math.log10(255 / 219), abs=1e-3)
    task = TASKS.get("sr")(OmegaConf.create({"name": "sr", "scale": 2, "gray_images": "rgb"}))
    with pytest.raises(ConfigError, match="task.gray_images"):
        evaluate(task, task.noop_model(), items, CPU)
    with pytest.raises(ConfigError, match="task.gray_images"):  # before any data or training
        task.build_data(OmegaConf.load(CONF / "data" / "sr_embedded.yaml"), seed=0)


@pytest.mark.skipif(not (SHARED / "Set14").is_dir(), reason=f"no Set14 under {SHARED}")
def test_set14_bridge_is_flagged_gray_and_nothing_else() -> None:
    d = OmegaConf.load(CONF / "data" / "sr_folders.yaml")
    d.merge_with({"root": str(SHARED), "train": "Set5", "val_holdout": 1, "test": ["Set14"]})
    test = DATASETS.get("sr_folders")(d, scale=4, seed=0).test
    assert [n for n, gr in zip(test.names, test.gray, strict=True) if gr] == ["bridge"]


# -- per-image test noise ----------------------------------------------------------------------


def test_each_images_noise_depends_only_on_the_seed_and_its_name() -> None:
    ims = [(n, torch.full((1, 16, 16), 100, dtype=torch.uint8), "set") for n in ("a", "b", "c")]
    alone = fixed_noisy(ims[1:2], 25, 0)[0][0]
    together = fixed_noisy(ims, 25, 0)
    reordered = fixed_noisy(ims[::-1], 25, 0)
    assert torch.equal(together[1][0], alone) and torch.equal(reordered[1][0], alone)
    assert not torch.equal(together[0][0], together[1][0])  # images differ in their noise
    assert not torch.equal(fixed_noisy(ims[1:2], 25, 1)[0][0], alone)  # the seed moves it
    assert image_noise_seed(0, "b") == image_noise_seed(0, "b") != image_noise_seed(0, "c")


def test_a_test_sets_noise_does_not_depend_on_the_other_sets_loaded() -> None:
    d = OmegaConf.load(CONF / "data" / "denoise_embedded.yaml")
    d.merge_with({"patches_per_epoch": 16, "val_crop": 32})

    def noisy_of(test_images: list[str]) -> dict[str, torch.Tensor]:
        d.test_images = test_images
        test = DATASETS.get("denoise_embedded")(d, seed=0).test
        return {n: item[0] for n, item in zip(test.names, test.items, strict=True)}

    assert torch.equal(noisy_of(["camera", "chelsea"])["chelsea"], noisy_of(["chelsea"])["chelsea"])


# -- the floor beside every result -------------------------------------------------------------


def test_denoise_floor_is_the_noisy_input_scored_the_same_way() -> None:
    task = TASKS.get("denoise")(OmegaConf.create({"name": "denoise"}))
    clean = torch.full((1, 32, 32), 128, dtype=torch.uint8)
    batches = ImageBatches(fixed_noisy([("x", clean, "s")], 30, 0), ["x"])
    floor = evaluate(task, task.noop_model(), batches, CPU)["psnr"]
    noisy = batches.items[0][0]
    expected = psnr(noisy.mul(255).clamp(0, 255).round()[None], clean.float()[None]).item()
    assert floor == pytest.approx(expected)
    assert TASKS.get("classification")(OmegaConf.create({})).noop_model() is None


def test_compare_shows_the_noop_as_a_control_row() -> None:
    def study(method: str, noop: dict[str, float]) -> StudyPoints:
        return StudyPoints(method, 0, method, [0], [0.4], [20.0], [21.0], [{}], noop)

    studies = [study("l1", {"test": 14.5, "val": 14.2}), study("dhp", {"test": 14.5})]
    t = compare_tables(studies, split="test", targets=[0.5], reference=(1.0, 10.0))
    md = _markdown(t, title="x", split="test", targets=[0.5], granularity=0.0, alpha=0.05,
                   provenance=[])  # fmt: skip
    row = next(line for line in md.splitlines() if line.startswith("| no-op |"))
    assert "| 14.50 |" in row
    plain = compare_tables([study("l1", {})], split="test", targets=[0.5], reference=(1.0, 10.0))
    md = _markdown(plain, title="x", split="test", targets=[0.5], granularity=0.0, alpha=0.05,
                   provenance=[])  # fmt: skip
    assert "no-op" not in md


@pytest.mark.slow
def test_a_restoration_run_records_its_floor_and_gain(tmp_path: Path) -> None:
    from mlflow.tracking import MlflowClient

    from harness.config import compose
    from harness.run.pipeline import run

    cfg = compose(
        ["task=denoise", "model=dncnn", "model.depth=3", "model.n_feats=8", "method=l1",
         "target=0.5", "train.epochs=1", "finetune.epochs=0", "measure.latency=false",
         "data.patches_per_epoch=16", "data.batch_size=8", "data.patch_size=32",
         "data.val_crop=48", "data.train_images=[coins,moon]", "data.test_images=[camera]",
         f"outputs={tmp_path}"]
    )  # fmt: skip
    record = run(cfg)
    task = TASKS.get("denoise")(cfg.task)
    data = task.build_data(cfg.data, seed=0)
    assert record["test_metric_noop"] == pytest.approx(
        evaluate(task, task.noop_model(), data.test, CPU)["psnr"]
    )
    assert record["val_metric_noop"] == pytest.approx(
        evaluate(task, task.noop_model(), data.val, CPU)["psnr"]
    )
    assert record["test_gain_db"] == pytest.approx(
        record["test_metric"] - record["test_metric_noop"]
    )
    logged = MlflowClient(record["tracking_uri"]).get_run(record["run_id"]).data.metrics
    assert logged["test_gain_db"] == pytest.approx(record["test_gain_db"])


def test_task_configs_decay_by_dhps_factor_and_default_to_the_tables_gray_choice() -> None:
    sr, dn = (OmegaConf.load(CONF / "task" / f"{t}.yaml") for t in ("sr", "denoise"))
    assert sr.finetune.gamma == dn.finetune.gamma == dn.train.gamma == 0.1  # DHP's option.py
    assert sr.train.gamma == 0.5  # EDSR's own baseline schedule
    assert sr.task.gray_images == "table"
