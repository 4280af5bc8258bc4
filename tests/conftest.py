import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Generated SUMO files go to a cache private to this test session."""
    os.environ["COSIM_CACHE"] = str(tmp_path_factory.mktemp("cosim-cache"))
