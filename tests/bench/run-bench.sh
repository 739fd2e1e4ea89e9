#!/usr/bin/env bash
# Benchmarks for the chunk store. Every figure is printed beside a reference measured in the
# same run on the same bytes (openssl speed, zstd -b, cat, borg, restic). Nothing here asserts
# a time: the numbers are for people to read.
#
#   BENCH_DIR   scratch space (default /var/tmp/pitr-bench; needs ~15 GB)
#   BENCH_SCALE pgbench scale of the main input (default 60, about 1 GiB)
#   BENCH_DAYS  set to 0 to skip the five-day storage comparison (pgbench -s 100)
#   BENCH_MAIN  set to 0 to run only the five-day comparison
set -euo pipefail
BUILD=${BUILD:-build}
SNAP="$PWD/$BUILD/bin/pitr-snap"
PGBIN=/usr/lib/postgresql/15/bin
DIR=${BENCH_DIR:-/var/tmp/pitr-bench}
SCALE=${BENCH_SCALE:-60}
DAYS=${BENCH_DAYS:-1}
MAIN=${BENCH_MAIN:-1}
export PITR_PASSPHRASE=bench-passphrase BORG_PASSPHRASE=bench-passphrase RESTIC_PASSWORD=bench-passphrase
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
mkdir -p "$DIR"; chown postgres "$DIR"

now() { date +%s.%N; }
mbps() { python3 -c "import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/t/1e6:8.1f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:6.2f}x' if b>0 else 'n/a')" "$1" "$2"; }
dirsize() { du -sb "$1" | cut -f1; }
timed() { local t0; t0=$(now); "$@" >/dev/null 2>&1; python3 -c "import sys; print(float(sys.argv[2])-float(sys.argv[1]))" "$t0" "$(now)"; }
drop_caches() { sync; echo 3 > /proc/sys/vm/drop_caches 2>/dev/null || true; }
row() { printf '  %-44s %10s MB/s   %s\n' "$1" "$2" "${3:-}"; }

# A PostgreSQL data directory made by pgbench, shut down cleanly: realistic mixed input.
make_pgdata() { # DIR SCALE PORT
    local d=$1 scale=$2 port=$3
    [[ -f $d/PG_VERSION && -f $d.scale-$scale ]] && return 0
    rm -rf "$d"
    su postgres -c "$PGBIN/initdb -D $d -k >/dev/null"
    su postgres -c "$PGBIN/pg_ctl -D $d -o '-p $port -k /tmp -c listen_addresses=127.0.0.1' -l $d.log -w start >/dev/null"
    su postgres -c "$PGBIN/pgbench -h 127.0.0.1 -p $port -i -s $scale -q postgres >/dev/null 2>&1"
    su postgres -c "$PGBIN/pg_ctl -D $d -m fast stop >/dev/null"
    touch "$d.scale-$scale"
}

if [[ $MAIN != 0 ]]; then
echo "== references (same machine, same run)"
openssl speed -seconds 2 -evp sha256 2>/dev/null | awk '/^sha256/ {printf "  openssl sha256 (16 KiB blocks)              %10.1f MB/s\n", $(NF-1)/1000}'
openssl speed -seconds 2 -evp aes-256-gcm 2>/dev/null | awk '/^AES-256-GCM|^aes-256-gcm/ {printf "  openssl aes-256-gcm (16 KiB blocks)         %10.1f MB/s\n", $(NF-1)/1000}'

SRC="$DIR/pgdata-s$SCALE"
make_pgdata "$SRC" "$SCALE" 55433
BYTES=$(dirsize "$SRC")
echo "== input: pgbench -s $SCALE data directory, $BYTES bytes, $(find "$SRC" -type f | wc -l) files"
TAR="$DIR/pgdata-s$SCALE.tar"
[[ -f $TAR ]] || tar cf "$TAR" -C "$SRC" .
zstd -b3 -q "$TAR" 2>&1 | tail -1 | sed 's/^/  zstd -b3 on the tarball: /'
t=$(timed sh -c "find '$SRC' -type f -exec cat {} + > /dev/null"); row "cat of every file (page cache warm)" "$(mbps "$BYTES" "$t")"

