#!/usr/bin/env bash
# make demo: what pitrfs does today, end to end, on real data. Everything lives under ./demo/;
# the PostgreSQL server it starts is stopped before the script ends.
set -euo pipefail
BUILD=${BUILD:-build}
SNAP="$PWD/$BUILD/bin/pitr-snap"
PGBIN=/usr/lib/postgresql/15/bin
D="$PWD/demo"
PORT=${DEMO_PORT:-54329}
export PITR_PASSPHRASE=${PITR_PASSPHRASE:-demo-passphrase}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
pg() { su postgres -c "$*"; }

rm -rf "$D"; mkdir -p "$D"; chown postgres "$D"
trap 'pg "$PGBIN/pg_ctl -D $D/pgdata -m fast stop" >/dev/null 2>&1 || true' EXIT

say "a PostgreSQL 15 cluster with pgbench data (scale 10) in $D/pgdata"
pg "$PGBIN/initdb -D $D/pgdata -k -A trust >/dev/null"
pg "$PGBIN/pg_ctl -D $D/pgdata -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1' -l $D/pg.log -w start >/dev/null"
pg "$PGBIN/pgbench -h 127.0.0.1 -p $PORT -i -s 10 -q postgres" 2>&1 | tail -1
pg "$PGBIN/pg_ctl -D $D/pgdata -m fast stop >/dev/null"
du -sh "$D/pgdata"

say "pitr-snap init: an encrypted repository in $D/repo"
"$SNAP" -r "$D/repo" init

say "store the data directory (relation files are cut in 8 KiB pages)"
"$SNAP" -r "$D/repo" store "$D/pgdata" --name day1

say "a day of work: 5000 pgbench transactions, then store again"
pg "$PGBIN/pg_ctl -D $D/pgdata -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1' -l $D/pg.log -w start >/dev/null"
pg "$PGBIN/pgbench -h 127.0.0.1 -p $PORT -n -t 5000 postgres" 2>&1 | grep -E '^tps' | head -1
pg "$PGBIN/pg_ctl -D $D/pgdata -m fast stop >/dev/null"
"$SNAP" -r "$D/repo" store "$D/pgdata" --name day2

say "what is stored"
"$SNAP" -r "$D/repo" list
"$SNAP" -r "$D/repo" info
python3 - "$D/repo" "$SNAP" <<'PY'
import json, subprocess, sys
repo, snap = sys.argv[1], sys.argv[2]
snaps = json.loads(subprocess.check_output([snap, "-r", repo, "list", "--json"]))
read = sum(s["meta"]["stats"]["bytes_in"] for s in snaps)
written = sum(s["meta"]["stats"]["stored_bytes"] for s in snaps)
print(f"\n{read/2**20:.1f} MiB stored in {len(snaps)} snapshots took {written/2**20:.1f} MiB "
      f"in the repository: dedup and compression saved {100*(1-written/read):.1f}%")
PY

say "restore day2 (the current state) and compare it with the data directory"
"$SNAP" -r "$D/repo" restore day2 "$D/restored"
diff -r "$D/pgdata" "$D/restored" && echo "restored tree is identical to the data directory"

say "mount the repository read-only and look inside day1"
mkdir -p "$D/mnt"
"$PWD/$BUILD/bin/mount.pitrfs" "$D/repo" "$D/mnt"
trap 'fusermount3 -u "$D/mnt" 2>/dev/null || true; pg "$PGBIN/pg_ctl -D $D/pgdata -m fast stop" >/dev/null 2>&1 || true' EXIT
ls -l "$D/mnt/snapshots/"
ls -l "$D/mnt/snapshots/day1/" | head -12
du -sh --apparent-size "$D/mnt/snapshots/day1/base"
fusermount3 -u "$D/mnt"

say "done"
cat <<EOT
Everything is under $D (no server left running).
  list snapshots:   PITR_PASSPHRASE=$PITR_PASSPHRASE $SNAP -r $D/repo list
  restore one:      PITR_PASSPHRASE=$PITR_PASSPHRASE $SNAP -r $D/repo restore day1 /some/empty/dir
  mount it:         PITR_PASSPHRASE=$PITR_PASSPHRASE $PWD/$BUILD/bin/mount.pitrfs $D/repo $D/mnt
  unmount:          fusermount3 -u $D/mnt
  clean up:         rm -rf $D
EOT
