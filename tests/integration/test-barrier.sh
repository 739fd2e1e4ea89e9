#!/usr/bin/env bash
# The plain commit barrier is bounded, and reports what the application saw.
# Two PostgreSQL 15 nodes (coordinator coord, worker w1) archive into one repository and have a
# base backup each. An application (barrier-probe --app) commits distributed transactions along
# the path of docs/BARRIER.md without a pause and logs, for each, how long its
# pg_advisory_xact_lock_shared took, measured on its side. A slow committer holds the key shared
# for 1.5 s, as a slow COMMIT PREPARED would; `pitr-snap create --restore-point-only` starts
# 0.3 s into it. Then:
#   - with the default lock_timeout (50 ms) no application commit started during create waits
#     more than lock_timeout and a margin (the old barrier made them wait the rest of the slow
#     commit, about a second), create retries until the slow commit is done and succeeds, and
#     the blocked time it prints is the longest wait the application saw;
#   - with --lock-timeout 5s one attempt waits out the slow commit: the application's commits
#     wait about a second, and create prints that wait, not only the time it held the lock;
#   - when the key stays held past the deadline (pitr.yaml's barrier.deadline, or
#     --barrier-deadline), create gives up with exit 75, creates nothing, and the application
#     still never waited more than lock_timeout and a margin;
#   - under a steady load of four application workers, the printed figure is never below the
#     longest wait the application saw (measured figures are printed);
#   - bad --lock-timeout / --barrier-deadline values are usage errors (64).
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
AGENT=$PITR_BIN/pitr-agent
PROBE=$(helper barrier-probe)
[[ -x $AGENT ]] || fail "$AGENT is missing"
# Loose, to stay clear of scheduling noise on a loaded machine; the old barrier's waits were
# about a second.
MARGIN_MS=300

make_pki "$T"/pki
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
chown -R postgres: "$REPO" "$T"/repo.key "$T"/pki

NODES=(coord w1)
declare -A PORT
next=22600
for n in "${NODES[@]}"; do
    PORT[$n]=$(free_port $next); next=$((PORT[$n] + 1))
done
conninfo() { echo "host=127.0.0.1 port=${PORT[$1]} user=postgres dbname=postgres"; }
for n in "${NODES[@]}"; do
    pg_init "$T/$n" "${PORT[$n]}" "$AGENT -q -r $REPO --key-file $T/repo.key -n $n archive-wal %p %f"
    pg_start "$T/$n" "$T/$n.log"
done
write_config() { # write_config FILE [barrier lines...]
    local f=$1 line
    shift
    {
        echo "cluster: test"
        echo "repository: { location: $REPO, key_file: $T/repo.key }"
        echo "barrier:"
        echo "  lock_key: 7419"
        for line in "$@"; do echo "  $line"; done
        echo "wal_timeout: 60s"
        echo "tls: { ca: pki/ca.crt, cert: pki/client.crt, key: pki/client.key }"
        echo "nodes:"
        echo "  - { name: coord, role: coordinator, conninfo: \"$(conninfo coord)\", agent: \"127.0.0.1:1\" }"
        echo "  - { name: w1, role: worker, conninfo: \"$(conninfo w1)\", agent: \"127.0.0.1:2\" }"
    } >"$f"
}
write_config "$T"/pitr.yaml "timeout: 5s"
snap() { as_pg "$SNAP" -c "$T"/pitr.yaml "$@"; }
"$PROBE" -c "$T"/pitr.yaml --sql setup | psql_at "${PORT[coord]}" >/dev/null || fail "barrier setup SQL failed"
for n in "${NODES[@]}"; do
    as_pg "$AGENT" -q -r "$REPO" --key-file "$T"/repo.key -n "$n" backup -d "$(conninfo "$n")" \
        -D "$T/$n" >/dev/null || fail "base backup of $n failed"
done

note "defaults: lock_timeout 50 ms, deadline 10 s"
snap config show --json >"$T"/show.json || fail "config show failed"
assert_eq "$(json_get barrier.lock_timeout_ms <"$T"/show.json)" 50 "default barrier.lock_timeout"
assert_eq "$(json_get barrier.deadline_ms <"$T"/show.json)" 10000 "default barrier.deadline"

