#!/usr/bin/env bash
# Prepare a container engine on a machine without a Docker daemon or an image registry (idempotent):
#   podman + runc (crun cannot set rlimits / cgroups in a sandbox), a containers.conf that uses runc
#   and no default ulimits, a local Debian bookworm base image made with debootstrap (nothing pulled),
#   and podman's Docker-compatible API socket (docker CLI, docker-py and the Docker provider use it).
# Usage: scripts/container-engine.sh [up|status|down]; prints `export DOCKER_HOST=...` on `up`.
# Settings: LOOPLINE_BASE_IMAGE (default localhost/loopline-bookworm-base:latest),
#           LOOPLINE_DEBIAN_MIRROR (default http://deb.debian.org/debian),
#           LOOPLINE_PODMAN_SOCKET (default /run/loopline-podman/podman.sock),
#           LOOPLINE_EXTRA_CA_DIR (default /usr/local/share/ca-certificates: this machine's own CAs, e.g. a
#           TLS-inspecting egress proxy's, go into the base image so that builds on it reach PyPI).
set -euo pipefail

BASE_IMAGE="${LOOPLINE_BASE_IMAGE:-localhost/loopline-bookworm-base:latest}"
MIRROR="${LOOPLINE_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SOCKET="${LOOPLINE_PODMAN_SOCKET:-/run/loopline-podman/podman.sock}"
EXTRA_CA_DIR="${LOOPLINE_EXTRA_CA_DIR:-/usr/local/share/ca-certificates}"
PIDFILE="$(dirname "$SOCKET")/service.pid"

log() { echo "[engine] $*" >&2; }

install_packages() {
  local missing=()
  command -v podman >/dev/null || missing+=(podman)
  command -v runc >/dev/null || missing+=(runc)
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  # Docker's compose client (Debian's 1.29), for the stack overlay (scripts/podman-stack.sh): it honours
  # depends_on conditions (service_healthy, service_completed_successfully) against podman's Docker API
  command -v docker-compose >/dev/null || missing+=(docker-compose)
  if ((${#missing[@]})); then
    log "apt-get install ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

configure() {
  local conf=/etc/containers/containers.conf
  if ! grep -qs 'runtime = "runc"' "$conf"; then
    log "writing $conf (runc, no default ulimits)"
    mkdir -p /etc/containers
    cat >"$conf" <<'EOF'
# Written by Loopline's scripts/container-engine.sh: crun fails where setrlimit and cgroup setup are forbidden.
[containers]
default_ulimits = []

[engine]
runtime = "runc"
EOF
  fi
}

base_image() {
  if podman image exists "$BASE_IMAGE"; then
    return
  fi
  local root
  root="$(mktemp -d /tmp/loopline-debootstrap.XXXXXX)"
  log "debootstrap bookworm -> $BASE_IMAGE (nothing is pulled; ~1 min)"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >/dev/null
  # update-ca-certificates (run when the image installs ca-certificates) adds these to the system bundle.
  mkdir -p "$root/usr/local/share/ca-certificates"
  if compgen -G "$EXTRA_CA_DIR/*.crt" >/dev/null; then
    cp "$EXTRA_CA_DIR"/*.crt "$root/usr/local/share/ca-certificates/"
  fi
  local bundle=/etc/ssl/certs/ca-certificates.crt
  tar -C "$root" -c . | podman import \
    --change "ENV SSL_CERT_FILE=$bundle" --change "ENV PIP_CERT=$bundle" --change "ENV REQUESTS_CA_BUNDLE=$bundle" \
    - "$BASE_IMAGE" >/dev/null
  rm -rf "$root"
}

socket_up() {
  if [[ -S "$SOCKET" ]] && curl -fsS --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1; then
    return
  fi
  mkdir -p "$(dirname "$SOCKET")"
  rm -f "$SOCKET"
  log "podman system service on unix://$SOCKET"
  nohup podman system service --time=0 "unix://$SOCKET" >"$(dirname "$SOCKET")/service.log" 2>&1 &
  echo $! >"$PIDFILE"
  for _ in $(seq 1 100); do
    curl -fsS --unix-socket "$SOCKET" http://d/_ping >/dev/null 2>&1 && return
    sleep 0.1
  done
  log "the podman socket did not answer; see $(dirname "$SOCKET")/service.log"
  exit 1
}

case "${1:-up}" in
up)
  install_packages
  configure
  base_image
  socket_up
  echo "export DOCKER_HOST=unix://$SOCKET LOOPLINE_BASE_IMAGE=$BASE_IMAGE"
  ;;
status)
  podman --version && podman image exists "$BASE_IMAGE" && echo "base image: $BASE_IMAGE" &&
    curl -fsS --unix-socket "$SOCKET" http://d/_ping && echo " socket: unix://$SOCKET"
  ;;
down)
  if [[ -f "$PIDFILE" ]]; then
    kill "$(cat "$PIDFILE")" 2>/dev/null || true
    rm -f "$PIDFILE" "$SOCKET"
  fi
  ;;
*)
  echo "usage: $0 [up|status|down]" >&2
  exit 2
  ;;
esac
