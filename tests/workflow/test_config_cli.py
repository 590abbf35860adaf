"""The configuration as users give it to Snakemake: command-line overrides work, and bad values
or YAML stop the run before any job, in one line.  (That every command the docs show plans is
tests/workflow/test_docs.py's.)"""

from __future__ import annotations

import shlex
import shutil
from pathlib import Path

import pytest

from snakemake_runner import ENV, REPO, job_counts, snakemake


def plan(command: str, workdir: Path, timeout: int = 120):
    """A documented command as a dry run, from the repository root as users run it, planned in an
    empty ``workdir`` (given config.yaml, as a fresh clone has) so existing results don't matter."""
    argv = shlex.split(command, comments=True)[1:]
    shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    if "--configfile" not in argv and "--profile" not in argv:
        argv = ["--configfile", str(REPO / "config.yaml"), *argv]  # --directory: config.yaml is looked up there
    return snakemake("-n", *argv, "--directory", str(workdir), timeout=timeout)


def test_nested_overrides_reach_the_plan(tmp_path):
    """``counterfactual={shards: 4}`` is merged into the block (one key changes) and read as a number."""
    full = job_counts(plan("snakemake --cores 2", tmp_path).stdout)
    base = job_counts(plan("snakemake --cores 2 --config seeds='[1]'", tmp_path).stdout)
    out = plan("snakemake --cores 2 --config 'counterfactual={shards: 4}' seeds='[1]'", tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    counts = job_counts(out.stdout)
    assert counts["make_split"] == base["make_split"] == full["make_split"] // 3  # one seed of three
    assert counts["counterfactual_shard"] == 2 * base["counterfactual_shard"]  # 4 shards instead of config's 2
    assert counts["merge_counterfactuals"] == base["merge_counterfactuals"]  # the block's other keys stayed


@pytest.mark.parametrize(
    ("how", "value", "shown"),
    [("file", ".nan", "nan"), ("file", ".inf", "inf"), ("file", "-1", "-1"),
     ("config", ".nan", "nan"), ("config", ".inf", "inf"), ("config", "-1", "-1")],
)
def test_a_bad_guidance_scale_stops_before_any_job_with_one_line(tmp_path, how, value, shown):
    """Today ``guidance_scale: .nan`` passes, every counterfactual comes out black, and Table 1 is rewritten."""
    if how == "file":
        bad = tmp_path / "bad.yaml"
        bad.write_text(f"counterfactual:\n  guidance_scale: {value}\n")
        args = ["--configfile", str(REPO / "config.yaml"), str(bad)]
    else:
        args = ["--configfile", str(REPO / "config.yaml"), "--config", f"counterfactual={{guidance_scale: {value}}}"]
    out = snakemake("-n", *args, "--directory", str(tmp_path))
    assert out.returncode != 0
    line = f"config: key 'counterfactual.guidance_scale' = {shown}: must be a finite number >= 0"
    assert line in (out.stdout + out.stderr).splitlines(), (out.stdout + out.stderr)[-2000:]
    assert "rule " not in out.stdout and not (tmp_path / "build").exists()


def test_a_tab_indented_config_yaml_names_file_line_and_column(tmp_path):
    """Today: "Config file is not valid JSON or YAML", with no file, line or column."""
    text = (REPO / "config.yaml").read_text().replace("\n  shots: 16", "\n\tshots: 16")
    (tmp_path / "config.yaml").write_text(text)
    line = 1 + text.split("\n").index("\tshots: 16")
    out = snakemake("-n", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path))
    assert out.returncode != 0
    assert f"config.yaml:{line}:1: not valid YAML: found character '\\t'" in out.stdout + out.stderr, out.stderr[-2000:]
    assert not (tmp_path / "build").exists()


@pytest.mark.parametrize("value", ["nativ", "avx512"])
def test_a_bad_cpu_kernel_choice_stops_before_any_job_with_one_line(tmp_path, value):
    """Without the check the warm worker and every job would stop on it, one by one."""
    out = snakemake("-n", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path),
                    env={**ENV, "DICAP_CPU_KERNELS": value})
    assert out.returncode != 0
    line = f"DICAP_CPU_KERNELS='{value}': must be one of avx2, native (or unset)"
    assert line in (out.stdout + out.stderr).splitlines(), (out.stdout + out.stderr)[-2000:]
    assert "rule " not in out.stdout and not (tmp_path / "build").exists()
    assert snakemake("-n", "--configfile", str(REPO / "config.yaml"), "--directory", str(tmp_path),
                     env={**ENV, "DICAP_CPU_KERNELS": "native"}).returncode == 0
