#!/usr/bin/env bash
# After a build: keep the bundled librocksdb.a outside the target dir, keyed by the
# librocksdb-sys version, so later builds (any profile, any target dir) link it instead of
# compiling RocksDB's C++ again (20-25 minutes on 2 cores). No-op until RocksDB is a dependency.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
# shellcheck source=scripts/env.sh
source "$root/scripts/env.sh"
[ -n "${WEIR_ROCKSDB_KEY:-}" ] || exit 0
dest="$WEIR_CACHE/rocksdb/$WEIR_ROCKSDB_KEY"
[ -f "$dest/librocksdb.a" ] && exit 0
# The newest build: older ones (another opt-level or version) may still be in the target dir.
lib=$(find "$CARGO_TARGET_DIR" -path '*librocksdb-sys-*/out/librocksdb.a' -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -n1 | cut -d' ' -f2- || true)
[ -n "$lib" ] || exit 0
mkdir -p "$dest"
cp "$lib" "$dest/librocksdb.a.tmp" && mv "$dest/librocksdb.a.tmp" "$dest/librocksdb.a"
echo "cache-rocksdb: cached $lib as $dest/librocksdb.a" >&2
