#!/usr/bin/env bash
# The project's main command: sets the machine up (idempotent), then runs `conveyor` with the
# given arguments (default: `demo`, the whole workflow end to end).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
venv="$("$here/scripts/setup.sh" | tail -n 1)"
if [ "$#" -eq 0 ]; then set -- demo; fi
exec "$venv/bin/conveyor" "$@"
