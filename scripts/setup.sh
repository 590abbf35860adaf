#!/usr/bin/env bash
# Create the virtual environment and install the pinned project into it; a no-op (under a
# second) when pyproject.toml has not changed since the last install.  The environment is
# .venv in the checkout, or $DICAP_VENV (one environment shared by several checkouts).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
venv=$(realpath -m "${DICAP_VENV:-.venv}")
stamp=$venv/.dicap-install-stamp
want=$(sha256sum pyproject.toml | cut -d' ' -f1)
if [[ -f $stamp && "$(cat "$stamp")" == "$want" && -x $venv/bin/dicap ]]; then
  exit 0
fi
echo "installing the pinned environment into $venv (first time: a few minutes) ..." >&2
[[ -x $venv/bin/python ]] || "$PYTHON" -m venv "$venv"
# Quiet pip, but keep real errors visible (local-index warnings are noise here).
if ! "$venv/bin/python" -m pip install --quiet -e '.[test]' > "$venv/pip-install.log" 2>&1; then
  grep -v "^WARNING: Location" "$venv/pip-install.log" >&2
  exit 1
fi
echo "$want" > "$stamp"
