"""DHP tests run their tiny nets on one thread: intra-op threading only adds overhead at this size
and stalls badly when the cores are shared (a 2-core CI box running pytest-xdist)."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
