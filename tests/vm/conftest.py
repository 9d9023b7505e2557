"""Session fixtures of the vm tier: the demo builds every module shares."""

from __future__ import annotations

import pytest

from tests.vm.demo_build import Demo, run_demo


@pytest.fixture(scope="session")
def traditional(tmp_path_factory) -> Demo:
    return run_demo(tmp_path_factory, "traditional")


@pytest.fixture(scope="session")
def frugal(tmp_path_factory) -> Demo:
    return run_demo(tmp_path_factory, "frugal")
