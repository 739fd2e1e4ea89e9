# PostgreSQL 15 servers for integration tests: started by the test itself as the postgres OS
# user on loopback ports, data under the scratch directory $T. Source lib.sh first.
PGBIN=/usr/lib/postgresql/15/bin
require runuser
[[ -x $PGBIN/postgres ]] || fail "PostgreSQL 15 is not installed ($PGBIN)"
# The servers (and archive_command, which they run) are postgres: it must reach $T.
chown postgres: "$T"
mkdir -p "$T"/sock
chown postgres: "$T"/sock
as_pg() { runuser -u postgres -- "$@"; }

# A free loopback port from $1 on, below the kernel's range for client ports: a server that
# binds minutes after the port was picked must not find it taken by a psql or curl connection
# (or its TIME_WAIT). The port stays reserved for this test (a file naming its pid under
# /tmp/pitr-test-ports) so another test run on the machine does not pick it meanwhile.
PORT_RESERVATIONS=/tmp/pitr-test-ports
free_port() {
    python3 - "$1" "$$" "$PORT_RESERVATIONS" <<'PY'
import os, socket, sys
base, owner, rdir = int(sys.argv[1]), sys.argv[2], sys.argv[3]
client_lo = int(open("/proc/sys/net/ipv4/ip_local_port_range").read().split()[0])
os.makedirs(rdir, exist_ok=True)
def reserve(port):
    path = f"{rdir}/{port}"
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        try:
            pid = int(open(path).read().strip() or 0)
        except (OSError, ValueError):
            return False
        if pid and os.path.exists(f"/proc/{pid}"):
            return False
        os.unlink(path)  # left by a run that was killed
        return reserve(port)
    os.write(fd, owner.encode())
    os.close(fd)
    return True
for port in range(base, client_lo):
    if not reserve(port):
        continue
    s = socket.socket()
    try:
        s.bind(("127.0.0.1", port))
    except OSError:
        os.unlink(f"{rdir}/{port}")
        continue
    finally:
        s.close()
    print(port)
    sys.exit(0)
sys.exit(f"no free port between {base} and {client_lo}")
PY
}
release_ports() {
    local f
    for f in "$PORT_RESERVATIONS"/*; do
        [[ -f $f && $(cat "$f" 2>/dev/null) == "$$" ]] && rm -f "$f"
    done
    return 0
}
cleanup_hooks+=(release_ports)
psql_at() { local port=$1; shift; as_pg "$PGBIN"/psql -h 127.0.0.1 -p "$port" -U postgres -d postgres -XAtq -v ON_ERROR_STOP=1 "$@"; }
# pg_init DATADIR PORT [ARCHIVE_COMMAND]: a new cluster with data checksums, WAL archiving on.
pg_init() {
    as_pg "$PGBIN"/initdb -k -A trust -U postgres -D "$1" >/dev/null || fail "initdb of $1 failed"
    cat >>"$1"/postgresql.conf <<CONF
listen_addresses = '127.0.0.1'
port = $2
unix_socket_directories = '$T/sock'
wal_level = replica
archive_mode = on
archive_command = '${3:-/bin/true}'
max_wal_size = 128MB
max_prepared_transactions = 50
log_checkpoints = off
CONF
}
pg_start() { # pg_start DATADIR LOG
    as_pg "$PGBIN"/pg_ctl -D "$1" -l "$2" -w -t 90 start >/dev/null ||
        { tail -30 "$2" >&2; fail "server in $1 did not start"; }
    cleanup_hooks+=("as_pg '$PGBIN/pg_ctl' -D '$1' -m immediate stop >/dev/null 2>&1")
}
pg_stop() { as_pg "$PGBIN"/pg_ctl -D "$1" -m fast -w stop >/dev/null || fail "could not stop the server in $1"; }
# pg_ctl -w returns once a hot standby accepts connections: wait for the end of recovery.
wait_promoted() { # wait_promoted PORT LOG
    local i
    for ((i = 0; i < 900; i++)); do
        [[ $(psql_at "$1" -c "SELECT pg_is_in_recovery()" 2>/dev/null) == f ]] && return 0
        sleep 0.1
    done
    tail -30 "$2" >&2
    fail "server on port $1 did not finish recovery within 90 s"
}
