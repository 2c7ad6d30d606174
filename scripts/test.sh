#!/usr/bin/env bash
# The project's test command: sets the machine up (idempotent), then runs lint, types and tests.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/setup.sh" | tail -n 1)"
cd "$here"
export PATH="$venv/bin:$PATH"
echo "== ruff" && ruff check src tests benchmarks
echo "== mypy" && mypy
echo "== import contracts" && lint-imports --no-cache
echo "== pytest"
mkdir -p test-output
exec pytest -p no:cacheprovider -rfEs --junitxml=test-output/junit.xml "$@"
