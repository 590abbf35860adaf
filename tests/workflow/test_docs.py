"""The documentation stays true: README.md and docs/*.md are checked against the repository.

- every relative link resolves, and every ``#anchor`` names a heading of its target (GitHub's
  slugs);
- every command in a fenced ``bash`` block names a program that exists (``snakemake``, ``dvc``,
  ``dicap <job>`` with a real job, ``bash``/``python`` with a file in the repository, anything
  else on the environment's PATH);
- every ``snakemake`` command those blocks show is dry-run (``-n``) from the repository root in
  an empty folder, once per distinct command;
- every job count the docs quote matches a dry run. The convention (docs/testing.md): counts
  sit in a table of ``| rule | jobs |`` rows right after an HTML comment
  ``<!-- plan: <snakemake command> -->``; ``total`` is the whole plan; a number followed by
  "jobs" (or "prompt trainings", "shards", ...) in prose must be one of those counts.
"""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from snakemake_runner import BIN, REPO, job_counts, snakemake

pytestmark = pytest.mark.workflow

DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
# Also link-checked: the other Markdown files a reader reaches from the docs.
LINKED = [*DOCS, REPO / "CHANGELOG.md", REPO / "results" / "README.md", REPO / "results" / "reference" / "embedded.md"]
# Commands shown in the docs that cannot be dry-run here, each with its reason.
NOT_DRY_RUN = {
    "snakemake --profile slurm -n results/table1.csv --configfile config.yaml config.paper.yaml my.yaml":
        "names the reader's own config file (docs/adding-a-dataset.md)",
    "snakemake -n results/table1.csv --configfile config.yaml config.paper.yaml my.yaml":
        "names the reader's own config file and registry (docs/adding-a-dataset.md; its pipeline test runs them)",
}
SHELL_BUILTINS = {"cd", "source", "export", "echo", "set"}
COUNT_WORDS = r"jobs|prompt trainings|trainings|evaluations|shards|downloads"
FENCE = re.compile(r"^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)


# --- reading Markdown ---------------------------------------------------------------------------


def without_code(text: str) -> str:
    """The text with fenced blocks blanked (line count kept) and inline code spans removed."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text, lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("*", "")
    return re.sub(r"[^\w\- ]", "", text.strip().lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    found: set[str] = set()
    for line in without_code(path.read_text()).splitlines():
        heading = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if heading:
            base = slug(heading.group(1))
            name, n = base, 0
            while name in found:
                n += 1
                name = f"{base}-{n}"
            found.add(name)
    return found


def links(path: Path) -> list[str]:
    prose = re.sub(r"<!--.*?-->", "", without_code(path.read_text()), flags=re.S)
    return re.findall(r"\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)", prose)


def bash_commands(path: Path) -> list[str]:
    """Every command line of the file's ``bash`` blocks, continuation lines joined, comments kept."""
    commands = []
    for lang, body in FENCE.findall(path.read_text()):
        if lang != "bash":
            continue
        for line in re.sub(r"\\\n\s*", " ", body).splitlines():
            if line.strip() and not line.strip().startswith("#"):
                commands.append(line.strip())
    return commands


def simple_commands(line: str) -> list[list[str]]:
    """``a && b | c`` -> [[a...], [b...], [c...]], each without leading VAR=value words."""
    words = shlex.split(line, comments=True)
    parts, current = [], []
    for word in words:
        if word in ("&&", "||", ";", "|"):
            parts.append(current)
            current = []
        else:
            current.append(word)
    parts.append(current)
    out = []
    for part in parts:
        while part and re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", part[0]):
            part = part[1:]
        if part:
            out.append(part)
    return out


def plan_tables(path: Path) -> list[tuple[str, dict[str, int]]]:
    """(command, {rule: count}) for every ``<!-- plan: ... -->`` table outside code blocks."""
    text = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), path.read_text())
    tables = []
    for command, rows in re.findall(r"<!--\s*plan:\s*(.+?)\s*-->[ \t]*\n((?:[ \t]*\|.*\n?)+)", text):
        counts = {}
        for row in rows.strip().splitlines()[2:]:  # after the header and the |---| line
            cells = [c.strip() for c in row.strip().strip("|").split("|")]
            counts[cells[0]] = int(cells[1].replace(",", ""))
        tables.append((command, counts))
    return tables


