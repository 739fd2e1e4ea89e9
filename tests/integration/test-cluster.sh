#!/usr/bin/env bash
# The test that matters: cluster-wide consistent snapshots.
# Three PostgreSQL 15 nodes (coordinator coord, workers w1 and w2) on loopback, each with its
# pitr-agent over mutual TLS and WAL archived into one repository. A workload moves money
# between accounts on different nodes with two-phase commit under the plain barrier protocol,
# writing the CSN of each transfer into a ledger on both nodes. While it runs:
#   - one full snapshot and four restore-point-only snapshots, a few seconds apart;
#   - a second concurrent create fails at once naming the holder (exit 5);
#   - a create whose barrier cannot be taken (an application holds the commit lock) fails
#     by the barrier's deadline (exit 75) and lists nothing.
# Worker w2 has a tablespace: the mounted pgdata/ holds it in place, and a side copy puts it
# beside the copy; neither writes to the original location the running w2 uses.
# Then, for every snapshot in turn: restore the whole cluster in place and check that the total
# is unchanged, every node holds exactly the transfers with CSN <= the snapshot's, and no
# prepared transaction is half-committed. Then the same check fails when the nodes are restored
# to one wall-clock time instead (the reason for the barrier). Last, a restore with one agent
# down names that node and a rerun finishes the job; a side copy with --target-dir leaves the
# running nodes alone; a configuration with other nodes is refused; delete removes a snapshot.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
AGENT=$PITR_BIN/pitr-agent
require setpriv pkill
WORKLOAD=$(helper transfer-workload)
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"

make_pki "$T"/pki
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key "$T"/pki

NODES=(coord w1 w2)
declare -A PORT APORT
next=21600
for n in "${NODES[@]}"; do
    PORT[$n]=$(free_port $next); next=$((PORT[$n] + 1))
    APORT[$n]=$(free_port $next); next=$((APORT[$n] + 1))
done
conninfo() { echo "host=127.0.0.1 port=${PORT[$1]} user=postgres dbname=postgres"; }
CONNS=()
for n in "${NODES[@]}"; do CONNS+=("$(conninfo "$n")"); done

agent_start() { # the agent runs as PostgreSQL's OS user, as in production
    local n=$1 started_before
    # The log is appended to across restarts: only a new "serving on" line means this start.
    started_before=$(grep -c 'serving on' "$T/agent-$n.log" 2>/dev/null || true)
    # setpriv execs the agent itself (runuser would stay as a parent that eats SIGTERM).
    setpriv --reuid=postgres --regid=postgres --init-groups \
        env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n "$n" \
        -d "$(conninfo "$n")" -D "$T/$n" serve --listen "127.0.0.1:${APORT[$n]}" \
        --tls-cert "$T"/pki/server.crt --tls-key "$T"/pki/server.key --tls-ca "$T"/pki/ca.crt \
        --pg-log "$T/$n.log" >>"$T/agent-$n.log" 2>&1 &
    AGENT_PID[$n]=$!
    local i
    for ((i = 0; i < 100; i++)); do
        (($(grep -c 'serving on' "$T/agent-$n.log" || true) > ${started_before:-0})) && return 0
        kill -0 "${AGENT_PID[$n]}" 2>/dev/null || break
        sleep 0.1
    done
    cat "$T/agent-$n.log" >&2
    fail "agent $n did not start"
}
agent_stop() {
    local pid=${AGENT_PID[$1]:-} i
    [[ -n $pid ]] || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < 100; i++)); do
        kill -0 "$pid" 2>/dev/null || return 0
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
}
declare -A AGENT_PID
for n in "${NODES[@]}"; do
    pg_init "$T/$n" "${PORT[$n]}" "$AGENT -q -r $REPO --key-file $T/repo.key -n $n archive-wal %p %f"
    pg_start "$T/$n" "$T/$n.log"
    agent_start "$n"
    cleanup_hooks+=("agent_stop $n")
done

cat >"$T"/pitr.yaml <<EOF
cluster: test
repository:
  location: $REPO
  key_file: $T/repo.key
barrier:
  adapter: plain
  lock_key: 7419
  timeout: 5s
wal_timeout: 60s
tls:
  ca: pki/ca.crt
  cert: pki/client.crt
  key: pki/client.key
