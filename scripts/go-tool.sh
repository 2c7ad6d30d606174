#!/usr/bin/env bash
# Builds one Go command at a pinned module version into a cache outside the checkout and prints the
# binary's path: go-tool.sh NAME MODULE VERSION GO_DIRECTIVE. Idempotent and file-locked (a second
# builder waits, then finds the result); needs `go` and the Go module proxy on first use. The go.mod
# that pins it is generated in the cache directory; no third-party code enters the repo.
set -euo pipefail
name="$1" module="$2" version="$3" godirective="$4"
cache="${CONVEYOR_CACHE_DIR:-${CONVEYOR_CACHE:-$HOME/.cache/conveyor}}/$name/$version"
bin="$cache/$name"
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
command -v go >/dev/null || { echo "build-$name: 'go' is not installed" >&2; exit 1; }
mkdir -p "$cache"
exec 9>"$cache/.build.lock"
flock 9
if [ -x "$bin" ]; then
  echo "$bin"
  exit 0
fi
cd "$cache"
cat > go.mod <<GOMOD
module conveyor.invalid/$name

go $godirective

require $module $version
GOMOD
rm -f go.sum
export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=0
nice -n 19 go mod download "$module" >&2
nice -n 19 go build -trimpath -o "$bin.tmp" "$module/cmd/$name" >&2
mv "$bin.tmp" "$bin"
echo "$bin"
