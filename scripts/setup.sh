#!/usr/bin/env bash
# One-time (idempotent) set-up of a fresh Debian machine for Conveyor: system packages and the
# Python environment. Caches live outside the checkout (~/.cache/conveyor).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache="${CONVEYOR_CACHE_DIR:-${CONVEYOR_CACHE:-$HOME/.cache/conveyor}}"
venv="${CONVEYOR_VENV:-$cache/venv}"
mkdir -p "$cache"

# System packages: git (client + http-backend), PostgreSQL (the scale-out database, used by the
# tests), and the container tools used by the registry, pipelines and clusters.
apt_pkgs=(git postgresql ca-certificates)
# Local Kubernetes clusters: a containerd per node, runc, CNI plugins, and the tools the kubelet
# calls; podman/buildah/skopeo build and move images; busybox-static makes tiny test images.
apt_pkgs+=(containerd runc containernetworking-plugins iptables conntrack ethtool socat iproute2 mount
  podman buildah skopeo busybox-static)
# Pipelines: debootstrap makes the local Debian base images (public registries may be unreachable).
apt_pkgs+=(debootstrap)
# CNCF Distribution (the registry benchmark's baseline and the pull-through cache tests' upstream).
apt_pkgs+=(docker-registry)
# The dashboard's browser tests drive Debian's Chromium (headless) with Playwright.
apt_pkgs+=(chromium)
extra="${CONVEYOR_APT_EXTRA:-}"
# shellcheck disable=SC2206
apt_pkgs+=($extra)
missing=()
for p in "${apt_pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "setup: installing ${missing[*]}" >&2
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Every local cluster's kubelet and containerd hold inotify instances; the kernel's default of 128
# per user runs out with a few clusters ("inotify_init: too many open files").
if [ "$(cat /proc/sys/fs/inotify/max_user_instances 2>/dev/null || echo 1024)" -lt 1024 ]; then
  sysctl -qw fs.inotify.max_user_instances=1024 2>/dev/null \
    || echo "setup: could not raise fs.inotify.max_user_instances; several local clusters may not start" >&2
fi

# Python environment (Python >= 3.11).
py="${PYTHON:-python3}"
if [ ! -x "$venv/bin/python" ]; then
  "$py" -m venv "$venv"
fi
stamp="$venv/.conveyor-deps"
want="$(sha256sum "$here/pyproject.toml" | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  "$venv/bin/pip" install -q --upgrade pip
  "$venv/bin/pip" install -q -e "$here[dev]"
  echo "$want" > "$stamp"
else
  # The checkout may have moved (CI clones elsewhere): repoint the editable install quietly.
  "$venv/bin/pip" install -q --no-deps -e "$here" >/dev/null
fi
# htmx for the dashboard, from the npm registry into the cache (served by the app, never committed).
htmx_version="2.0.4"
if command -v npm >/dev/null && { [ ! -f "$cache/web/node_modules/htmx.org/dist/htmx.min.js" ] \
  || ! grep -q "\"version\": \"$htmx_version\"" "$cache/web/node_modules/htmx.org/package.json" 2>/dev/null; }; then
  mkdir -p "$cache/web"
  npm install --silent --no-audit --no-fund --prefix "$cache/web" "htmx.org@$htmx_version" >&2 \
    || echo "setup: htmx not installed; the dashboard works without it" >&2
fi
echo "$venv"
