#!/usr/bin/env bash
# Builds the SOPS CLI at a pinned version from its Go module into a cache outside the checkout and
# prints the binary's path. Idempotent; needs `go` and the Go module proxy on first use (several
# minutes on 2 cores, run under nice). Conveyor does not need sops to encrypt or decrypt: a test
# uses it to show that `sops --decrypt` with the cluster's age key reads the documents Conveyor
# writes to the GitOps repo (agent/sops.py), i.e. that they are real SOPS files.
# The go.mod that pins it is generated in the cache directory; no third-party code enters the repo.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" sops github.com/getsops/sops/v3 "${SOPS_VERSION:-v3.13.2}" 1.25.8
