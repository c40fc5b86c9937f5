# Sourced by the project's scripts: build caches outside the clone (see ../shared/build.md).
# - CARGO_TARGET_DIR: persistent, so CI on the same machine reuses dependency builds.
# - ROCKSDB_LIB_DIR + ROCKSDB_STATIC: a librocksdb.a built once and shared by every profile,
#   keyed by the librocksdb-sys version (filled by scripts/cache-rocksdb.sh after a build).
WEIR_CACHE="${WEIR_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/weir}"
export WEIR_CACHE
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$WEIR_CACHE/target}"
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-1}"
_weir_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_rocksdb_key=""
if [ -f "$_weir_root/Cargo.lock" ]; then
  _rocksdb_key=$(awk '/^name = "librocksdb-sys"/{getline; gsub(/[^0-9A-Za-z.+-]/,"",$3); print $3}' "$_weir_root/Cargo.lock" | head -n1)
fi
# The cached library is built with the dev profile's opt-level for librocksdb-sys (see
# Cargo.toml); the key says so, so a change of either rebuilds it.
[ -n "$_rocksdb_key" ] && _rocksdb_key="${_rocksdb_key}-O2"
if [ -n "$_rocksdb_key" ] && [ -f "$WEIR_CACHE/rocksdb/$_rocksdb_key/librocksdb.a" ]; then
  export ROCKSDB_LIB_DIR="$WEIR_CACHE/rocksdb/$_rocksdb_key"
  export ROCKSDB_STATIC=1
fi
export WEIR_ROCKSDB_KEY="$_rocksdb_key"
unset _weir_root _rocksdb_key
