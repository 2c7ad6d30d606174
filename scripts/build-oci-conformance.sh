#!/usr/bin/env bash
# Builds the OCI Distribution conformance suite (a Go test binary) at a pinned version into a
# cache outside the checkout and prints the binary's path. Idempotent; needs `go` and access to
# the Go module proxy on first use. No third-party code is ever written into the repository:
# the go.mod that pins the suite is generated in the cache directory.
set -euo pipefail
version="${OCI_CONFORMANCE_VERSION:-v0.0.0-20260831232431-97274622c111}"
module="github.com/opencontainers/distribution-spec/conformance"
cache="${CONVEYOR_CACHE_DIR:-${CONVEYOR_CACHE:-$HOME/.cache/conveyor}}/oci-conformance/$version"
bin="$cache/conformance.test"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "build-oci-conformance: 'go' is not installed" >&2; exit 1; }
mkdir -p "$cache"
cd "$cache"
cat > go.mod <<GOMOD
module conveyor.invalid/oci-conformance

go 1.24

require $module $version
GOMOD
rm -f go.sum
export GOFLAGS=-mod=mod GOTOOLCHAIN=local
nice -n 10 go mod download "$module" >&2
nice -n 10 go test -c -o "$bin.tmp" "$module" >&2
mv "$bin.tmp" "$bin"
echo "$bin"
