#!/usr/bin/env bash
# delete does not take away a base backup that a kept cluster snapshot restores a node from.
# Two PostgreSQL 15 nodes (coord, w1), each with its agent over mutual TLS; three cluster
# snapshots: full1, rp (restore point only: full1's base backups) and full2 (new ones).
#   - deleting coord's first base backup is refused, naming full1 and rp (not full2), and the
#     record stays; after full1 is deleted, the refusal names rp alone;
#   - with --force it goes, with a warning that rp can no longer be restored, and indeed
#     restoring rp then fails for coord;
#   - a base backup no kept cluster snapshot needs is deleted without --force;
#   - while a cluster snapshot's record cannot be read, a base backup is not deleted without
#     --force (that record might need it);
#   - delete says the data stays in the packs: this version has no prune.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
AGENT=$PITR_BIN/pitr-agent
require setpriv
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"

make_pki "$T"/pki
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key "$T"/pki

NODES=(coord w1)
declare -A PORT APORT AGENT_PID
next=22600
for n in "${NODES[@]}"; do
    PORT[$n]=$(free_port $next); next=$((PORT[$n] + 1))
    APORT[$n]=$(free_port $next); next=$((APORT[$n] + 1))
done
conninfo() { echo "host=127.0.0.1 port=${PORT[$1]} user=postgres dbname=postgres"; }
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
for n in "${NODES[@]}"; do
    pg_init "$T/$n" "${PORT[$n]}" "$AGENT -q -r $REPO --key-file $T/repo.key -n $n archive-wal %p %f"
    pg_start "$T/$n" "$T/$n.log"
    # setpriv execs the agent itself, so its pid is the agent's.
    setpriv --reuid=postgres --regid=postgres --init-groups \
        env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n "$n" \
        -d "$(conninfo "$n")" -D "$T/$n" serve --listen "127.0.0.1:${APORT[$n]}" \
        --tls-cert "$T"/pki/server.crt --tls-key "$T"/pki/server.key --tls-ca "$T"/pki/ca.crt \
        --pg-log "$T/$n.log" >>"$T/agent-$n.log" 2>&1 &
    AGENT_PID[$n]=$!
    cleanup_hooks+=("agent_stop $n")
    wait_until 10 grep -qs 'serving on' "$T/agent-$n.log" || { cat "$T/agent-$n.log" >&2; fail "agent $n did not start"; }
done

cat >"$T"/pitr.yaml <<EOF
cluster: guard
repository:
  location: $REPO
  key_file: $T/repo.key
wal_timeout: 60s
tls:
  ca: pki/ca.crt
  cert: pki/client.crt
  key: pki/client.key
nodes:
  - { name: coord, role: coordinator, conninfo: "$(conninfo coord)", agent: "127.0.0.1:${APORT[coord]}", pgdata: $T/coord }
  - { name: w1, role: worker, conninfo: "$(conninfo w1)", agent: "127.0.0.1:${APORT[w1]}", pgdata: $T/w1 }
EOF
snap() { as_pg "$SNAP" -c "$T"/pitr.yaml "$@"; }
# base_backup SNAPSHOT NODE: the id of the base backup cluster snapshot SNAPSHOT has for NODE
base_backup() {
    snap show "$1" --json | python3 -c '
import json, sys
print([n["base_backup"] for n in json.load(sys.stdin)["meta"]["nodes"] if n["name"] == sys.argv[1]][0])' "$2" ||
        fail "could not read the base backup of $2 in snapshot $1"
}
psql_at "${PORT[coord]}" -c "CREATE SCHEMA pitr" -c "CREATE SEQUENCE pitr.csn AS bigint CACHE 1" ||
    fail "could not make the CSN sequence on coord"
create() {
    snap create "$@" --json >"$T"/create.json 2>"$T"/create.err || { cat "$T"/create.err >&2; fail "create $* failed"; }
    json_get id <"$T"/create.json
}

note "three cluster snapshots; full1 and rp share their base backups"
FULL1=$(create --label full1)
RP=$(create --restore-point-only --label rp)
FULL2=$(create --label full2)
B_COORD=$(base_backup "$FULL1" coord)
B_W1=$(base_backup "$FULL1" w1)
assert_eq "$(base_backup "$RP" coord)" "$B_COORD" "rp's base backup of coord"
B2_W1=$(base_backup "$FULL2" w1)
[[ $B2_W1 != "$B_W1" ]] || fail "sanity: full2 did not take new base backups"
[[ $(snap show "$B_COORD" --json | json_get kind) == pgbase ]] || fail "sanity: $B_COORD is not a pgbase snapshot"