def normal(command: str) -> str:
    """One spelling per plan: the command's words, re-quoted, without its comment and without
    what does not change a dry run (``-n``, ``--cores N``, the default target ``all``)."""
    words, out, skip = shlex.split(command, comments=True), [], False
    for word in words:
        if skip:
            skip = False
        elif word in ("--cores", "-c", "--jobs", "-j"):
            skip = True
        elif word not in ("-n", "--dry-run", "--dryrun", "all"):
            out.append(word)
    return shlex.join(out)


ALL_COMMANDS = [(doc, c) for doc in DOCS for c in bash_commands(doc)]
SNAKEMAKE_COMMANDS = sorted({normal(shlex.join(words)) for _, c in ALL_COMMANDS for words in simple_commands(c) if words[0] == "snakemake"})
PLAN_TABLES = [(doc, normal(command), counts) for doc in DOCS for command, counts in plan_tables(doc)]
DRY_RUNS = sorted((set(SNAKEMAKE_COMMANDS) | {c for _, c, _ in PLAN_TABLES}) - {normal(c) for c in NOT_DRY_RUN})


def dry_run_argv(command: str, workdir: Path) -> list[str]:
    """The command as a dry run building in ``workdir`` (its own ``--directory`` replaced)."""
    words = shlex.split(command, comments=True)[1:]
    argv, own_directory, skip = [], False, False
    for i, word in enumerate(words):
        if skip:
            skip = False
        elif word in ("--directory", "-d"):
            own_directory, skip = True, True
        elif word.startswith("--directory="):
            own_directory = True
        else:
            argv.append(word)
    if not own_directory and "--configfile" not in argv and "--profile" not in argv:
        # run from the repository root, config.yaml is in the working directory
        shutil.copy(REPO / "config.yaml", workdir / "config.yaml")
    # the jobs' details only where a test reads their resources: printing 1,000 jobs costs a second
    quiet = [] if "--set-resources" in argv else ["--quiet", "rules"]  # last: --quiet would take a target
    return ["-n", *argv, *quiet, "--directory", str(workdir)]


@pytest.fixture(scope="module")
def plans(tmp_path_factory):
    """One dry run per distinct command, two at a time: command -> CompletedProcess."""
    def run(command: str):
        workdir = tmp_path_factory.mktemp("plan")
        return command, snakemake(*dry_run_argv(command, workdir), timeout=300)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(run, DRY_RUNS))


# --- the tests ----------------------------------------------------------------------------------


def test_the_docs_are_found():
    assert (REPO / "docs").is_dir() and len(DOCS) >= 8
    assert len(SNAKEMAKE_COMMANDS) >= 10 and PLAN_TABLES


