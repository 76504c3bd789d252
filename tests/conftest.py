"""Shared fixtures: tiny models and the synthetic world, built once per session."""
from __future__ import annotations

import os

import pytest
import torch

# Two cores on CI: keep intra-op threads modest so parallel helpers/processes do not thrash.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
    yield
