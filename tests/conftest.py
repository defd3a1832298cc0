import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(__file__))
torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def global_rng_guard():
    """Fails the test if the code under test consumed or reseeded torch's global RNG."""
    before = torch.random.get_rng_state().clone()
    yield
    assert torch.equal(torch.random.get_rng_state(), before), "global RNG was used"
