import os
import textwrap

import pytest

# Progress bars would only add noise to test logs.
os.environ.setdefault("NNSA_PROGRESS", "0")

SMOKE_ROOT_NAME = "test"


@pytest.fixture(scope="session")
def smoke_book():
    """Every chapter executed at the smoke profile and the book rendered; returns index.html."""
    from lib.book import paths, runner

    return runner.build("smoke", output_root=paths.ROOT / "_build" / SMOKE_ROOT_NAME)


TOY_HEADER = textwrap.dedent("""\
    ---
    kernelspec:
      display_name: Python 3
      language: python
      name: python3
    ---
    """)


@pytest.fixture
def toy_chapter():
    """The source of a one-cell chapter running ``body`` (with a rule-abiding seed knob)."""
    def source(body: str) -> str:
        cells = ["```{code-cell} ipython3\n:tags: [parameters]\n\nprofile = \"book\"\n"
                 "seed = 0  # [0 <= seed < 2 ** 32] the seed\n```",
                 f"```{{code-cell}} ipython3\n{body}\n```"]
        return TOY_HEADER + "\n# A chapter\n\n" + "\n\n".join(cells) + "\n"
    return source
