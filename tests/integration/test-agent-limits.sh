#!/usr/bin/env bash
# `pitr-agent serve` against clients that connect and never speak TLS, with few file
# descriptors (ulimit -n 64), beside a real PostgreSQL 15:
#  1. defaults: a connection that never starts its handshake is closed within the handshake
#     timeout (5 s); 100 such connections at once are all closed by the agent, which meanwhile
#     serves the orchestrator's certificate (GET /v1/status); the connection cap (half of 64)
#     keeps the agent from running out of descriptors, and its log stays small;
#  2. --max-connections 500, more than the descriptors allow: accept() fails with "Too many
#     open files". With 100 idle connections, the oldest of them are closed to free
#     descriptors for those waiting, so the real client is served long before the (30 s)
#     handshake timeout, and the line is logged at most about once a second. With every descriptor held by connections past their handshake (idle clients
#     with the right certificate), accept() keeps failing: the agent pauses between tries
#     instead of retrying in a busy loop (the suppressed counts of the log line say how
#     often it tried), and accepts again once those clients leave;
#  3. a burst of refused handshakes (no client certificate) is logged at most 20 lines at once,
#     and the next line after a pause says how many were held back.
# Bad values of the new options are usage errors.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-tls.sh"
. "$(dirname "$0")/lib-pg.sh"
require curl openssl timeout
AGENT=$PITR_BIN/pitr-agent
[[ -x $AGENT ]] || fail "$AGENT is missing: run 'make build-tests' first"

P=$T/pki
make_pki "$P"
REPO=$T/repo
init_repo "$REPO"
"$SNAP" -r "$REPO" key export "$T"/repo.key >/dev/null 2>&1 || fail "key export failed"
PGPORT=$(free_port 21710)
AP=$(free_port 21760)
URL=https://127.0.0.1:$AP
PGDATA=$T/pg1
pg_init "$PGDATA" "$PGPORT"
pg_start "$PGDATA" "$T"/pg1.log
CONNINFO="host=127.0.0.1 port=$PGPORT user=postgres dbname=postgres"

AGENT_PID=
# start_agent LOG [SERVE OPTION]...: the agent with at most 64 open files.
start_agent() {
    local log=$1
    shift
    : >"$log"
    AGENT_LOG=$log
    (
        ulimit -n 64
        exec env -u PITR_PASSPHRASE "$AGENT" -r "$REPO" --key-file "$T"/repo.key -n main \
            -d "$CONNINFO" -D "$PGDATA" serve --listen "127.0.0.1:$AP" \
            --tls-cert "$P"/server.crt --tls-key "$P"/server.key --tls-ca "$P"/ca.crt \
            --pg-log "$T"/pg1.log "$@"
    ) >>"$log" 2>&1 &
    AGENT_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        grep -q 'serving on' "$log" && break
        kill -0 "$AGENT_PID" 2>/dev/null || { cat "$log" >&2; fail "the agent exited at start"; }
        sleep 0.1
    done
    grep -q 'serving on' "$log" || { cat "$log" >&2; fail "the agent did not start within 10 s"; }
    grep -q '^Max open files *64 ' /proc/$AGENT_PID/limits || fail "the agent does not run with ulimit -n 64"
}
stop_agent() {
    [[ -n $AGENT_PID ]] && kill -0 "$AGENT_PID" 2>/dev/null || return 0
    kill -TERM "$AGENT_PID"
    local i
    for ((i = 0; i < 100; i++)); do
        kill -0 "$AGENT_PID" 2>/dev/null || { AGENT_PID=; return 0; }
        sleep 0.1
    done
    kill -KILL "$AGENT_PID" 2>/dev/null || true
    AGENT_PID=
}
cleanup_hooks+=("stop_agent")

# status_ok [pg]: the orchestrator's certificate gets 200 from GET /v1/status (within 60 s,
# or $STATUS_MAX_TIME);
# with "pg", the agent reached PostgreSQL too (it cannot when connections take every
# descriptor, as in part 2).
status_ok() {
    local code
    code=$(curl -sS --max-time "${STATUS_MAX_TIME:-60}" --cacert "$P"/ca.crt --cert "$P"/client.crt \
        --key "$P"/client.key -o "$T"/body -w '%{http_code}' "$URL"/v1/status) ||
        { tail -20 "$AGENT_LOG"; fail "curl GET /v1/status failed: the agent did not serve a real client"; }
    assert_eq "$code" 200 "GET /v1/status"
    python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); sys.exit(0 if j["node"] == "main" and (j["postgres"]["reachable"] or sys.argv[2] != "pg") else 1)' \
        "$T"/body "${1:-}" || fail "unexpected status: $(cat "$T"/body)"
}

