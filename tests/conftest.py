"""Shared fixtures, and the test tiers; helpers that are not fixtures live in helpers.py,
local_mirror.py and snakemake_runner.py (importable from every test: ``pythonpath`` in pyproject.toml).

A test's tier is the folder it lives in (tests/README.md): ``unit/`` (in-process, no subprocess; a
bare ``pytest`` runs only these), ``workflow/`` (dry runs, lint, commands in their own processes),
``pipeline/`` (the tiny suite end to end) and ``slurm/`` (a live single-node cluster).  The hook
below marks each test with its folder's tier, so ``-m unit`` and friends select by folder, and
refuses a test outside those folders or marked with another folder's tier.
"""

import os
import threading
from http.server import ThreadingHTTPServer
from pathlib import Path

import pytest
import torch
from hypothesis.configuration import set_hypothesis_home_dir

from dicap import runtime  # noqa: F401  (first: it puts the process offline, HF_HUB_OFFLINE, as every job is)
from dicap.config import load_config

REPO = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIERS = ("unit", "workflow", "pipeline", "slurm")  # the folders under tests/, and the markers they give
# Tests whose tier is not their folder's, each with its reason: keep this short (tests/README.md).
TIER_EXCEPTIONS: dict[str, str] = {}

# Hypothesis keeps its data (.hypothesis/) in the working directory: not in the shared checkout, but
# in one place kept between runs, as its character tables take seconds to build in a fresh one.
set_hypothesis_home_dir(Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "dicap-hypothesis")


def tier_of(item: pytest.Item) -> str | None:
    """The tier of a test: its exception, else the first folder of its path under tests/."""
    exception = TIER_EXCEPTIONS.get(item.nodeid.split("[", 1)[0])
    path = Path(item.path).resolve()
    if exception is not None or not path.is_relative_to(TESTS):
        return exception
    first = path.relative_to(TESTS).parts[0]
    return first if first in TIERS else None


@pytest.hookimpl(tryfirst=True)  # before -m deselects: selection sees the tier markers
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    problems = []
    for item in items:
        tier = tier_of(item)
        if tier is None:
            problems.append(f"{item.nodeid}: not under tests/{{{','.join(TIERS)}}}/, so in no tier")
            continue
        marked = {m.name for m in item.iter_markers() if m.name in TIERS}
        if marked - {tier}:
            problems.append(f"{item.nodeid}: marked {sorted(marked)} but lives in tests/{tier}/: move it")
            continue
        item.add_marker(getattr(pytest.mark, tier))
    if problems:
        raise pytest.UsageError("tests in the wrong place (tests/README.md, 'Tiers'):\n  " + "\n  ".join(problems))


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one thread is faster, and immune to OpenMP spin-waits on a busy machine."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The embedded suite at test size, run locally once (``all``): the pipeline tests read it or
    go on from a copy of it (tests/pipeline/), and the SLURM test compares its table with this one."""
    from snakemake_runner import snakemake, tiny_args

    workdir = tmp_path_factory.mktemp("tiny")
    out = snakemake(*tiny_args(workdir), "--cores", "2", timeout=900)
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    return workdir


@pytest.fixture(scope="module")
def config() -> dict:
    """config.yaml, validated (the schema's defaults)."""
    return load_config(REPO / "config.yaml")


@pytest.fixture(scope="module")
def clip_model():
    """A tiny open_clip CLIP whose text tower tells the class names of helpers.NAMES apart."""
    open_clip = pytest.importorskip("open_clip")
    from helpers import CONTEXT

    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=32,
        vision_cfg={"image_size": 16, "patch_size": 8, "width": 32, "layers": 1, "head_width": 32, "mlp_ratio": 2.0},
        text_cfg={"context_length": CONTEXT, "vocab_size": 49408, "width": 32, "heads": 1, "layers": 1, "mlp_ratio": 2.0},
    )
    with torch.no_grad():
        # open_clip's init (std 0.02 / 0.01) leaves a 1-layer tower nearly blind to the tokens
        # (cosine 0.9999 between classes); larger embeddings make every token position matter,
        # so the equality test below can tell a wrong prompt from the right one.
        model.token_embedding.weight.normal_(std=0.5)
        model.positional_embedding.normal_(std=0.1)
    return model.eval().requires_grad_(False)


@pytest.fixture
def server():
    """The local dataset host (local_mirror.py): files, requests and failure switches on the object."""
    from local_mirror import Handler

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    srv.files, srv.requests, srv.content_types = {}, [], {}
    srv.truncate_once, srv.fail_once, srv.ignore_range = {}, {}, False
    srv.base = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()
