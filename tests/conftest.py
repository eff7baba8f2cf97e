"""Suite-wide fixtures, and the header line that says which CPU code paths this run exercised."""

from __future__ import annotations

import os

import pytest
import torch


def pytest_report_header(config: pytest.Config) -> str:
    """Float results depend on the vector ISA the kernels run (see .ci/avx2.env): say which one this run used."""
    forced = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "MKL_ENABLE_INSTRUCTIONS", "DNNL_MAX_CPU_ISA")
              if k in os.environ}
    note = f" (forced by {', '.join(f'{k}={v}' for k, v in forced.items())})" if forced else ""
    return f"distilkit: torch {torch.__version__}, CPU capability {torch.backends.cpu.get_cpu_capability()}{note}"


@pytest.fixture(autouse=True)
def one_thread():
    """Tests use tiny models, which run faster (and steadier on shared cores) on one thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


#: The tiny recipe route (tests/data/recipe-tiny.yaml) the recipe tests run, with its seed.
TINY_ROUTE_ARGS = ["prune", "--recipe", os.path.join(os.path.dirname(__file__), "data", "recipe-tiny.yaml"),
                   "--budget", "tiny", "--seed", "3"]


@pytest.fixture(scope="session")
def tiny_route(tmp_path_factory) -> str:
    """One finished tiny route, run once for the whole suite: tests only read it, or copy it before changing it."""
    from cli_exit import cli_exit_code

    out = str(tmp_path_factory.mktemp("tiny-route") / "run")
    assert cli_exit_code(TINY_ROUTE_ARGS + ["--out", out]) == 0
    return out