nodes:
  - { name: coord, role: coordinator, conninfo: "$(conninfo coord)", agent: "127.0.0.1:${APORT[coord]}", pgdata: $T/coord }
  - { name: w1, role: worker, conninfo: "$(conninfo w1)", agent: "127.0.0.1:${APORT[w1]}", pgdata: $T/w1 }
  - { name: w2, role: worker, conninfo: "$(conninfo w2)", agent: "127.0.0.1:${APORT[w2]}", pgdata: $T/w2 }
EOF
# The orchestrator runs as the same user as the agents and the archivers: the repository is one
# directory they all write (its lock files and index are created by whoever comes first).
snap() { as_pg "$SNAP" -c "$T"/pitr.yaml "$@"; }

note "config check reaches every node and agent"
snap config check || fail "config check failed"

note "a tablespace on w2, with a table that the workload does not change"
mkdir "$T"/ts-w2 && chown postgres: "$T"/ts-w2
psql_at "${PORT[w2]}" -c "CREATE TABLESPACE ts_w2 LOCATION '$T/ts-w2'" \
    -c "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE ts_w2" \
    -c "INSERT INTO in_ts SELECT g, md5(g::text) FROM generate_series(1, 5000) g" >/dev/null
TS_OID=$(psql_at "${PORT[w2]}" -c "SELECT oid FROM pg_tablespace WHERE spcname = 'ts_w2'")
in_ts_digest() { psql_at "$1" -c "SELECT count(*) || ' ' || md5(string_agg(v, ',' ORDER BY id)) FROM in_ts"; }
IN_TS=$(in_ts_digest "${PORT[w2]}")

note "workload and snapshots"
"$WORKLOAD" setup "${CONNS[@]}" || fail "workload setup failed"
"$WORKLOAD" run --key 7419 --log "$T"/xfers.log --windows "$T"/windows.log --gap-ms 20 \
    "${CONNS[@]}" >"$T"/workload.out 2>&1 &
WL=$!
cleanup_hooks+=("kill $WL 2>/dev/null")
sleep 2
snap create --label full --json >"$T"/create-1.json 2>"$T"/create-1.err || { cat "$T"/create-1.err; fail "create failed"; }
cat "$T"/create-1.json
# A second create while one runs fails at once, naming the holder. The first is seen to hold
# the lock by its holder record; its base backups take seconds.
snap create --label second >"$T"/create-c1.out 2>"$T"/create-c1.err &
C1=$!
for ((i = 0; i < 200; i++)); do [[ -f $REPO/locks/cluster.holder ]] && break; sleep 0.05; done
[[ -f $REPO/locks/cluster.holder ]] || fail "the first create did not take the cluster lock"
expect_exit 5 snap create --label third
grep -q "another cluster operation is running: create (pid [0-9]* on" "$T"/stderr ||
    fail "the refusal does not name the holder"
wait $C1 || { cat "$T"/create-c1.err; fail "the first create failed"; }
MARKS=()
for i in 2 3 4 5; do
    sleep 1.5
    MARKS+=("$(date +%s.%N)")
    sleep 1.5
    snap create --restore-point-only --label "rp$i" --json >"$T/create-$i.json" 2>"$T/create-$i.err" ||
        { cat "$T/create-$i.err"; fail "create --restore-point-only failed"; }
done
sleep 1
kill -TERM $WL; wait $WL || fail "the workload failed: $(tail -5 "$T"/workload.out)"
cat "$T"/workload.out
note "the barrier gives up, and nothing is listed, when an application holds the commit lock"
as_pg "$PGBIN"/psql -h 127.0.0.1 -p "${PORT[coord]}" -U postgres -d postgres -Xq \
    -c "SELECT pg_advisory_lock_shared(7419)" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
