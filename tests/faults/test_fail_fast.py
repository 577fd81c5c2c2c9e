"""Bad inputs fail before any training, in one line that names the file or value and the fix,
with exit code 1 and no traceback (each probe is one the fault audit found handled badly)."""

from __future__ import annotations

import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.faults.conftest import TINY, TINY_STUDY

LOG_LINE = re.compile(r"^(\d{4}/\d\d/\d\d )?\d\d:\d\d:\d\d ")  # ours and MLflow's log lines


def assert_one_line(result, *words: str, max_s: float = 60.0) -> None:
    """`max_s` is generous: a loaded 2-core CI machine; the audit's hangs took minutes."""
    lines = [ln for ln in result.stderr.splitlines() if ln.strip() and not LOG_LINE.match(ln)]
    assert result.code == 1, (result.code, result.stderr[-2000:])
    assert len(lines) == 1 and lines[0].startswith("prunebench: error: "), lines
    assert "Traceback" not in result.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    assert result.stdout == ""  # no JSON line for a refused command
    assert result.seconds < max_s, f"took {result.seconds:.1f} s"


@pytest.fixture
def a_file(tmp_path) -> Path:
    f = tmp_path / "plain-file"
    f.write_text("not a folder")
    return f


def test_unreachable_tracking_server_fails_in_seconds(run_main, tmp_path):
    r = run_main("run", *TINY, f"outputs={tmp_path}", "tracking.uri=http://127.0.0.1:9")
    assert_one_line(
        r, "cannot reach tracking.uri=http://127.0.0.1:9", "start the server", max_s=30
    )  # the audit: 257 s of retries, then a traceback
    assert not (tmp_path / "cache" / "baselines").exists()  # nothing trained


@pytest.mark.parametrize("uri", ["foo://bar", "not-a-uri"])
def test_tracking_uri_without_a_known_scheme(run_main, tmp_path, uri):
    r = run_main("run", *TINY, f"outputs={tmp_path}", f"tracking.uri={uri}")
    assert_one_line(r, f"tracking.uri={uri}", "sqlite:///")


def test_outputs_below_a_regular_file(run_main, a_file):
    r = run_main("run", *TINY, f"outputs={a_file}/out")
    assert_one_line(r, f"outputs={a_file}/out", "is a file, not a folder", "set outputs=")


@pytest.mark.parametrize("tracking", ["null", "explicit"])
def test_unwritable_outputs_fail_before_the_baseline(run_main, tmp_path, tracking):
    # /proc refuses new folders even to root (chmod does not stop root)
    uri = f"sqlite:///{tmp_path}/mlflow.db" if tracking == "explicit" else "null"
    r = run_main("run", *TINY, "outputs=/proc/prunebench-out", f"tracking.uri={uri}")
    assert_one_line(r, "outputs=/proc/prunebench-out", "not writable")


def test_study_storage_below_a_regular_file(run_main, tmp_path, a_file):
    r = run_main(
        "study", *TINY_STUDY, f"outputs={tmp_path}", f"study.storage=sqlite:///{a_file}/x.db"
    )
    assert_one_line(r, "study.storage=", str(a_file), "is a file, not a folder")


@pytest.mark.parametrize("override", ["finetune.epochs=-1", "train.epochs=-3", "prune.steps=0"])
def test_negative_budgets_are_refused(run_main, tmp_path, override):
    r = run_main("run", *TINY, f"outputs={tmp_path}", override)
    key = override.split("=")[0]
    assert_one_line(r, override, f"set {key}=")
    assert not (
        tmp_path / "cache" / "baselines"
    ).exists()  # no untrained baseline cached under a new key


def test_an_empty_search_space_is_refused(run_main, tmp_path):
    r = run_main(
        "study", *TINY, f"outputs={tmp_path}", "method=l1", "study.n_trials=3",
        "study.target=null", "~study.shared_space",
    )  # fmt: skip
    assert_one_line(r, "search space is empty", "prunebench run")


def _write_npz(path: Path) -> None:
    rng = np.random.default_rng(0)
    np.savez_compressed(
        path,
        x_train=rng.integers(0, 255, (40, 8, 8, 3), dtype=np.uint8),
        y_train=rng.integers(0, 10, 40),
        x_test=rng.integers(0, 255, (20, 8, 8, 3), dtype=np.uint8),
        y_test=rng.integers(0, 10, 20),
    )


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "bad member"])
def test_a_corrupt_npz_is_named(run_main, tmp_path, damage):
    path = tmp_path / "data.npz"
    _write_npz(path)
    blob = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(blob[: len(blob) // 2])
    elif damage == "random bytes":
        path.write_bytes(os.urandom(len(blob)))
    else:  # a valid zip whose x_train member is not an array
        with zipfile.ZipFile(path, "w") as z:
            for k in ("x_train", "y_train", "x_test", "y_test"):
                z.writestr(f"{k}.npy", b"\x93NUMPY garbage")
    r = run_main(
        "run", *TINY, f"outputs={tmp_path}/o", "data=npz", f"data.path={path}",
        "data.shape=[3,8,8]",
    )  # fmt: skip
    assert_one_line(r, str(path), "re-create it")


@pytest.mark.parametrize("bad", ["corrupt png", "text named jpg"])
def test_a_bad_image_in_an_image_folder_is_named(run_main, tmp_path, bad):
    from PIL import Image

    root = tmp_path / "imgs"
    for split in ("train", "test"):
        for cls in ("a", "b"):
            (root / split / cls).mkdir(parents=True)
            for i in range(3):
                Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(root / split / cls / f"{i}.png")
    victim = root / "train" / "b" / ("1.png" if bad == "corrupt png" else "notes.jpg")
    if bad == "corrupt png":
        victim.write_bytes(victim.read_bytes()[:30])
    else:
        victim.write_text("these are my notes, not a picture")
    r = run_main(
        "run", *TINY, f"outputs={tmp_path}/o", "data=imagefolder", f"data.root={root}",
        "data.shape=[3,8,8]", "data.num_classes=2",
    )  # fmt: skip
    assert_one_line(r, str(victim), "replace or remove it")


class _Evil:
    """Runs a command when unpickled by a loader that allows arbitrary globals."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_malicious_dhp_checkpoint_is_refused_without_running_it(run_main, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    ckpt_dir.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"model": _Evil(marker)}, ckpt_dir / "dhp_search.pt")
    r = run_main(
        "run", *TINY, f"outputs={tmp_path}/o", "method=dhp", "method.epochs=1",
        f"method.checkpoint_dir={ckpt_dir}", "tracking.enabled=false",
    )  # fmt: skip
    assert_one_line(r, str(ckpt_dir / "dhp_search.pt"), "delete it", max_s=60)
    assert not marker.exists()
