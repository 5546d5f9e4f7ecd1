import os

import pytest

# Progress bars would only add noise to test logs.
os.environ.setdefault("NNSA_PROGRESS", "0")

SMOKE_ROOT_NAME = "test"


@pytest.fixture(scope="session")
def smoke_book():
    """Every chapter executed at the smoke profile and the book rendered; returns index.html."""
    from lib.book import paths, runner

    return runner.build("smoke", output_root=paths.ROOT / "_build" / SMOKE_ROOT_NAME)
