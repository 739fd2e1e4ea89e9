#!/usr/bin/env bash
# Every command block of README.md runs, so that the README cannot drift from the programs.
# The fenced blocks are taken from README.md as they are written, in order:
#   ```sh     run with bash -e -o pipefail, as root, or as postgres after <!-- as: postgres -->;
#   ```yaml   written to the file named by <!-- file: NAME --> before it;
#   ```text   a listing, not run;
# and a block right after <!-- not-tested: REASON --> is not run (it would run the whole suite,
# or install into this machine). Any other block, a block that fails, and a README without the
# blocks below fail the test. The machine the README assumes is made first: a PostgreSQL 15
# server with its data directory in /srv/pg/coord on port 5432 (lib-pg.sh), TLS files in
# /etc/pitr (lib-tls.sh), the programs of this build in PATH; the README's paths, addresses and
# ports are replaced by the test's (table SUBST below), and the PostgreSQL client variables
# point at the test's server, as the defaults of a Debian server point at its own.
# What the commands leave is then checked: the copy out of the mount is the tree itself (not
# the link of its name), the dump is a dump, the restored node was promoted, and the copy of a
# node started from the mount recovered, on another port, without archiving.
# And the README.md of every source folder names every file the folder holds in git.
. "$(dirname "$0")/lib.sh"
. "$(dirname "$0")/lib-pg.sh"
. "$(dirname "$0")/lib-tls.sh"
require fusermount3 mountpoint runuser setpriv
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"
: "${PITR_SRC:?run through make check (tests/run-tests.sh)}"
README=$PITR_SRC/README.md
[[ -r $README ]] || fail "$README is missing"

