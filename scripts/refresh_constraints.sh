#!/usr/bin/env bash
# Re-lock constraints.txt: the exact versions a fresh install of ftlab (with its test extra) gets
# today. Run it after changing dependencies in pyproject.toml, then run the test suite with the new
# file (`bash .ci/run` in a fresh clone) before committing it.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
"$venv/bin/pip" install -q torch==2.13.0
"$venv/bin/pip" install -q ".[test]"
{
  echo "# Exact versions of a fresh install, used by the README's commands and .ci/run (pip -c)."
  echo "# Regenerate with: bash scripts/refresh_constraints.sh"
  "$venv/bin/pip" freeze --exclude-editable | grep -v '^ftlab' | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
} > constraints.txt
rm -rf "$(dirname "$venv")"
echo "constraints.txt: $(grep -vc '^#' constraints.txt) packages pinned"
