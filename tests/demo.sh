#!/usr/bin/env bash
# make demo: a 3-node PostgreSQL 15 cluster (coordinator coord, workers w1 and w2) under ./demo/,
# each node with its pitr-agent over mutual TLS and WAL archived into one encrypted repository;
# two cluster-wide snapshots with changes between them, the repository mounted and browsed, the
# storage report, and the commands to restore and to clean up. Everything it starts is stopped
# at the end; demo/start.sh and demo/stop.sh bring the cluster back and take it down.
# The agents and archive_command run as postgres, pitr-snap and the mount as root, on one
# repository owned by postgres (docs/OPERATIONS.md 8.3).
set -euo pipefail

# demo_start_agent LOG COMMAND...: start an agent in the background, its output appended to
# LOG and its pid written to LOG.pid, and wait until this start serves: a "serving on" line in
# what LOG gained since, from a process still alive. An agent that exits first (a port already
# taken, a bad certificate) or does not serve within 10 s fails the start loudly, with what it
# said. demo/start.sh carries this function; tests/integration/test-demo-start.sh runs it.
demo_start_agent() {
    local log=$1 from pid i
    shift
    from=$(stat -c %s "$log" 2>/dev/null || echo 0)
    "$@" >>"$log" 2>&1 &
    pid=$!
    echo "$pid" >"$log.pid"
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        [[ $(tail -c +$((from + 1)) "$log") == *'serving on'* ]] && kill -0 "$pid" 2>/dev/null && return 0
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        echo "agent (pid $pid, log $log) is not serving after 10 s; stopped it:" >&2
        kill -TERM "$pid" 2>/dev/null || true
    else
        wait "$pid" 2>/dev/null || true
        echo "agent (pid $pid, log $log) exited before it served:" >&2
    fi
    tail -c +$((from + 1)) "$log" | tail -n 20 | sed 's/^/  /' >&2
    return 1
}
# Sourced (by the test): the function only.
[[ ${BASH_SOURCE[0]} != "$0" ]] && return 0

BUILD=${BUILD:-build}
BIN="$PWD/$BUILD/bin"
PGBIN=/usr/lib/postgresql/15/bin
D="$PWD/demo"
export PITR_PASSPHRASE=${PITR_PASSPHRASE:-demo-passphrase}
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
fail() { echo "demo: $*" >&2; exit 1; }
as_pg() { runuser -u postgres -- "$@"; }

if [[ -d $D && -x $D/stop.sh ]]; then "$D"/stop.sh >/dev/null 2>&1 || true; fi
fusermount3 -u "$D/mnt" 2>/dev/null || true
rm -rf "$D"; mkdir -p "$D"
NODES=(coord w1 w2)
declare -A PORT=([coord]=54331 [w1]=54332 [w2]=54333) APORT=([coord]=18081 [w1]=18082 [w2]=18083)

say "TLS: a cluster CA, a certificate for the agents and one for the orchestrator"
. "$PWD/tests/integration/lib-tls.sh"
make_pki "$D/pki" >/dev/null
ls "$D/pki" | grep -E '^(ca|server|client)\.(crt|key)$' | tr '\n' ' '; echo

chown postgres: "$D"
say "pitr-snap init: an encrypted repository in $D/repo owned by postgres, and a key file"
# The directory's owner is the repository's: root's init and every later command as root give
# what they create to postgres, so the agents and archive_command (postgres) can use it all.
install -d -o postgres -g postgres -m 0700 "$D/repo"
"$BIN/pitr-snap" -r "$D/repo" init
"$BIN/pitr-snap" -r "$D/repo" key export "$D/repo.key"
chown -R postgres: "$D/repo.key" "$D/pki"

