import os

import pytest
import torch

# Two cores in CI: keep numbers reproducible and leave a core for the rest of the machine.
torch.set_num_threads(int(os.environ.get("LITESAM_TEST_THREADS", "2")))


@pytest.fixture(scope="session")
def official_sam():
    """The PyPI ``segment_anything`` package (official oracle), importable on CPU-only torch."""
    import official_stubs

    official_stubs.install()
    return pytest.importorskip("segment_anything")


@pytest.fixture(scope="session")
def official_mobile_sam():
    """The PyPI ``mobilesam-mirror`` package (``mobile_sam``), importable on CPU-only torch."""
    import official_stubs

    official_stubs.install()
    return pytest.importorskip("mobile_sam")