HOLDER=$!
app_holds_lock() {
    [[ $(psql_at "${PORT[coord]}" -c "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND objid = 7419 AND granted") == 1 ]]
}
wait_until 30 app_holds_lock || fail "the application session did not get its advisory lock within 30 s"
n_before=$(snap list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
expect_exit 75 snap create --restore-point-only --label blocked
grep -q "the commit barrier failed" "$T"/stderr || fail "no clear message when the barrier cannot be taken"
psql_at "${PORT[coord]}" -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query = 'SELECT pg_sleep(120)'" >/dev/null
wait $HOLDER 2>/dev/null || true
[[ $(snap list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))') -eq $n_before ]] ||
    fail "a snapshot whose barrier failed is listed"
snap list
snap list --json >"$T"/list.json
mapfile -t SNAPS < <(python3 -c '
import json
for s in json.load(open("'"$T"'/list.json")):
    if s["kind"] == "cluster":
        print(s["id"], s["meta"]["csn"])')
[[ ${#SNAPS[@]} -ge 5 ]] || fail "expected at least 5 cluster snapshots, got ${#SNAPS[@]}"

note "mounted: a node's pgdata/ starts as it is copied and stops at the snapshot's CSN"
MNT=$T/mnt
mkdir -p "$MNT"
"$PITR_BIN"/mount.pitrfs "$REPO" "$MNT" -o keyfile="$T"/repo.key || fail "mount.pitrfs failed"
cleanup_hooks+=("fusermount3 -u '$MNT' 2>/dev/null || fusermount3 -uz '$MNT' 2>/dev/null")
copy_stop() { as_pg "$PGBIN"/pg_ctl -D "$1" -m immediate stop >/dev/null 2>&1 || true; }
# The first (full) snapshot and the last (restore point only: its nodes' base backups are the
# full one's, so pg_wal/ spans all the WAL between the two).
for line in "${SNAPS[0]}" "${SNAPS[-1]}"; do
    read -r id csn <<<"$line"
    COPY_CONNS=()
    for n in "${NODES[@]}"; do
        # The node's directory is its data directory, with its owner and mode (postgres may
        # enter it in a mount of its own).
        assert_eq "$(stat -c '%U %a' "$MNT"/snapshots/"$id"/"$n")" "$(stat -c '%U %a' "$T"/"$n")" \
            "owner and mode of snapshot $id's directory $n"
        src=$MNT/snapshots/$id/$n/pgdata
        [[ -f $src/recovery.signal && ! -s $src/recovery.signal ]] || fail "$src has no empty recovery.signal"
        [[ -f $src/backup_label ]] || fail "$src has no backup_label"
        grep -qx "recovery_target_name = 'pitr_csn_$csn'" "$src"/postgresql.auto.conf ||
            fail "$src/postgresql.auto.conf does not name the restore point: $(cat "$src"/postgresql.auto.conf)"
        walfile=$(python3 -c 'import json, sys
s = [s for s in json.load(open(sys.argv[1])) if s["id"] == sys.argv[2]][0]
print([x["walfile"] for x in s["meta"]["nodes"] if x["name"] == sys.argv[3]][0])' "$T"/list.json "$id" "$n")
        [[ -f $src/pg_wal/$walfile ]] || fail "$src/pg_wal lacks $walfile, the segment of the restore point"
        if [[ $n == w2 ]]; then
            [[ -d $src/pg_tblspc/$TS_OID && ! -L $src/pg_tblspc/$TS_OID ]] ||
                fail "$src/pg_tblspc/$TS_OID is not the tablespace's directory: $(ls -l "$src"/pg_tblspc)"
            [[ ! -e $src/tablespace_map ]] || fail "$src shows tablespace_map"
            grep -qx "allow_in_place_tablespaces = 'on'" "$src"/postgresql.auto.conf ||
                fail "$src/postgresql.auto.conf does not allow in-place tablespaces"
        fi
        cmp -s "$src/pg_wal/$walfile" "$MNT/wal/$n/${walfile:0:8}/$walfile" ||
            fail "$src/pg_wal/$walfile differs from /wal/$n"
        d=$T/copy-$n
        rm -rf "$d"
        cp -a "$src" "$d" || fail "cp -a of $src failed"
        [[ $(stat -c '%U %a' "$d") == "postgres 700" ]] || fail "the copy of $src is not postgres's, 0700"
        port=$(free_port $next); next=$((port + 1))
        cleanup_hooks+=("copy_stop '$d'")
        # archive_mode off: the copy must not archive its new timeline as node $n
        as_pg "$PGBIN"/pg_ctl -D "$d" -l "$T/copy-$n.log" -o "-p $port -c archive_mode=off" -w -t 90 \
            start >/dev/null || { tail -30 "$T/copy-$n.log"; fail "the copy of $src did not start"; }
        wait_promoted "$port" "$T/copy-$n.log"
        grep -q "recovery stopping at restore point \"pitr_csn_$csn\"" "$T/copy-$n.log" ||
            { tail -30 "$T/copy-$n.log"; fail "the copy of $src did not stop at its restore point"; }
        if [[ $n == w2 ]]; then
            assert_eq "$(in_ts_digest "$port")" "$IN_TS" "table in_ts in the copy's tablespace"
            rel=$(psql_at "$port" -c "SELECT pg_relation_filepath('in_ts')")
            [[ $(realpath "$d/$rel") == "$d"/pg_tblspc/* ]] ||
                fail "in_ts of the copy is not inside the copy: $d/$rel is $(realpath "$d/$rel")"
        fi
        COPY_CONNS+=("host=127.0.0.1 port=$port user=postgres dbname=postgres")
    done
    "$WORKLOAD" check --csn "$csn" --log "$T"/xfers.log "${COPY_CONNS[@]}" ||
        fail "the copies of snapshot $id's pgdata/ are not consistent at CSN $csn"
    for n in "${NODES[@]}"; do copy_stop "$T/copy-$n"; done
done

note "mounted: /wal shows every archived file of each node, byte for byte"
assert_eq "$(ls "$MNT"/wal | tr '\n' ' ')" "coord w1 w2 " "/wal lists other nodes"
for n in "${NODES[@]}"; do
    assert_eq "$(cd "$MNT/wal/$n" && find . -type f | sort)" \
        "$(cd "$REPO/wal/$n" && find . -type f ! -name '*.tmp' | sort)" "/wal/$n lists other files"
done
seg=$(cd "$MNT"/wal/w1/00000001 && ls | grep -E '^[0-9A-F]{24}$' | tail -n 1)
as_pg "$AGENT" -q -r "$REPO" --key-file "$T"/repo.key -n w1 restore-wal "$seg" "$T"/seg.restored ||
    fail "restore-wal $seg failed"
cmp "$T"/seg.restored "$MNT/wal/w1/00000001/$seg" || fail "/wal/w1/00000001/$seg differs from restore-wal's"
[[ $(stat -c '%a %s' "$MNT/wal/w1/00000001/$seg") == "400 $(stat -c %s "$T"/seg.restored)" ]] ||
    fail "/wal/w1/00000001/$seg: mode or size wrong: $(stat -c '%a %s' "$MNT/wal/w1/00000001/$seg")"
# WAL archived while mounted shows at the next listing.
psql_at "${PORT[w1]}" -c "CREATE TABLE IF NOT EXISTS wal_probe(x int); INSERT INTO wal_probe VALUES (1)"
next_seg=$(psql_at "${PORT[w1]}" -c "SELECT pg_walfile_name(pg_switch_wal())")
new_seg_listed() { ls "$MNT"/wal/w1/00000001 | grep -qx "$next_seg"; }
wait_until 60 new_seg_listed || fail "$next_seg, archived while mounted, is not listed in /wal/w1/00000001"
fusermount3 -u "$MNT" || fail "unmount failed"

note "restore to every snapshot in turn: consistent at its CSN"
for line in "${SNAPS[@]}"; do
    read -r id csn <<<"$line"
    snap restore "$id" >"$T/restore-$id.out" 2>&1 || { cat "$T/restore-$id.out"; fail "restore of $id failed"; }
    cat "$T/restore-$id.out"
    "$WORKLOAD" check --csn "$csn" --log "$T"/xfers.log "${CONNS[@]}" ||
        fail "the cluster restored to snapshot $id (CSN $csn) is not consistent"
done
assert_eq "$(in_ts_digest "${PORT[w2]}")" "$IN_TS" "in_ts on w2, restored in place with its tablespace"

note "the same check fails for a restore to one wall-clock time on every node"
# For each mark, the first transfer after it that was between its two commits at a known
# moment: the middle of that window is a time at which a cut by wall clock splits it (a time
# drawn at random may fall where both legs are only prepared, which the check calls in doubt).
mapfile -t WALL_TIMES < <(python3 - "$T"/windows.log "${MARKS[@]}" <<'PY'
import datetime, sys
windows = [tuple(map(float, l.split()[1:])) for l in open(sys.argv[1]) if len(l.split()) == 3]
for mark in map(float, sys.argv[2:]):
    t1, t2 = next((a, b) for a, b in windows if a > mark and b - a > 0.010)
    t = datetime.datetime.fromtimestamp((t1 + t2) / 2, datetime.timezone.utc)
    print(t.strftime("%Y-%m-%d %H:%M:%S.%f+00"))
PY
)
[[ ${#WALL_TIMES[@]} -eq ${#MARKS[@]} ]] || fail "no commit window found after every mark"
inconsistent=0
for t in "${WALL_TIMES[@]}"; do
    for n in "${NODES[@]}"; do
        as_pg "$PGBIN"/pg_ctl -D "$T/$n" -m fast -w stop >/dev/null
        as_pg env -u PITR_PASSPHRASE "$AGENT" -q -r "$REPO" --key-file "$T"/repo.key -n "$n" \
            restore --target-dir "$T/$n" --delta --target-time "$t" --target-timeline 1 >/dev/null ||
            fail "wall-clock restore of $n failed"
        pg_start "$T/$n" "$T/$n.log"
    done
    for n in "${NODES[@]}"; do wait_promoted "${PORT[$n]}" "$T/$n.log"; done
    rc=0; "$WORKLOAD" check "${CONNS[@]}" >"$T"/wall.out 2>&1 || rc=$?
    tail -3 "$T"/wall.out
    [[ $rc -eq 1 ]] && inconsistent=$((inconsistent + 1))
    [[ $rc -le 1 ]] || fail "check could not run"
done
echo "$inconsistent of ${#WALL_TIMES[@]} wall-clock restores were inconsistent"
[[ $inconsistent -eq ${#WALL_TIMES[@]} ]] ||
    fail "a wall-clock restore inside a commit window did not split the transfer"

note "a restore with one agent down names it; a rerun finishes"
read -r id csn <<<"${SNAPS[2]}"
agent_stop w2
rc=0; snap restore "$id" >"$T"/partial.out 2>&1 || rc=$?
cat "$T"/partial.out
[[ $rc -ne 0 ]] || fail "restore with an agent down succeeded"
grep -q "w2" "$T"/partial.out || fail "the failed node is not named"
agent_start w2
snap restore "$id" >"$T"/rerun.out 2>&1 || { cat "$T"/rerun.out; fail "the rerun did not finish the restore"; }
"$WORKLOAD" check --csn "$csn" --log "$T"/xfers.log "${CONNS[@]}" || fail "not consistent after the rerun"
note "a side copy with --target-dir, a configuration that does not match, delete"
read -r id csn <<<"${SNAPS[1]}"
snap restore "$id" --target-dir "$T"/side || fail "restore --target-dir failed"
for n in "${NODES[@]}"; do
    [[ -f $T/side/$n/recovery.signal && -f $T/side/$n/PG_VERSION ]] || fail "side copy of $n incomplete"
    grep -q "recovery_target_name = 'pitr_csn_$csn'" "$T/side/$n/postgresql.auto.conf" ||
        fail "side copy of $n does not recover to pitr_csn_$csn"
done
assert_eq "$(cat "$T"/side/w2/tablespace_map)" "$TS_OID $T/side/w2.tablespaces/$TS_OID" \
    "the side copy's tablespace_map"
# Started, the side copy of w2 reads in_ts from beside itself.
port=$(free_port $next); next=$((port + 1))
cleanup_hooks+=("copy_stop '$T/side/w2'")
as_pg "$PGBIN"/pg_ctl -D "$T"/side/w2 -l "$T"/side-w2.log -o "-p $port -c archive_mode=off" -w -t 90 \
    start >/dev/null || { tail -30 "$T"/side-w2.log; fail "the side copy of w2 did not start"; }
wait_promoted "$port" "$T"/side-w2.log
assert_eq "$(in_ts_digest "$port")" "$IN_TS" "table in_ts in the side copy"
rel=$(psql_at "$port" -c "SELECT pg_relation_filepath('in_ts')")
[[ $(realpath "$T/side/w2/$rel") == "$T/side/w2.tablespaces/$TS_OID"/* ]] ||
    fail "in_ts of the side copy is not beside it: $(realpath "$T/side/w2/$rel")"
copy_stop "$T"/side/w2
# The running cluster was not touched: the workload's check still holds for the last restore.
read -r last_id last_csn <<<"${SNAPS[2]}"
"$WORKLOAD" check --csn "$last_csn" --log "$T"/xfers.log "${CONNS[@]}" >/dev/null ||
    fail "restore --target-dir changed the running cluster"
sed 's/^  - { name: w2.*$/&\n  - { name: w3, role: worker, conninfo: "host=127.0.0.1 port=1", agent: "127.0.0.1:1" }/' \
    "$T"/pitr.yaml >"$T"/four.yaml
expect_exit 64 as_pg "$SNAP" -c "$T"/four.yaml restore "$id"
grep -q "does not match snapshot" "$T"/stderr || fail "a cluster that does not match was not refused"
before=$(snap list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
snap delete "$id" || fail "delete failed"
after=$(snap list --json | python3 -c 'import json,sys; print(len(json.load(sys.stdin)))')
[[ $after -eq $((before - 1)) ]] || fail "delete did not remove the snapshot"
expect_exit 1 snap restore "$id"

note "the citus adapter: workers get their WAL file and timeline, and a side copy recovers"
# Citus is not packaged for Debian: a stand-in citus_create_restore_point makes the named
# restore point on every worker (through dblink) and on the coordinator, returning the
# coordinator's LSN only, as Citus does. It does not block distributed commits.
workers_sql=""
for n in w1 w2; do
    workers_sql+="PERFORM * FROM dblink('$(conninfo $n)', format('SELECT pg_create_restore_point(%L)::text', name)) AS t(lsn text); "
done
psql_at "${PORT[coord]}" -c "CREATE EXTENSION IF NOT EXISTS dblink" \
    -c "CREATE FUNCTION citus_create_restore_point(name text) RETURNS pg_lsn LANGUAGE plpgsql AS \$\$ BEGIN $workers_sql RETURN pg_create_restore_point(name); END \$\$" >/dev/null ||
    fail "could not create the Citus stand-in"
sed 's/^  adapter: plain$/  adapter: citus/' "$T"/pitr.yaml >"$T"/citus.yaml
as_pg "$SNAP" -c "$T"/citus.yaml create --restore-point-only --json >"$T"/create-citus.json 2>"$T"/create-citus.err ||
    { cat "$T"/create-citus.err; fail "create with the citus adapter failed"; }
cid=$(json_get id <"$T"/create-citus.json)
ccsn=$(json_get csn <"$T"/create-citus.json)
snap list --json >"$T"/list-citus.json || fail "list failed"
python3 - "$T"/list-citus.json "$cid" <<'EOF' || fail "the citus snapshot's node records are incomplete"
import json, sys
s = [s for s in json.load(open(sys.argv[1])) if s["id"] == sys.argv[2]][0]
nodes = {n["name"]: n for n in s["meta"]["nodes"]}
for name in ("w1", "w2"):
    n = nodes[name]
    assert n["restore_point_lsn"] == "" and len(n["walfile"]) == 24, n
    assert n["timeline"] == int(n["walfile"][:8], 16) >= 1, n
assert nodes["coord"]["restore_point_lsn"] != "", nodes["coord"]
EOF
as_pg "$SNAP" -c "$T"/citus.yaml restore "$cid" --target-dir "$T"/side-citus >"$T"/restore-citus.out 2>&1 ||
    { cat "$T"/restore-citus.out; fail "restore --target-dir of the citus snapshot failed"; }
port=$(free_port $next); next=$((port + 1))
cleanup_hooks+=("copy_stop '$T/side-citus/w1'")
as_pg "$PGBIN"/pg_ctl -D "$T"/side-citus/w1 -l "$T"/side-citus-w1.log -o "-p $port -c archive_mode=off" \
    -w -t 90 start >/dev/null || { tail -30 "$T"/side-citus-w1.log; fail "the copy of w1 did not start"; }
wait_promoted "$port" "$T"/side-citus-w1.log
grep -q "recovery stopping at restore point \"pitr_csn_$ccsn\"" "$T"/side-citus-w1.log ||
    { tail -30 "$T"/side-citus-w1.log; fail "the copy of w1 did not stop at pitr_csn_$ccsn"; }
copy_stop "$T"/side-citus/w1
echo "cluster snapshot checks passed"
