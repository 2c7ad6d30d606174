#!/usr/bin/env bash
# Builds the SOPS CLI at a pinned version from its Go module into a cache outside the checkout and
# prints the binary's path. Idempotent; needs `go` and the Go module proxy on first use (several
# minutes on 2 cores, run under nice). Conveyor does not need sops to encrypt or decrypt: a test
# uses it to show that `sops --decrypt` with the cluster's age key reads the documents Conveyor
# writes to the GitOps repo (agent/sops.py), i.e. that they are real SOPS files.
# The go.mod that pins it is generated in the cache directory; no third-party code enters the repo.
set -euo pipefail
version="${SOPS_VERSION:-v3.13.2}"
module="github.com/getsops/sops/v3"
cache="${CONVEYOR_CACHE_DIR:-${CONVEYOR_CACHE:-$HOME/.cache/conveyor}}/sops/$version"
bin="$cache/sops"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "build-sops: 'go' is not installed" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
cd "$cache"
cat > go.mod <<GOMOD
module conveyor.invalid/sops

go 1.25.8

require $module $version
GOMOD
rm -f go.sum
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
nice -n 19 go mod download "$module" >&2
nice -n 19 go build -trimpath -o "$bin.tmp" "$module/cmd/sops" >&2
mv "$bin.tmp" "$bin"
echo "$bin"