# start.sh / stop.sh: what the demo runs, kept for the user.
{
    echo '#!/usr/bin/env bash'
    echo "# Start the demo cluster: PostgreSQL and pitr-agent for each node (as postgres)."
    echo 'set -e'
    declare -f demo_start_agent
    for n in "${NODES[@]}"; do
        echo "runuser -u postgres -- $PGBIN/pg_ctl -D $D/$n -l $D/$n.log -w start >/dev/null"
        echo "demo_start_agent $D/agent-$n.log setpriv --reuid=postgres --regid=postgres --init-groups env -u PITR_PASSPHRASE $BIN/pitr-agent -r $D/repo --key-file $D/repo.key -n $n" \
             "-d 'host=127.0.0.1 port=${PORT[$n]} user=postgres dbname=postgres' -D $D/$n serve" \
             "--listen 127.0.0.1:${APORT[$n]} --tls-cert $D/pki/server.crt --tls-key $D/pki/server.key" \
             "--tls-ca $D/pki/ca.crt --pg-log $D/$n.log --state-file $D/agent-$n.json ||" \
             "{ echo \"agent $n did not start: $D/agent-$n.log\" >&2; exit 1; }"
    done
} >"$D/start.sh"
{
    echo '#!/usr/bin/env bash'
    echo "# Stop the demo cluster's agents (by the pid each start recorded) and servers."
    for n in "${NODES[@]}"; do
        echo "[ -f $D/agent-$n.log.pid ] && kill -TERM \$(cat $D/agent-$n.log.pid) 2>/dev/null; rm -f $D/agent-$n.log.pid"
        echo "runuser -u postgres -- $PGBIN/pg_ctl -D $D/$n -m fast -w stop >/dev/null 2>&1 || true"
    done
} >"$D/stop.sh"
chmod +x "$D/start.sh" "$D/stop.sh"
trap '"$D"/stop.sh; fusermount3 -u "$D/mnt" 2>/dev/null || true' EXIT

say "three PostgreSQL 15 nodes with data checksums, WAL archived by pitr-agent"
for n in "${NODES[@]}"; do
    as_pg "$PGBIN"/initdb -k -A trust -U postgres -D "$D/$n" >/dev/null
    cat >>"$D/$n/postgresql.conf" <<EOF
listen_addresses = '127.0.0.1'
port = ${PORT[$n]}
unix_socket_directories = '$D'
wal_level = replica
archive_mode = on
archive_command = '$BIN/pitr-agent -q -r $D/repo --key-file $D/repo.key -n $n archive-wal %p %f'
max_prepared_transactions = 20
EOF
done
"$D"/start.sh
for n in "${NODES[@]}"; do echo "  $n: PostgreSQL on port ${PORT[$n]}, agent on https://127.0.0.1:${APORT[$n]}"; done

cat >"$D/pitr.yaml" <<EOF
cluster: demo
repository:
  location: $D/repo
  key_file: $D/repo.key
barrier:
  adapter: plain
tls:
  ca: pki/ca.crt
  cert: pki/client.crt
  key: pki/client.key
nodes:
EOF
for n in "${NODES[@]}"; do
    role=worker; [[ $n == coord ]] && role=coordinator
    cat >>"$D/pitr.yaml" <<EOF
  - name: $n
    role: $role
    conninfo: "host=127.0.0.1 port=${PORT[$n]} user=postgres dbname=postgres"
    agent: "127.0.0.1:${APORT[$n]}"
    pgdata: $D/$n
EOF
done
# As root, beside the agents and archivers running as postgres: what it creates in the
# repository is postgres's (docs/OPERATIONS.md 8.3).
snap() { "$BIN/pitr-snap" -c "$D/pitr.yaml" "$@"; }
say "pitr-snap config check"
snap config check

say "sample data: pgbench tables on every node; the CSN sequence on the coordinator"
for n in "${NODES[@]}"; do
    as_pg "$PGBIN"/pgbench -h 127.0.0.1 -p "${PORT[$n]}" -U postgres -i -s 5 -q postgres 2>&1 | tail -1
