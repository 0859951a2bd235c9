#!/usr/bin/env bash
# provision.sh [VERSION...]  — real PostgreSQL bindirs for pgscale's tests (default: 15 16 17 18).
#
# Idempotent and cached: each version lands in $PGSCALE_TESTBED/pgV and is marked complete only
# after `postgres -V` ran from it; extension packages (pg_repack for 17) are added to it once each. Nothing outside the cache dir is touched (private apt state, no
# system apt sources). Prints "V BINDIR" per version on stdout. Trees cannot be moved after
# patchelf (absolute interpreter path), so an incomplete tree is rebuilt, never relocated.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
if [[ $(id -u) == 0 ]]; then default=/var/cache/pgscale-testbed; else default=${XDG_CACHE_HOME:-$HOME/.cache}/pgscale-testbed; fi
DIR=${PGSCALE_TESTBED:-$default}
export PGENV_CACHE=$DIR/downloads
mkdir -p "$DIR"
# servers run as the unprivileged postgres user when we are root: it must reach the binaries
chmod 755 "$DIR"
versions=("$@"); ((${#versions[@]})) || versions=(15 16 17 18)
exec 9>"$DIR/.lock"; flock 9

build() {
  local v=$1 prefix=$DIR/pg$1
  [[ -f $prefix/.complete ]] && return 0
  rm -rf "$prefix"
  if [[ $v == 16 ]]; then
    build 17  # the v16 bindir borrows 17's client programs and pg_controldata
    "$here/get-pg16.sh" "$prefix" "$DIR/pg17" >&2
  else
    "$here/get-pg.sh" "$v" "$prefix" >&2
  fi
  "$prefix/bin/postgres" -V >/dev/null
  touch "$prefix/.complete"
}

# extension packages added into a built tree (servers from it may run: get-pg.sh --add replaces nothing)
declare -A extensions=([17]="postgresql-17-repack")
add_extensions() {
  local v=$1 prefix=$DIR/pg$1 pkg
  for pkg in ${extensions[$v]:-}; do
    [[ -f $prefix/.added-$pkg ]] && continue
    "$here/get-pg.sh" "$v" "$prefix" --add "$pkg" >&2
    touch "$prefix/.added-$pkg"
  done
}

for v in "${versions[@]}"; do
  build "$v"
  add_extensions "$v"
  # the 16 tree's pg_resetwal is a script of ours: a cached tree gets the current one
  [[ $v == 16 ]] && "$here/get-pg16.sh" "$DIR/pg16" "$DIR/pg17" --shim
  echo "$v $DIR/pg$v/bin"
done
