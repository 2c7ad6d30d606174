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
# Tools built from their Go modules (Kubernetes, CoreDNS, Flux, cosign, sops), cached in ~/.cache/conveyor (minutes each on a cold machine,
# seconds once cached). Built here rather than in session fixtures so that no test's timeout covers a
# cold build and a failed build is reported once, by name, instead of as errors of every test using it.
mkdir -p test-output
echo "== tools from the Go module proxy (log: test-output/tools.log)"
: > test-output/tools.log
for tool in conveyor.clusters.binaries conveyor.clusters.coredns conveyor.clusters.flux.build; do
  start=$SECONDS
  python -m "$tool" >>test-output/tools.log 2>&1 || echo "building $tool FAILED (see test-output/tools.log); the tests that need it will say so"
  echo "$tool: $((SECONDS - start)) s"
done
for tool in cosign sops; do
  start=$SECONDS
  "$here/scripts/build-$tool.sh" >>test-output/tools.log 2>&1 || echo "building $tool FAILED (see test-output/tools.log)"
  echo "$tool: $((SECONDS - start)) s"
done
# Test files run on parallel workers (pytest-xdist; one file stays on one worker, so its module
# fixtures are made once), in collection order: tests/conftest.py puts the two demos first, and
# --no-loadscope-reorder keeps xdist from sending files with the most tests first (the one-test Flux
# demo, the longest file, would start last). Three workers on 2 cores: one's waits (clusters starting,
# demos polling) are another's CPU time; measured here, the CPU stayed 100% busy while the demos ran.
# CONVEYOR_TEST_WORKERS=0 runs everything in one process.
workers="${CONVEYOR_TEST_WORKERS:-3}"
echo "== pytest ($workers workers)"
exec pytest -p no:cacheprovider -rfEs --durations=25 --junitxml=test-output/junit.xml \
  -n "$workers" --dist loadfile --no-loadscope-reorder "$@"