echo "== small chunks: compressed in groups (what the repository does) or with a trained dictionary"
"$PWD/$BUILD/tests/helpers/bench-smallchunks" 8192 131072 3 $(find "$SRC/base" -type f -size +100k) | sed 's/^/  /'

echo "== (a) first backup, (b) same input again, (c) restore"
R="$DIR/repo-pitr"; rm -rf "$R" "$DIR/restore-pitr"
"$SNAP" -q -r "$R" init
ta=$(timed "$SNAP" -q -r "$R" store "$SRC" --name a)
tb=$(timed "$SNAP" -q -r "$R" store "$SRC" --name b)
drop_caches
tc=$(timed "$SNAP" -q -r "$R" restore a "$DIR/restore-pitr")
diff -r "$SRC" "$DIR/restore-pitr" >/dev/null || { echo "restore differs from the source" >&2; exit 1; }
rs_pitr=$(dirsize "$R/packs")

B="$DIR/repo-borg"; rm -rf "$B" "$DIR/restore-borg"
borg init --encryption=repokey "$B" >/dev/null 2>&1
tab=$(timed borg create --compression zstd,3 "$B::a" "$SRC")
tbb=$(timed borg create --compression zstd,3 "$B::b" "$SRC")
rs_borg=$(dirsize "$B")

Q="$DIR/repo-restic"; rm -rf "$Q" "$DIR/restore-restic"
restic -q init --repo "$Q" >/dev/null
taq=$(timed restic -q --repo "$Q" backup "$SRC")
tbq=$(timed restic -q --repo "$Q" backup "$SRC")
drop_caches
tcq=$(timed restic -q --repo "$Q" restore latest --target "$DIR/restore-restic")
rs_restic=$(dirsize "$Q")

row "(a) pitrfs first backup" "$(mbps "$BYTES" "$ta")" "$(ratio "$tab" "$ta") borg, $(ratio "$taq" "$ta") restic (speed ratio)"
row "    borg create (zstd,3, repokey)" "$(mbps "$BYTES" "$tab")"
row "    restic backup" "$(mbps "$BYTES" "$taq")"
row "(b) pitrfs same input again" "$(mbps "$BYTES" "$tb")" "$(ratio "$tbb" "$tb") borg, $(ratio "$tbq" "$tb") restic"
row "    borg again" "$(mbps "$BYTES" "$tbb")"
row "    restic again" "$(mbps "$BYTES" "$tbq")"
row "(c) pitrfs restore (cold cache)" "$(mbps "$BYTES" "$tc")" "$(ratio "$tcq" "$tc") restic"
row "    restic restore" "$(mbps "$BYTES" "$tcq")"
printf '  %-44s %10s bytes   %s\n' "repository size pitrfs (packs)" "$rs_pitr" "$(ratio "$rs_pitr" "$rs_borg") of borg, $(ratio "$rs_pitr" "$rs_restic") of restic"
printf '  %-44s %10s bytes\n' "  pitrfs local index cache (LMDB)" "$(dirsize "$R/index")"
printf '  %-44s %10s bytes\n' "repository size borg" "$rs_borg" "repository size restic" "$rs_restic"
rm -rf "$DIR/restore-pitr" "$DIR/restore-restic"

echo "== peak memory against input size, incompressible stream (sampled every 50 ms)"
echo "   anonymous = the process's own memory; file = mapped files, mostly the LMDB index cache"
gen() { openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null | head -c "$1"; }
M="$DIR/repo-mem"
for size in 200M 2G; do
    rm -rf "$M"; "$SNAP" -q -r "$M" init --scrypt-n 1024
    gen "$size" | "$SNAP" -q -r "$M" store --stdin --name m >/dev/null &
    pid=$!; maxa=0; maxf=0
    while kill -0 $pid 2>/dev/null; do
        read -r a f < <(awk '/RssAnon/ {a=$2} /RssFile/ {f=$2} END {print a+0, f+0}' /proc/$pid/status 2>/dev/null || echo "0 0")
        (( a > maxa )) && maxa=$a; (( f > maxf )) && maxf=$f
        sleep 0.05
    done
    wait $pid
    printf '  %-44s %8s KiB anonymous %8s KiB file   (index %s bytes)\n' "store --stdin of $size" "$maxa" "$maxf" "$(dirsize "$M/index")"
