import sys
from pathlib import Path

import pytest
import torch

# The helper modules (_models.py, _compare.py) live next to the tests.
sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _deterministic() -> None:
    torch.manual_seed(0)