# idle N SECONDS: open N TCP connections that never send a byte and wait, at most SECONDS,
# until the agent has closed them all; prints {"opened", "closed", "last_close_s"} as JSON.
cat >"$T"/idle.py <<'PY'
import json, selectors, socket, sys, time
port, n, limit = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
t0 = time.monotonic()
sel = selectors.DefaultSelector()
opened = 0
for i in range(n):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    sel.register(s, selectors.EVENT_READ)
    opened += 1
closed, last = 0, 0.0
while closed < opened and time.monotonic() - t0 < limit:
    for key, _ in sel.select(timeout=0.2):
        try:
            data = key.fileobj.recv(4096)
        except OSError:
            data = b""
        if data:
            continue  # (a TLS alert, say: the end follows)
        sel.unregister(key.fileobj)
        key.fileobj.close()
        closed += 1
        last = time.monotonic() - t0
print(json.dumps({"opened": opened, "closed": closed, "last_close_s": round(last, 1)}))
PY
idle() { python3 "$T"/idle.py "$AP" "$@"; }

# held SECONDS: as many connections with the orchestrator's certificate as the agent accepts
# (stopping at the first whose handshake does not end within 2 s), then 10 plain ones, all
# idle; all closed after SECONDS. Prints how many handshakes succeeded.
cat >"$T"/held.py <<'PY'
import socket, ssl, sys, time
port, hold, pki = int(sys.argv[1]), float(sys.argv[2]), sys.argv[3]
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.load_verify_locations(pki + "/ca.crt")
ctx.load_cert_chain(pki + "/client.crt", pki + "/client.key")
held = []
for i in range(200):
    s = socket.create_connection(("127.0.0.1", port), timeout=2)
    try:
        held.append(ctx.wrap_socket(s, server_hostname="127.0.0.1"))
    except (OSError, ssl.SSLError):
        s.close()
        break
    time.sleep(0.02)  # the agent reads our Finished: the handshake is over on its side too
for i in range(10):
    s = socket.socket()
    s.setblocking(False)
    try:
        s.connect(("127.0.0.1", port))
    except BlockingIOError:
        pass
    held.append(s)
print(len(held) - 10, flush=True)
time.sleep(hold)
PY

# log_lines PATTERN LOG: how many lines of LOG match.
log_lines() { grep -c "$1" "$2" || true; }

note "bad option values are usage errors"
for bad in "--max-connections 0" "--max-connections many" "--handshake-timeout 0" "--handshake-timeout 1s"; do
    # shellcheck disable=SC2086 # (word splitting wanted)
    expect_exit 64 "$AGENT" -r "$REPO" -D "$PGDATA" serve $bad
done

note "1. defaults at ulimit -n 64"
LOG1=$T/agent1.log
start_agent "$LOG1" -v
grep -q 'at most 32 connections' "$LOG1" || fail "the agent does not say it serves at most 32 connections"
status_ok pg
res=$(idle 1 30)
echo "one idle connection: $res"
[[ $(json_get closed <<<"$res") == 1 ]] || fail "a connection that never handshakes was still open after 30 s"
(($(json_get last_close_s <<<"$res" | cut -d. -f1) <= 8)) ||
    fail "a connection that never handshakes was closed after $(json_get last_close_s <<<"$res") s, not within the 5 s timeout"
grep -q 'no TLS handshake within 5 s' "$LOG1" || fail "the closing is not logged"

idle 100 60 >"$T"/idle1.json &
IDLE_PID=$!
sleep 1
status_ok pg # while the 100 are connected or being dropped
wait "$IDLE_PID" || fail "the idle clients failed"
res=$(cat "$T"/idle1.json)
echo "100 idle connections: $res"
assert_eq "$(json_get closed <<<"$res")" 100 "idle connections the agent closed within 60 s"
status_ok pg
kill -0 "$AGENT_PID" || fail "the agent is gone"
emfile=$(log_lines 'Too many open files' "$LOG1")
assert_eq "$emfile" 0 "\"Too many open files\" lines with the default connection cap"
assert_eq "$(log_lines 'refused TLS connection' "$LOG1")" 0 "connections the agent closed itself logged as refused"
lines=$(wc -l <"$LOG1")
bytes=$(wc -c <"$LOG1")
echo "agent log: $lines lines, $bytes bytes"
((lines < 150 && bytes < 64 * 1024)) || { tail -50 "$LOG1"; fail "the agent log grew to $lines lines, $bytes bytes"; }
stop_agent