done
rm -rf "$M"
fi

[[ $DAYS == 0 ]] && exit 0
echo "== storage over five days: pgbench -s 100; each later day 30000 pgbench transactions, an UPDATE"
echo "   of 2% of pgbench_accounts (a contiguous aid range, a different one each day), VACUUM and"
echo "   CHECKPOINT; every day a pg_basebackup -Fp copy is backed up by each tool"
D="$DIR/days"; mkdir -p "$D"; chown postgres "$D"
PGD="$D/pgdata" COPY="$D/copy" PORT=55434
make_pgdata "$PGD" 100 $PORT
rm -rf "$D/repo-pitr" "$D/repo-borg-fixed" "$D/repo-borg" "$D/repo-restic"
"$SNAP" -q -r "$D/repo-pitr" init
borg init --encryption=repokey "$D/repo-borg-fixed" >/dev/null 2>&1
borg init --encryption=repokey "$D/repo-borg" >/dev/null 2>&1
restic -q init --repo "$D/repo-restic" >/dev/null
psql_() { su postgres -c "$PGBIN/psql -h 127.0.0.1 -p $PORT -qAt -c \"$1\" postgres"; }
su postgres -c "$PGBIN/pg_ctl -D $PGD -o '-p $PORT -k /tmp -c listen_addresses=127.0.0.1' -l $PGD.log -w start >/dev/null"
trap 'su postgres -c "$PGBIN/pg_ctl -D $PGD -m fast stop" >/dev/null 2>&1 || true' EXIT
rows=$(psql_ "SELECT count(*) FROM pgbench_accounts")
for day in 1 2 3 4 5; do
    if [[ $day -gt 1 ]]; then
        su postgres -c "$PGBIN/pgbench -h 127.0.0.1 -p $PORT -n -c 2 -j 2 -t 15000 postgres >/dev/null 2>&1"
        lo=$(( (day - 2) * rows / 50 + 1 )) hi=$(( (day - 1) * rows / 50 ))
        psql_ "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid BETWEEN $lo AND $hi"
        psql_ "VACUUM"; psql_ "CHECKPOINT"
    fi
    rm -rf "$COPY"
    su postgres -c "$PGBIN/pg_basebackup -h 127.0.0.1 -p $PORT -D $COPY -Fp -X fetch -c fast"
    "$SNAP" -q -r "$D/repo-pitr" store "$COPY" --name "day$day" >/dev/null
    borg create --compression zstd,3 --chunker-params fixed,8192 "$D/repo-borg-fixed::day$day" "$COPY"
    borg create --compression zstd,3 "$D/repo-borg::day$day" "$COPY"
    restic -q --repo "$D/repo-restic" backup "$COPY" >/dev/null
    printf '  day %d (%s): pitrfs %11s  borg fixed,8192 %11s  borg default %11s  restic %11s bytes\n' "$day" \
        "$(du -sh "$COPY" | cut -f1)" "$(dirsize "$D/repo-pitr/packs")" "$(dirsize "$D/repo-borg-fixed")" \
        "$(dirsize "$D/repo-borg")" "$(dirsize "$D/repo-restic")"
done
p=$(dirsize "$D/repo-pitr/packs"); bf=$(dirsize "$D/repo-borg-fixed"); bd=$(dirsize "$D/repo-borg"); rq=$(dirsize "$D/repo-restic")
echo "  pitrfs local index cache (LMDB, rebuildable, not counted above): $(dirsize "$D/repo-pitr/index") bytes"
echo "  after day 5: pitrfs/borg-fixed $(ratio "$p" "$bf") (target <= 0.85x), pitrfs/borg $(ratio "$p" "$bd"), pitrfs/restic $(ratio "$p" "$rq") (targets <= 0.50x)"
