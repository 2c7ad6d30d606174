#!/usr/bin/env bash
# Builds Sigstore's cosign CLI at a pinned version from its Go module into a cache outside the
# checkout and prints the binary's path. Idempotent; needs `go` and the Go module proxy on first
# use (about 8 minutes on 2 cores, run under nice). Conveyor does not need cosign to sign or
# verify: a test uses it to show that Conveyor's signatures are ones `cosign verify` accepts.
# v2.6.5 is the newest v2 release the proxy serves that builds with Go 1.26 (v3 changes the
# default signature format to bundles; v2 reads the `sha256-<hex>.sig` tag scheme by default).
# The go.mod that pins it is generated in the cache directory; no third-party code enters the repo.
set -euo pipefail
exec "$(dirname "${BASH_SOURCE[0]}")/go-tool.sh" cosign github.com/sigstore/cosign/v2 "${COSIGN_VERSION:-v2.6.5}" 1.25.0
