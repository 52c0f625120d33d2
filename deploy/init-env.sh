#!/usr/bin/env bash
# Write .env for `docker compose` from .env.example: every empty `NAME=` line gets a fresh random
# secret (hex, URL-safe; AIRFLOW_FERNET_KEY a Fernet key; LOOPLINE_API_KEYS the hash of a new
# prediction-API key for the client "default", whose key is printed once), every other line is
# copied unchanged.
# Never overwrites an existing .env.   Usage: bash deploy/init-env.sh [EXAMPLE] [DEST]
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
src="${1:-$root/.env.example}"
dest="${2:-$root/.env}"
if [[ -e "$dest" ]]; then
  echo "$dest exists, left as it is (delete it to generate new secrets)" >&2
  exit 1
fi

random_hex() {
  if command -v openssl >/dev/null; then openssl rand -hex 24
  else python3 -c 'import secrets; print(secrets.token_hex(24))'; fi
}
sha256_hex() {
  if command -v sha256sum >/dev/null; then printf '%s' "$1" | sha256sum | cut -d' ' -f1
  else printf '%s' "$1" | python3 -c 'import hashlib, sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'; fi
}
fernet_key() {  # URL-safe base64 of 32 random bytes
  if command -v openssl >/dev/null; then openssl rand -base64 32 | tr '+/' '-_'
  else python3 -c 'import base64, os; print(base64.urlsafe_b64encode(os.urandom(32)).decode())'; fi
}

empty='^([A-Z][A-Z0-9_]*)=[[:space:]]*$'
umask 077
tmp="$(mktemp "$dest.XXXXXX")"
trap 'rm -f "$tmp"' EXIT
while IFS= read -r line || [[ -n "$line" ]]; do
  if [[ "$line" =~ $empty ]]; then
    name="${BASH_REMATCH[1]}"
    if [[ "$name" == AIRFLOW_FERNET_KEY ]]; then value="$(fernet_key)"
    elif [[ "$name" == LOOPLINE_API_KEYS ]]; then api_key="$(random_hex)"; value="default:sha256:$(sha256_hex "$api_key")"
    else value="$(random_hex)"; fi
    line="$name=$value"
  fi
  printf '%s\n' "$line"
done <"$src" >"$tmp"
mv "$tmp" "$dest"
trap - EXIT
echo "wrote $dest (mode 600); next: docker compose up -d --build"
if [[ -n "${api_key:-}" ]]; then
  echo "prediction API key of client 'default' (shown once; .env keeps only its hash): $api_key"
  echo "  curl -H 'Authorization: Bearer <key>' ...; more clients: loopline api-key <client>"
fi
