#!/usr/bin/env bash
# A PostgreSQL server of our own for the CDC tests, demo and benchmarks: Debian's packages
# (postgresql and the wal2json logical decoding plugin), a cluster named `weir` created with
# Debian's pg_createcluster, listening on a free loopback port with wal_level=logical, local
# trust authentication (loopback only) — and a second one, `weir_restart`, for the test that
# restarts its server. Idempotent: creates what is missing, starts it if it is
# down (moving it to another port if its own is taken), and writes its URL to
# $WEIR_CACHE/postgres.url, which the tests and the demo read. Prints the URL.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    echo "postgres: need root to run: $*" >&2; return 1; fi
}

installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }

if ! installed postgresql; then
  echo "postgres: installing postgresql" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi
version=$(ls /usr/lib/postgresql | sort -n | tail -n1)
if ! installed "postgresql-$version-wal2json"; then
  echo "postgres: installing postgresql-$version-wal2json" >&2
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "postgresql-$version-wal2json" >/dev/null
fi

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
port_taken() {
  python3 -c 'import socket, sys; s = socket.socket(); sys.exit(s.connect_ex(("127.0.0.1", int(sys.argv[1]))) != 0)' "$1"
}

# Creates (if missing), configures and starts cluster $1; writes its URL to $WEIR_CACHE/$2.
ensure_cluster() {
  local cluster=$1 port conf settings restart status url
  if ! pg_lsclusters -h | awk '{print $1, $2}' | grep -qx "$version $cluster"; then
    port=$(free_port)
    echo "postgres: creating cluster $version/$cluster on port $port" >&2
    as_root pg_createcluster "$version" "$cluster" -p "$port" --start-conf manual -- \
      --auth-local=trust --auth-host=trust >/dev/null
  fi

  # Logical decoding for CDC, slots for the tests' sources, loopback only: a file in the
  # cluster's conf.d (Debian's postgresql.conf includes it), rewritten when it differs, so a
  # cluster from an older version of this script gets the settings at its next (re)start.
  conf="/etc/postgresql/$version/$cluster/conf.d/weir.conf"
  settings="listen_addresses = '127.0.0.1'
wal_level = logical
max_replication_slots = 64
max_wal_senders = 16
max_connections = 200"
  restart=0
  if [ "$(cat "$conf" 2>/dev/null || true)" != "$settings" ]; then
    printf '%s\n' "$settings" | as_root tee "$conf" >/dev/null
    restart=1
  fi

  port=$(pg_conftool -s "$version" "$cluster" show port)
  status=$(pg_lsclusters -h | awk -v v="$version" -v c="$cluster" '$1 == v && $2 == c {print $4}')
  if [ "$status" = online ] && [ "$restart" = 1 ]; then
    as_root pg_ctlcluster "$version" "$cluster" restart
  elif [ "$status" != online ]; then
    if port_taken "$port"; then
      port=$(free_port)
      echo "postgres: port taken; moving cluster $version/$cluster to $port" >&2
      as_root pg_conftool "$version" "$cluster" set port "$port"
    fi
    as_root pg_ctlcluster "$version" "$cluster" start
  fi

  url="postgres://postgres@127.0.0.1:$port/postgres"
  mkdir -p "$WEIR_CACHE"
  echo "$url" > "$WEIR_CACHE/$2"
}

ensure_cluster weir postgres.url
# A second cluster for the one test that restarts its server (a PostgreSQL restart during the
# sink's run), so the tests sharing the first are never disturbed.
ensure_cluster weir_restart postgres-restart.url
echo "$version weir_restart" > "$WEIR_CACHE/postgres-restart.cluster"
cat "$WEIR_CACHE/postgres.url"
