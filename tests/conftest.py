"""Shared fixtures."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one thread is faster, and immune to OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The embedded suite at test size, run locally once (``all``): the pipeline test goes on
    from it, and the SLURM test compares its table with this one."""
    from snakemake_runner import snakemake, tiny_args

    workdir = tmp_path_factory.mktemp("tiny")
    out = snakemake(*tiny_args(workdir), "--cores", "2", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return workdir