note "every folder's README.md names the folder's files"
# A file is named as `name.ext` (for x.c and x.h, `x.c` or `x.h` will do), a subfolder as
# `sub/`; tools/ names the files of tools/common/ as `common/cli.c`.
folder_files() {
    if git -C "$PITR_SRC" rev-parse --git-dir >/dev/null 2>&1; then
        git -C "$PITR_SRC" ls-files -- "$1"
    else
        (cd "$PITR_SRC" && find "$1" -type f)
    fi | sed "s|^$1/||" | grep -vx README.md
}
for d in common chunkstore fuse agent orchestrator tools tests; do
    [[ -r $PITR_SRC/$d/README.md ]] || { defer_fail "$d/README.md is missing"; continue; }
    n=0
    while read -r f; do
        n=$((n + 1))
        if [[ $f == */* && $d != tools ]]; then
            name="\`${f%%/*}/\`"
        else
            name="\`${f%.*}."
        fi
        grep -qF -- "$name" "$PITR_SRC/$d/README.md" || defer_fail "$d/README.md does not name $d/$f"
    done < <(folder_files "$d")
    ((n > 0)) || defer_fail "no files found in $d/"
done

PORT=$(free_port 23600)
APORT=$(free_port $((PORT + 1)))
COPY_PORT=$(free_port $((APORT + 1)))
ROOT=$T/root # stands for / of the machine the README talks about
WORK=$T/work # where the blocks run (pitr.yaml, dumpall.sql)
mkdir -p "$ROOT"/srv/pg "$ROOT"/etc/pitr "$ROOT"/backup "$WORK"
chown postgres: "$ROOT"/srv/pg "$WORK"

# README text -> this test's. One pass: no replacement is looked at again.
SUBST=(
    "/srv/" "$ROOT/srv/"
    "/backup/" "$ROOT/backup/"
    "/etc/pitr" "$ROOT/etc/pitr"
    "/mnt/pitr" "$ROOT/mnt/pitr"
    "10.0.0.1" "127.0.0.1"
    "5432" "$PORT"
    "5440" "$COPY_PORT"
    "18080" "$APORT"
    "PITR_PASSPHRASE=..." "PITR_PASSPHRASE='$PITR_PASSPHRASE'"
)

note "the machine the README assumes"
pg_init "$ROOT"/srv/pg/coord "$PORT"
pg_start "$ROOT"/srv/pg/coord "$T"/coord-first.log
make_pki "$T"/pki
for f in ca.crt client.crt client.key; do cp "$T"/pki/$f "$ROOT"/etc/pitr/; done
mv "$ROOT"/etc/pitr/client.crt "$ROOT"/etc/pitr/orchestrator.crt
mv "$ROOT"/etc/pitr/client.key "$ROOT"/etc/pitr/orchestrator.key
cp "$T"/pki/server.crt "$ROOT"/etc/pitr/agent.crt
cp "$T"/pki/server.key "$ROOT"/etc/pitr/agent.key
chown postgres: "$ROOT"/etc/pitr/*
# The servers these blocks start or restart are stopped at the end, whoever started them.
for d in coord coord-copy; do
    cleanup_hooks+=("as_pg '$PGBIN/pg_ctl' -D '$ROOT/srv/pg/$d' -m immediate stop >/dev/null 2>&1")
done
cleanup_hooks+=("mountpoint -q '$ROOT/mnt/pitr' && fusermount3 -uz '$ROOT/mnt/pitr'")

# pitr-agent serve runs until it is stopped: in PATH before the real one, this starts it in the
# background, returns once it serves, and leaves its pid for the cleanup. Everything else goes
# straight to the real program.
mkdir -p "$T"/shim
cat >"$T"/shim/pitr-agent <<EOF
#!/usr/bin/env bash
for a in "\$@"; do
    [[ \$a == serve ]] || continue
    log=\$(mktemp "$T/agent.XXXXXX.log")
    "$PITR_BIN/pitr-agent" "\$@" >"\$log" 2>&1 &
    echo \$! >>"$T/agent.pids"
    for ((i = 0; i < 100; i++)); do
        grep -q 'serving on' "\$log" && exit 0
        kill -0 \$! 2>/dev/null || break
        sleep 0.1
    done
    cat "\$log" >&2
    exit 1
done
exec "$PITR_BIN/pitr-agent" "\$@"
EOF
chmod 755 "$T"/shim "$T"/shim/pitr-agent
touch "$T"/agent.pids && chown postgres: "$T"/agent.pids
stop_agents() {
    local pid
    while read -r pid; do kill -TERM "$pid" 2>/dev/null || true; done <"$T"/agent.pids
}
cleanup_hooks+=(stop_agents)

note "the blocks of README.md"
mkdir -p "$T"/blocks
python3 - "$README" "$T"/blocks "${SUBST[@]}" <<'PY' || fail "README.md could not be split into blocks"
import re, sys
readme, outdir, pairs = sys.argv[1], sys.argv[2], sys.argv[3:]
subst = dict(zip(pairs[0::2], pairs[1::2]))
pattern = re.compile("|".join(re.escape(k) for k in sorted(subst, key=len, reverse=True)))
lines = open(readme, encoding="utf-8").read().split("\n")
marker_re = re.compile(r"^<!--\s*(not-tested|as|file):\s*(.*?)\s*-->$")
n, i, errors = 0, 0, []
while i < len(lines):
    m = re.match(r"^```(.*)$", lines[i])
    if not m:
        i += 1
        continue
    kind, start = m.group(1).strip(), i + 1
    j = i + 1
    while j < len(lines) and lines[j] != "```":
        j += 1
    if j == len(lines):
        sys.exit(f"README.md:{start}: a block that is never closed")
    body = "\n".join(lines[i + 1:j]) + "\n"
    k = i - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    marker = marker_re.match(lines[k].strip()) if k >= 0 else None
    key, value = (marker.group(1), marker.group(2)) if marker else (None, None)
    n += 1
    what = "skip"
    if key == "not-tested":
        if not value:
            errors.append(f"README.md:{start}: not-tested without a reason")
    elif kind == "text":
        pass
    elif kind == "yaml":
        if key != "file" or not value:
            errors.append(f"README.md:{start}: a yaml block without <!-- file: NAME -->")
        what = f"file {value}"
    elif kind == "sh":
        if key not in (None, "as"):
            errors.append(f"README.md:{start}: <!-- {key}: --> before a shell block")
        what = f"run {value or 'root'}"
    else:
        errors.append(f"README.md:{start}: a block of kind '{kind}': say what it is "
                      "(sh, yaml with <!-- file: -->, text), or why it is not tested")
    with open(f"{outdir}/{n:02d}", "w") as f:
        f.write(pattern.sub(lambda mm: subst[mm.group(0)], body))
    with open(f"{outdir}/{n:02d}.what", "w") as f:
        f.write(f"{start} {what}\n")
    i = j + 1
if errors:
    sys.exit("\n".join(errors))
PY
ENV=(PATH="$T/shim:$PITR_BIN:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
    PGHOST="$T/sock" PGPORT="$PORT" LANG=C.UTF-8 TZ=UTC)
ran=0
for b in "$T"/blocks/??; do
    read -r line what who <"$b.what"
    case $what in
    skip) note "README.md:$line: not run"; continue ;;
    file) note "README.md:$line: $who"; cp "$b" "$WORK/$who"; chown postgres: "$WORK/$who"; continue ;;
    esac
    note "README.md:$line, as $who:"
    cat "$b"
    chmod 644 "$b"
    run=(env -i HOME="$WORK" "${ENV[@]}" bash -e -o pipefail "$b")
    [[ $who == root ]] || run=(setpriv --reuid="$who" --regid="$who" --init-groups "${run[@]}")
    rc=0
    (cd "$WORK" && "${run[@]}") >"$b.log" 2>&1 </dev/null || rc=$?
    cat "$b.log"
    [[ $rc -eq 0 ]] || fail "the block at README.md:$line failed (exit $rc)"
    ran=$((ran + 1))
done
((ran >= 4)) || fail "only $ran blocks of README.md ran: the README lost its examples, or this test lost them"

note "what the blocks left"
[[ -d $ROOT/srv/copy && ! -L $ROOT/srv/copy ]] ||
    fail "cp -a out of the mount did not copy the stored tree: $(ls -ld "$ROOT"/srv/copy 2>&1)"
assert_same_tree "$ROOT"/srv/restore "$ROOT"/srv/copy
[[ -f $ROOT/srv/copy/PG_VERSION ]] || fail "the copy holds no data directory"
grep -q "PostgreSQL database cluster dump" "$WORK"/dumpall.sql || fail "dumpall.sql is not pg_dumpall's output"
[[ $(psql_at "$PORT" -c "SELECT pg_is_in_recovery()") == f ]] || fail "the node restored in place is still in recovery"
[[ -f $ROOT/srv/pg/coord-restored/PG_VERSION && -f $ROOT/srv/pg/coord-restored/recovery.signal ]] ||
    fail "pitr-agent restore did not lay the node down for recovery"
wait_promoted "$COPY_PORT" "$ROOT"/srv/pg/coord-copy.log
assert_eq "$(psql_at "$COPY_PORT" -c "SHOW archive_mode")" off "archive_mode of the copy started from the mount"
assert_eq "$(psql_at "$COPY_PORT" -c "SELECT pg_last_wal_replay_lsn() IS NOT NULL")" t "the copy replayed WAL"
echo "ok"
