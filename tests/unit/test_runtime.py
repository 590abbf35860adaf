"""Process set-up (runtime.py): the log levels a job runs with."""

from __future__ import annotations

import logging

import pytest

from dicap.runtime import LOG_LEVEL_ENV, configure_logging


@pytest.fixture
def levels():
    """Give the root and dicap loggers their levels back after the test."""
    root, dicap = logging.getLogger(), logging.getLogger("dicap")
    before = root.level, dicap.level
    yield root, dicap
    root.setLevel(before[0])
    dicap.setLevel(before[1])


def test_by_default_dicap_speaks_and_the_libraries_root_logger_chatter_is_quiet(levels):
    root, dicap = levels
    root.setLevel(logging.INFO)  # as cli.run's basicConfig leaves it
    configure_logging({})
    assert logging.getLogger("dicap.jobs.evaluate").isEnabledFor(logging.INFO)
    assert not root.isEnabledFor(logging.INFO)  # open_clip's logging.info(...)
    assert not logging.getLogger("some_library").isEnabledFor(logging.INFO)
    assert root.isEnabledFor(logging.WARNING) and logging.getLogger("some_library").isEnabledFor(logging.WARNING)


@pytest.mark.parametrize("value, level", [("INFO", logging.INFO), ("debug", logging.DEBUG), (" warning ", logging.WARNING),
                                          ("ERROR", logging.ERROR)])
def test_the_environment_sets_one_level_for_everyone(levels, value, level):
    root, dicap = levels
    configure_logging({LOG_LEVEL_ENV: value})
    assert root.level == level and dicap.level == level
    assert logging.getLogger("dicap.counterfactual.generate").getEffectiveLevel() == level


@pytest.mark.parametrize("value", ["loud", "5", "INFOO"])
def test_an_unknown_level_is_one_line_naming_the_variable(levels, value):
    with pytest.raises(ValueError, match=f"{LOG_LEVEL_ENV}={value!r}: must be one of DEBUG, INFO, WARNING, ERROR"):
        configure_logging({LOG_LEVEL_ENV: value})