# ---- the application and the slow committer ----
APP=
app_start() { # app_start LOG WORKERS GAP_MS
    "$PROBE" -c "$T"/pitr.yaml --app "$1" --workers "$2" --gap-ms "$3" --seconds 300 2>>"$T"/app.err &
    APP=$!
    cleanup_hooks+=("kill $APP 2>/dev/null")
    # Running once it has logged a commit.
    wait_until 30 test -s "$1" || fail "the application did not commit: $(cat "$T"/app.err)"
}
app_stop() {
    kill -TERM "$APP"
    wait "$APP" || fail "the application failed: $(cat "$T"/app.err)"
}
SLOW=
slow_holds() {
    [[ $(psql_at "${PORT[coord]}" -c "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
        WHERE l.locktype = 'advisory' AND l.objid = 7419 AND l.granted AND a.query LIKE 'SELECT pg_sleep(%'") == 1 ]]
}
slow_start() { # slow_start SECONDS: a distributed commit that keeps the key shared that long
    as_pg "$PGBIN"/psql -h 127.0.0.1 -p "${PORT[coord]}" -U postgres -d postgres -Xq \
        -c "BEGIN" -c "SELECT pg_advisory_xact_lock_shared(7419)" -c "SELECT pg_sleep($1)" \
        -c "COMMIT" >/dev/null 2>&1 &
    SLOW=$!
    cleanup_hooks+=("kill $SLOW 2>/dev/null")
    wait_until 30 slow_holds || fail "the slow committer did not get the key"
}
now() { date +%s.%N; }
# app_waits LOG FROM TO: "<count> <max wait ms>" over the commits that started in [FROM, TO].
app_waits() {
    python3 - "$@" <<'PY' || fail "could not read the application log"
import sys
log, lo, hi = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
waits = [float(w) for t, w, _ in (l.split() for l in open(log)) if lo <= float(t) <= hi]
print(len(waits), max(waits) if waits else 0)
PY
}
# within A B TOLERANCE: |A - B| <= TOLERANCE (numbers with decimals)
within() { python3 -c 'import sys; a, b, t = map(float, sys.argv[1:]); sys.exit(abs(a - b) > t)' "$@"; }
le() { python3 -c 'import sys; a, b = map(float, sys.argv[1:]); sys.exit(not a <= b)' "$@"; }
n_snapshots() { snap list --json | python3 -c 'import json,sys; print(sum(s["kind"] == "cluster" for s in json.load(sys.stdin)))'; }

note "a slow commit in flight: every other commit waits at most lock_timeout; create retries"
app_start "$T"/app-a.log 1 0
slow_start 1.5
sleep 0.3
t1=$(now)
snap create --restore-point-only --label bounded --json >"$T"/a.json 2>"$T"/a.err ||
    { cat "$T"/a.err; fail "create failed while a slow commit was in flight"; }
t2=$(now)
cat "$T"/a.json
wait "$SLOW" || fail "the slow committer failed"
read -r n_a max_a < <(app_waits "$T"/app-a.log "$t1" "$t2")
echo "application: $n_a commits started during create, longest wait $max_a ms"
((n_a >= 5)) || fail "too few application commits during create ($n_a) to measure anything"
le "$max_a" $((50 + MARGIN_MS)) ||
    fail "an application commit waited $max_a ms for the barrier (bound: lock_timeout 50 ms + $MARGIN_MS ms)"
attempts=$(json_get barrier_attempts <"$T"/a.json)
((attempts >= 2)) || fail "create got the lock at once ($attempts attempt) although a slow commit held the key"
blocked=$(json_get barrier_blocked_ms <"$T"/a.json)
wait_ms=$(json_get barrier_lock_wait_ms <"$T"/a.json)
held=$(json_get barrier_held_ms <"$T"/a.json)
le "$(python3 -c "print($wait_ms + $held)")" "$(python3 -c "print($blocked + 0.01)")" ||
    fail "blocked ($blocked ms) is less than the lock wait ($wait_ms) and hold ($held) together"
within "$blocked" "$max_a" 100 ||
    fail "create printed commits blocked $blocked ms, the application's longest wait was $max_a ms"
grep -q "distributed commits blocked for .* ms at most (waited .* ms for the lock, held it .* ms; attempt $attempts)" "$T"/a.err ||
    fail "create did not report the lock wait and the hold"

note "--lock-timeout 5s: one attempt waits out the slow commit, and says so"
slow_start 1.5
sleep 0.3
t1=$(now)
snap create --restore-point-only --label one-attempt --lock-timeout 5s >"$T"/b.out 2>"$T"/b.err ||
    { cat "$T"/b.err; fail "create --lock-timeout 5s failed"; }
t2=$(now)
cat "$T"/b.out
wait "$SLOW" || fail "the slow committer failed"
read -r n_b max_b < <(app_waits "$T"/app-a.log "$t1" "$t2")
echo "application: $n_b commits started during create, longest wait $max_b ms"
read -r blocked wait_ms held attempt < <(sed -nE 's/.*commits blocked ([0-9.]+) ms at most \(waited ([0-9.]+) ms for the lock, held it ([0-9.]+) ms; attempt ([0-9]+)\).*/\1 \2 \3 \4/p' "$T"/b.out)
[[ -n ${blocked:-} ]] || fail "create's output does not say how long commits were blocked"
assert_eq "$attempt" 1 "attempts with a 5 s lock_timeout"
le 700 "$wait_ms" || fail "create waited only $wait_ms ms for the lock while the slow commit held it for about a second"
le 700 "$max_b" || fail "the application's longest wait ($max_b ms) is too short for this check to mean anything"
within "$blocked" "$max_b" 200 ||
    fail "create printed commits blocked $blocked ms, the application's longest wait was $max_b ms"
app_stop

note "the key held past the deadline: exit 75, nothing created, commits still bounded"
write_config "$T"/short.yaml "lock_timeout: 20ms" "deadline: 2s"
as_pg "$SNAP" -c "$T"/short.yaml config show --json >"$T"/short.json || fail "config show failed"
assert_eq "$(json_get barrier.lock_timeout_ms <"$T"/short.json)" 20 "barrier.lock_timeout from the file"
assert_eq "$(json_get barrier.deadline_ms <"$T"/short.json)" 2000 "barrier.deadline from the file"
app_start "$T"/app-c.log 1 0
slow_start 120
before=$(n_snapshots)
t1=$(now)
expect_exit 75 as_pg "$SNAP" -c "$T"/short.yaml create --restore-point-only --label never
t2=$(now)
grep -q "commit barrier not granted in [0-9]* attempts over .* s (each waited at most 20 ms" "$T"/stderr ||
    fail "no clear message naming the attempts and the file's lock_timeout"
grep -q "the commit barrier failed: not granted before its deadline" "$T"/stderr || fail "no clear message"
slow_holds || fail "create did not give up by itself: the slow commit is gone"
read -r n_c max_c < <(app_waits "$T"/app-c.log "$t1" "$t2")
echo "application: $n_c commits during the failed create, longest wait $max_c ms"
((n_c >= 5)) || fail "too few application commits during create ($n_c)"
le "$max_c" $((20 + MARGIN_MS)) || fail "an application commit waited $max_c ms (bound: 20 ms + $MARGIN_MS ms)"
# The command line wins over the file.
expect_exit 75 snap create --restore-point-only --label never --barrier-deadline 1s --lock-timeout 30ms
grep -q "each waited at most 30 ms" "$T"/stderr || fail "--lock-timeout was not used"
assert_eq "$(n_snapshots)" "$before" "cluster snapshots after failed creates"
psql_at "${PORT[coord]}" -c "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(%'" >/dev/null
wait "$SLOW" 2>/dev/null || true
app_stop

note "bad values are usage errors"
expect_exit 64 snap create --restore-point-only --lock-timeout 0
grep -q 'invalid --lock-timeout "0"' "$T"/stderr || fail "no message for --lock-timeout 0"
expect_exit 64 snap create --restore-point-only --barrier-deadline 5x
grep -q 'invalid --barrier-deadline "5x"' "$T"/stderr || fail "no message for --barrier-deadline 5x"
expect_exit 64 snap create --restore-point-only --lock-timeout 2s --barrier-deadline 1s
grep -q -- "--lock-timeout (2000 ms) is longer than --barrier-deadline (1000 ms)" "$T"/stderr ||
    fail "no message for a lock timeout longer than the deadline"
expect_exit 64 snap create --restore-point-only --lock-timeout 11s
grep -q -- "--lock-timeout (11000 ms) is longer than barrier.deadline (10000 ms)" "$T"/stderr ||
    fail "no message for a lock timeout longer than the file's deadline"
write_config "$T"/bad.yaml "lock_timeout: 3s" "deadline: 1s"
expect_exit 64 as_pg "$SNAP" -c "$T"/bad.yaml create --restore-point-only
grep -q "barrier: lock_timeout (3000 ms) is longer than deadline (1000 ms)" "$T"/stderr ||
    fail "no message for the file's lock_timeout longer than its deadline"

note "steady load, four workers: the printed figure is never below what the application saw"
app_start "$T"/app-d.log 4 5
for i in 1 2 3; do
    sleep 0.5
    t1=$(now)
    snap create --restore-point-only --label "load$i" --json >"$T/d$i.json" 2>"$T/d$i.err" ||
        { cat "$T/d$i.err"; fail "create under load failed"; }
    t2=$(now)
    read -r n_d max_d < <(app_waits "$T"/app-d.log "$t1" "$t2")
    blocked=$(json_get barrier_blocked_ms <"$T/d$i.json")
    echo "load $i: create printed blocked $blocked ms (lock wait $(json_get barrier_lock_wait_ms <"$T/d$i.json") ms," \
        "held $(json_get barrier_held_ms <"$T/d$i.json") ms, $(json_get barrier_attempts <"$T/d$i.json") attempt(s));" \
        "the application's longest wait of $n_d commits: $max_d ms"
    le "$max_d" "$(python3 -c "print($blocked + 100)")" ||
        fail "the application waited $max_d ms, create printed $blocked ms"
done
app_stop
assert_eq "$(psql_at "${PORT[w1]}" -c "SELECT count(*) FROM pg_prepared_xacts")" 0 "prepared transactions left"
echo "commit barrier checks passed"