done
snap barrier-sql | sed -n '1,/^$/p' | as_pg "$PGBIN"/psql -h 127.0.0.1 -p "${PORT[coord]}" -U postgres -d postgres -Xq

say "snapshot 1: base backups of all nodes, then one CSN restore point everywhere"
snap create --label first

say "changes: 2000 pgbench transactions on every node"
for n in "${NODES[@]}"; do
    as_pg "$PGBIN"/pgbench -h 127.0.0.1 -p "${PORT[$n]}" -U postgres -n -t 2000 postgres 2>&1 | grep -E '^tps' | sed "s/^/  $n: /"
done

say "snapshot 2: a new restore point only (seconds, no new base backups)"
snap create --label second --restore-point-only

say "pitr-snap list"
snap list

say "mount the repository read-only and look inside the first snapshot"
mkdir -p "$D/mnt"
"$BIN/mount.pitrfs" "$D/repo" "$D/mnt" -o "keyfile=$D/repo.key"
ls -l "$D/mnt/snapshots/" | head -12
ls "$D/mnt/snapshots/first/coord/pgdata" | head -30 | tr '\n' ' '; echo
du -sh --apparent-size "$D/mnt/snapshots/first/w1/pgdata"
echo "coord's pgdata/ in snapshot 2 starts as copied (cp -a, pg_ctl start): its pg_wal/ holds"
ls "$D/mnt/snapshots/second/coord/pgdata/pg_wal" | tr '\n' ' '; echo
echo "and postgresql.auto.conf ends with the recovery settings:"
tail -n 4 "$D/mnt/snapshots/second/coord/pgdata/postgresql.auto.conf" | sed 's/^/  /'
echo "archived WAL of coord: $(ls "$D/mnt/wal/coord/00000001" | wc -l) files in mnt/wal/coord/00000001/"
fusermount3 -u "$D/mnt"

say "report: what the repository holds"
snap info
python3 - "$D/pitr.yaml" "$BIN/pitr-snap" <<'PY'
import json, subprocess, sys
cfg, snap = sys.argv[1], sys.argv[2]
snaps = json.loads(subprocess.check_output([snap, "-c", cfg, "list", "--json"]))
bases = [s for s in snaps if s["kind"] == "pgbase"]
read = sum(s["meta"]["stats"]["bytes"] for s in bases)
stored = sum(s["meta"]["stats"]["stored_bytes"] for s in bases)
for s in snaps:
    if s["kind"] == "cluster":
        m = s["meta"]
        blocked = m["barrier"].get("blocked_ms", m["barrier"]["held_ms"])
        print(f"  {s['id']}  {s['name']:<8} CSN {m['csn']:<5} commits blocked {blocked:.1f} ms  "
              + "  ".join(f"{n['name']}@{n['restore_point_lsn']}" for n in m["nodes"]))
print(f"\n{len(bases)} base backups: {read/2**20:.1f} MiB read, {stored/2**20:.1f} MiB written "
      f"to the repository ({100*(1-stored/read):.1f}% saved by dedup and compression)")
PY

not_postgres=$(find "$D/repo" ! -user postgres | head -5)
[[ -z $not_postgres ]] || fail "files of the repository that are not postgres's: $not_postgres"
echo
echo "every file of the repository is postgres's, though pitr-snap and the mount ran as root"

say "done"
cat <<EOT
Everything is under $D. The demo stopped the cluster it started; nothing is left running.
The repository is postgres's: the agents write it as postgres, pitr-snap as root or postgres.
  start the cluster:   $D/start.sh
  list snapshots:      $BIN/pitr-snap -c $D/pitr.yaml list
  restore snapshot 1:  $D/start.sh && $BIN/pitr-snap -c $D/pitr.yaml restore first
  mount:               $BIN/mount.pitrfs $D/repo $D/mnt -o keyfile=$D/repo.key
  stop the cluster:    $D/stop.sh
  clean up:            $D/stop.sh; fusermount3 -u $D/mnt; rm -rf $D
EOT
