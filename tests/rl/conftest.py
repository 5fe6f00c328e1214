import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def _cpu_settings():
    # the CPU reference Mamba-1 scan produces denormal floats whose arithmetic is ~100x slower; and these
    # tiny models gain nothing from threads, while a busy machine makes OpenMP threads spin for seconds
    threads = torch.get_num_threads()
    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
    torch.set_flush_denormal(False)
