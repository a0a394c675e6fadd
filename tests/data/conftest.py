"""Small generated jet samples, made once per test session and shared by the data tests.

``small_qcd_path`` / ``small_top_path`` / ``small_w_path`` are schema files written by
``generate_jets`` (seed 1, one worker, default cuts); ``small_*_sample`` are the same files read
back with ``read_jets``. Generation takes a few seconds per sample.
"""

import pytest

from jaxebm.data.generate import GenerationConfig, generate_jets
from jaxebm.data.io import read_jets

SMALL_SAMPLE_SIZES = {"qcd": 200, "top": 150, "w": 150}


def _generated_path(tmp_path_factory, process):
    path = tmp_path_factory.mktemp("generated") / f"{process}.h5"
    config = GenerationConfig(process=process, num_jets=SMALL_SAMPLE_SIZES[process], seed=1)
    generate_jets(config, out_path=str(path), progress=False)
    return path


@pytest.fixture(scope="session")
def small_qcd_path(tmp_path_factory):
    return _generated_path(tmp_path_factory, "qcd")


@pytest.fixture(scope="session")
def small_top_path(tmp_path_factory):
    return _generated_path(tmp_path_factory, "top")


@pytest.fixture(scope="session")
def small_w_path(tmp_path_factory):
    return _generated_path(tmp_path_factory, "w")


@pytest.fixture(scope="session")
def small_qcd_sample(small_qcd_path):
    return read_jets(small_qcd_path)


@pytest.fixture(scope="session")
def small_top_sample(small_top_path):
    return read_jets(small_top_path)


@pytest.fixture(scope="session")
def small_w_sample(small_w_path):
    return read_jets(small_w_path)
