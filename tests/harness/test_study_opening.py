"""Reading an existing study (compare, a control's source): a missing one is named, with the
command that makes it."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from harness.config import compose
from harness.errors import DataNotFoundError
from harness.study.opening import load_existing_study


def test_a_missing_study_is_named_with_the_command_that_makes_it(tmp_path):
    cfg = compose(["data=digits", "model=resnet20", "method=l1", f"outputs={tmp_path}"])
    sub = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    sub.study.name = None
    with pytest.raises(DataNotFoundError, match=r"no study '\S+l1\S*' in .*; run `prunebench st"):
        load_existing_study(sub, "; run `prunebench study method=l1 seed=0 …` first")