def test_the_readme_is_an_entry_point():
    assert len((REPO / "README.md").read_text().splitlines()) <= 250


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_and_anchor_resolves(doc):
    broken = []
    for target in links(doc):
        if re.match(r"^[a-z][a-z0-9+.-]*:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        resolved = (doc.parent / path).resolve() if path else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and (resolved.suffix != ".md" or anchor not in anchors(resolved)):
            broken.append(f"{target}: no heading with anchor #{anchor} in {resolved.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_user_docs_carry_no_development_history():
    """Issue numbers and paths outside the repository mean nothing to a reader of a clone."""
    found = [f"{doc.relative_to(REPO)}: {m.group(0)!r}" for doc in DOCS for m in
             re.finditer(r"(?i)\bissue\s*#?\d+|\.\./shared|before the warm worker|in a clone of [0-9a-f]{7}", doc.read_text())]
    assert not found, found


def test_every_command_names_a_program_that_exists():
    from dicap.cli import jobs

    known_jobs = set(jobs())
    path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
    missing = []
    for doc, line in ALL_COMMANDS:
        for words in simple_commands(line):
            program, args = words[0], words[1:]
            where = f"{doc.relative_to(REPO)}: {' '.join(words)}"
            if program in SHELL_BUILTINS:
                continue
            if program == "dicap":
                job = args[0].replace("-", "_") if args else ""
                if job not in known_jobs and job not in ("--help", "-h"):
                    missing.append(f"{where}: no dicap job {job!r}")
            elif program == "bash":
                if not args or not (REPO / args[0]).is_file():
                    missing.append(f"{where}: no file {args[:1]}")
            elif program in ("python", "python3"):
                if args[:1] == ["-c"]:
                    compile(args[1], where, "exec")
                elif args[:1] == ["-m"]:
                    if importlib.util.find_spec(args[1]) is None:
                        missing.append(f"{where}: no module {args[1]}")
                elif not args or not (REPO / args[0]).is_file():
                    missing.append(f"{where}: no file {args[:1]}")
            elif shutil.which(program, path=path) is None:
                missing.append(f"{where}: {program} is not installed")
    assert not missing, missing


@pytest.mark.parametrize("command", DRY_RUNS)
def test_every_snakemake_command_plans(plans, command):
    out = plans[command]
    text = out.stdout + out.stderr
    if "--report" in shlex.split(command, comments=True):
        # a report is of a finished run: from nothing the workflow loads, plans, then asks for results
        assert out.returncode == 0 or "marked for report but does not exist" in text, text[-3000:]
    else:
        assert out.returncode == 0, text[-3000:]
        assert "This was a dry-run" in out.stdout, text[-3000:]


@pytest.mark.parametrize(("doc", "command", "counts"), PLAN_TABLES, ids=[f"{d.name}: {c}" for d, c, _ in PLAN_TABLES])
def test_every_quoted_job_count_is_the_dry_runs(plans, doc, command, counts):
    out = plans[command]
    assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
    planned = job_counts(out.stdout)
    planned["total"] = sum(planned.values())
    wrong = {rule: (n, planned.get(rule, 0)) for rule, n in counts.items() if planned.get(rule, 0) != n}
    assert not wrong, f"{doc.relative_to(REPO)}, `{command}`: rule: (quoted, planned) {wrong}"


def test_job_counts_in_prose_come_from_a_plan_table():
    quoted = {n for _, _, counts in PLAN_TABLES for n in counts.values()}
    stray = []
    for doc in DOCS:
        prose = re.sub(r"<!--.*?-->", "", without_code(doc.read_text()), flags=re.S)
        for m in re.finditer(rf"(?<![\w.,])(\d[\d,]*)\s+(?:{COUNT_WORDS})\b", prose):
            if int(m.group(1).replace(",", "")) not in quoted:
                stray.append(f"{doc.relative_to(REPO)}: {m.group(0)!r}")
    assert not stray, f"job counts not in any plan table (docs/testing.md): {stray}"


def test_the_cpu_only_override_asks_for_no_gpu(plans):
    """docs/cluster.md's CPU-only command must set every GPU rule to zero."""
    overrides = [c for c in DRY_RUNS if "--set-resources" in c and "gpu=0" in c]
    assert overrides, "docs/cluster.md shows no CPU-only override"
    for command in overrides:
        out = plans[command]
        assert out.returncode == 0, (out.stdout + out.stderr)[-3000:]
        asking = [line for line in out.stdout.splitlines() if "resources:" in line and re.search(r"\bgpu=[1-9]", line)]
        assert not asking, f"{len(asking)} jobs still ask for a GPU with `{command}`"


REPO_PATH = re.compile(r"`((?:src|tests|benchmarks|scripts|rules|docs|results|slurm|envs|paper)/[\w./-]+\.(?:py|md|yaml|sh|smk|csv|json|rst))`")


@pytest.mark.parametrize("doc", LINKED, ids=lambda p: str(p.relative_to(REPO)))
def test_every_file_the_docs_name_exists(doc):
    """A quoted path (`tests/unit/...py`, `src/dicap/...`) names a file of this checkout, or one the run writes."""
    produced = ("results/", "build/", "logs/")
    text = doc.read_text()
    missing = sorted({p for p in REPO_PATH.findall(text)
                      if not (REPO / p).exists() and not (REPO / "src" / "dicap" / p).exists() and not p.startswith(produced)
                      and "<" not in p and "*" not in p})
    assert not missing, f"{doc.relative_to(REPO)} names files that do not exist: {missing}"
