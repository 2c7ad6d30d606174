#!/usr/bin/env bash
# The project's main command: sets the machine up (idempotent), then runs `conveyor` with the
# given arguments (default: `up`, the server). Becomes `conveyor demo` once the demo exists.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/setup.sh" | tail -n 1)"
if [ "$#" -eq 0 ]; then set -- up; fi
exec "$venv/bin/conveyor" "$@"
