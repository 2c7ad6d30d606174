#!/usr/bin/env bash
# Builds Sigstore's cosign CLI at a pinned version from its Go module into a cache outside the
# checkout and prints the binary's path. Idempotent; needs `go` and the Go module proxy on first
# use (about 8 minutes on 2 cores, run under nice). Conveyor does not need cosign to sign or
# verify: a test uses it to show that Conveyor's signatures are ones `cosign verify` accepts.
# v2.6.5 is the newest v2 release the proxy serves that builds with Go 1.26 (v3 changes the
# default signature format to bundles; v2 reads the `sha256-<hex>.sig` tag scheme by default).
# The go.mod that pins it is generated in the cache directory; no third-party code enters the repo.
set -euo pipefail
version="${COSIGN_VERSION:-v2.6.5}"
module="github.com/sigstore/cosign/v2"
cache="${CONVEYOR_CACHE_DIR:-${CONVEYOR_CACHE:-$HOME/.cache/conveyor}}/cosign/$version"
bin="$cache/cosign"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "build-cosign: 'go' is not installed" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
cd "$cache"
cat > go.mod <<GOMOD
module conveyor.invalid/cosign

go 1.25.0

require $module $version
GOMOD
rm -f go.sum
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
nice -n 19 go mod download "$module" >&2
nice -n 19 go build -trimpath -o "$bin.tmp" "$module/cmd/cosign" >&2
mv "$bin.tmp" "$bin"
echo "$bin"