note "2. --max-connections 500 at ulimit -n 64: accept() runs out of descriptors"
LOG2=$T/agent2.log
# Handshakes get 30 s here: a client that waits behind the idle ones gets in well before that
# only because a waiting client makes the agent close the oldest unfinished handshake.
start_agent "$LOG2" --max-connections 500 --handshake-timeout 30
grep -q 'more than half the open-file limit' "$LOG2" || fail "no warning that 500 connections is more than the descriptors allow"
t0=$SECONDS
idle 100 60 >"$T"/idle2.json &
IDLE_PID=$!
sleep 1
STATUS_MAX_TIME=20 status_ok
wait "$IDLE_PID" || fail "the idle clients failed"
res=$(cat "$T"/idle2.json)
elapsed=$((SECONDS - t0))
echo "100 idle connections: $res, $elapsed s"
assert_eq "$(json_get closed <<<"$res")" 100 "idle connections the agent closed within 60 s"
status_ok
kill -0 "$AGENT_PID" || fail "the agent is gone"
emfile=$(log_lines 'could not accept a connection on .*Too many open files' "$LOG2")
lines=$(wc -l <"$LOG2")
bytes=$(wc -c <"$LOG2")
echo "agent log: $lines lines, $bytes bytes, $emfile of them \"Too many open files\" over $elapsed s"
grep 'Too many open files' "$LOG2" | head -3
((emfile >= 1)) || fail "accept() never ran out of descriptors: the test did not test the pause"
((emfile <= elapsed + 3)) || fail "\"Too many open files\" logged $emfile times in $elapsed s: more than once a second"
again=$(log_lines 'accepting connections on .* again' "$LOG2")
((emfile + again <= elapsed + 3)) || fail "\"Too many open files\" and \"accepting again\" logged $((emfile + again)) times in $elapsed s: more than once a second"
((lines < 150 && bytes < 64 * 1024)) || { tail -50 "$LOG2"; fail "the agent log grew to $lines lines, $bytes bytes"; }

note "every descriptor held by connections past their handshake"
before=$(wc -l <"$LOG2")
n=$(python3 "$T"/held.py "$AP" 4 "$P") || fail "the clients holding connections failed"
echo "$n connections with a certificate held for 4 s"
((n > 20)) || fail "only $n connections were accepted"
tail -n +$((before + 1)) "$LOG2" >"$T"/held.log
cat "$T"/held.log
emfile=$(log_lines 'could not accept a connection on .*Too many open files' "$T"/held.log)
((emfile >= 1)) || fail "accept() never failed while the descriptors were held"
# One line a second at most, each counting the failures held back since the one before:
# pausing 100 ms between tries makes about 10, a busy loop thousands.
most=$(sed -n 's/.*Too many open files.*(\([0-9]*\) similar messages suppressed).*/\1/p' "$T"/held.log | sort -n | tail -1)
echo "at most ${most:-0} failures of accept() between two lines"
((${most:-0} <= 30)) || fail "accept() failed ${most} times between two log lines: a busy loop, not a pause"
wait_until 20 grep -q 'accepting connections on .* again' "$LOG2" ||
    fail "the agent does not say it accepts connections again"
status_ok
kill -0 "$AGENT_PID" || fail "the agent is gone"
stop_agent

note "3. a burst of refused handshakes"
LOG3=$T/agent3.log
start_agent "$LOG3"
t0=$SECONDS
for ((i = 0; i < 60; i++)); do
    curl -s --max-time 10 --cacert "$P"/ca.crt "$URL"/v1/status >/dev/null 2>&1 &&
        fail "a client without a certificate was served"
done
elapsed=$((SECONDS - t0))
sleep 1.5 # a token for the next line
curl -s --max-time 10 --cacert "$P"/ca.crt "$URL"/v1/status >/dev/null 2>&1 &&
    fail "a client without a certificate was served"
wait_until 10 grep -q 'similar messages suppressed' "$LOG3" ||
    { tail "$LOG3"; fail "the line after the burst does not say how many were held back"; }
refusals=$(log_lines 'refused TLS connection' "$LOG3")
echo "61 refused handshakes in about $((elapsed + 2)) s: $refusals lines"
grep 'similar messages suppressed' "$LOG3"
((refusals <= 20 + 2 * (elapsed + 3))) || fail "$refusals refusal lines: the burst was not limited"
status_ok pg
stop_agent
for log in "$LOG1" "$LOG2" "$LOG3"; do
    echo "--- $(basename "$log"):"
    cat "$log"
done
echo "all connection limit checks done"