note "a base backup that kept cluster snapshots need is refused, naming them"
expect_exit 1 snap delete "$B_COORD"
grep -q "snapshot $B_COORD is the base backup of 2 kept cluster snapshots" "$T"/stderr ||
    fail "the refusal does not say $B_COORD is needed by 2 cluster snapshots"
grep -q "$FULL1 (\"full1\", node coord)" "$T"/stderr && grep -q "$RP (\"rp\", node coord)" "$T"/stderr ||
    fail "the refusal does not name full1 and rp"
grep -q "$FULL2" "$T"/stderr && fail "the refusal names full2, which does not need $B_COORD"
grep -q -- "--force" "$T"/stderr || fail "the refusal does not say how to delete anyway"
[[ -f $REPO/snapshots/$B_COORD ]] || fail "the refused delete removed the record"
expect_exit 1 snap delete "$B2_W1"
grep -q "$FULL2 (\"full2\", node w1)" "$T"/stderr || fail "deleting full2's base backup of w1 does not name full2"

note "a cluster snapshot is deleted; then only rp needs the base backup"
snap delete "$FULL1" 2>"$T"/stderr || { cat "$T"/stderr; fail "delete of cluster snapshot full1 failed"; }
cat "$T"/stderr
grep -q "deleted snapshot $FULL1; the data it used stays in the packs" "$T"/stderr ||
    fail "delete does not say that the data stays in the packs"
grep -qi "next prune" "$T"/stderr && fail "delete promises a prune"
expect_exit 64 snap prune # the message above says there is none: both change together
expect_exit 1 snap delete "$B_COORD"
grep -q "base backup of 1 kept cluster snapshot: $RP (\"rp\", node coord)" "$T"/stderr ||
    fail "after full1 is gone the refusal does not name rp alone"

note "--force deletes it, saying what can no longer be restored"
snap delete --force "$B_COORD" 2>"$T"/stderr || { cat "$T"/stderr; fail "delete --force failed"; }
cat "$T"/stderr
grep -q "warning: 1 cluster snapshot can no longer be restored: $RP (\"rp\", node coord)" "$T"/stderr ||
    fail "delete --force does not warn that rp can no longer be restored"
[[ ! -e $REPO/snapshots/$B_COORD ]] || fail "delete --force left the record"
mkdir "$T"/side && chown postgres: "$T"/side
rc=0
snap restore "$RP" --target-dir "$T"/side >"$T"/restore.out 2>&1 || rc=$?
cat "$T"/restore.out
[[ $rc -ne 0 ]] || fail "rp restored without its base backup of coord"
grep "coord" "$T"/restore.out | grep -q "FAILED" || fail "the failed restore of rp does not name coord"

note "a base backup that no kept cluster snapshot needs is deleted without --force"
snap delete "$RP" 2>/dev/null || fail "delete of rp failed"
snap delete "$B_W1" 2>"$T"/stderr || { cat "$T"/stderr; fail "delete of a base backup nothing needs failed"; }
grep -q warning "$T"/stderr && fail "delete of a base backup nothing needs warned: $(cat "$T"/stderr)"

note "while a cluster snapshot's record cannot be read, no base backup is deleted without --force"
B2_COORD=$(base_backup "$FULL2" coord)
chown root: "$REPO/snapshots/$FULL2"
expect_exit 1 snap delete "$B2_COORD"
grep -q "cannot tell whether a cluster snapshot needs snapshot $B2_COORD" "$T"/stderr &&
    grep -q "snapshots/$FULL2\" cannot be read: Permission denied" "$T"/stderr ||
    fail "the refusal does not name the unreadable record"
[[ -f $REPO/snapshots/$B2_COORD ]] || fail "the refused delete removed the record"
chown postgres: "$REPO/snapshots/$FULL2"
expect_exit 1 snap delete "$B2_COORD" # readable again: full2 is seen to need it
grep -q "$FULL2 (\"full2\", node coord)" "$T"/stderr || fail "full2 is not named once readable"
echo "delete guard ok"
