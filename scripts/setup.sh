#!/usr/bin/env bash
# Idempotent machine set-up for building and testing Weir on a fresh Debian machine of this
# kind. Installs only what is missing; safe to run before every build.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "setup: need root to run: $*" >&2; return 1; fi
}

apt_updated=0
apt_install() {
  local missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ $apt_updated = 0 ]; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    apt_updated=1
  fi
  echo "setup: installing ${missing[*]}" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# RocksDB's Rust bindings run bindgen at build time, which needs libclang (not in the image).
# kcat (librdkafka 2.0.2 inside) is the first real Kafka client of the interop tests; psql
# (Debian's postgresql-client) the first real Postgres client.
apt_install libclang-dev kcat postgresql-client

command -v cargo >/dev/null || { echo "setup: cargo not found; this machine kind ships Rust via rustup" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q '^clippy' || rustup component add clippy rustfmt >/dev/null 2>&1 || true

# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
mkdir -p "$CARGO_TARGET_DIR"

# Keep the persistent target dir bounded: drop incremental state when it grows past 30 GiB.
size_kb=$(du -sk "$CARGO_TARGET_DIR" 2>/dev/null | cut -f1 || echo 0)
if [ "${size_kb:-0}" -gt $((30 * 1024 * 1024)) ]; then
  echo "setup: $CARGO_TARGET_DIR is over 30 GiB; removing incremental caches" >&2
  rm -rf "$CARGO_TARGET_DIR"/*/incremental
fi

# The Python clients of the interop tests, in a virtualenv of our own (never the system's
# site-packages): confluent-kafka (librdkafka inside), kafka-python, psycopg 3 and boto3 (the
# SQS API's). Pinned so a fresh machine tests against the same clients.
venv="$WEIR_CACHE/venv"
if ! "$venv/bin/python" -c "import confluent_kafka, kafka, psycopg, boto3" 2>/dev/null; then
  echo "setup: creating $venv with the Kafka, Postgres and SQS clients" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "confluent-kafka==2.16.1" "kafka-python==3.0.12" "psycopg[binary]==3.3.6" \
    "boto3==1.44.18"
fi

# kafkajs (pure JavaScript, its own protocol code) for the Node interop test, in a directory of
# our own under the cache (never a global install), pinned like the Python clients. The test
# finds it as "$WEIR_CACHE/node/node_modules/kafkajs".
command -v npm >/dev/null || apt_install nodejs npm
node_dir="$WEIR_CACHE/node"
kafkajs_version=2.2.4
installed=$(node -p 'require(process.argv[1]).version' "$node_dir/node_modules/kafkajs/package.json" 2>/dev/null || true)
if [ "$installed" != "$kafkajs_version" ]; then
  echo "setup: installing kafkajs $kafkajs_version into $node_dir" >&2
  mkdir -p "$node_dir"
  npm install --prefix "$node_dir" --no-audit --no-fund --loglevel=error --save-exact "kafkajs@$kafkajs_version" >/dev/null
fi

# PostgreSQL (Debian's packages, with wal2json) for the CDC tests and demo: a cluster `weir` on
# a free loopback port with wal_level=logical; its URL goes to $WEIR_CACHE/postgres.url.
bash "$root/scripts/postgres.sh" >/dev/null
