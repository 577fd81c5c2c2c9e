"""`prunebench list` tells, for every dataset, whether it runs offline (nothing to download)."""

from __future__ import annotations

from harness.cli.main import _list


def test_every_dataset_says_whether_it_is_offline():
    datasets = _list()["datasets"]
    assert {"sr_embedded", "denoise_embedded", "sr_folders", "denoise_folders"} <= set(datasets)
    missing = [name for name, info in datasets.items() if "offline" not in info]
    assert not missing, f"datasets without an offline flag: {missing}"
    assert datasets["sr_embedded"]["offline"] and datasets["denoise_embedded"]["offline"]
    assert not datasets["cifar10"]["offline"]  # torchvision's copy may need a download
