#!/usr/bin/env bash
# Benchmarks for the chunk store. Every figure is printed beside a reference measured in the
# same run on the same bytes (openssl speed, zstd -b, cat, borg, restic). Nothing here asserts
# a time: the numbers are for people to read.
#
#   BENCH_DIR   scratch space (default /var/tmp/pitr-bench; needs ~15 GB)
#   BENCH_SCALE pgbench scale of the main input (default 60, about 1 GiB)
#   BENCH_DAYS  set to 0 to skip the five-day storage comparison (pgbench -s 100)
#   BENCH_MAIN  set to 0 to skip the references, backup/restore and memory sections
#   BENCH_MOUNT set to 0 to skip reading a snapshot through FUSE (mount.pitrfs, borg mount,
#               restic mount)
#   BENCH_ROUNDS rounds of the backup and restore comparison (default 3; the median is shown,
#               with the range over the rounds in brackets)
#   BENCH_AGENT set to 0 to skip the base backup of a running node (pitr-agent, pg_basebackup,
#               pgbackrest; pgbench -s 100)
#   BENCH_HISTORY set to 0 to skip the history of daily backups: a week of pgbench churn, each
#               day's pg_basebackup copy stored by pitrfs, borg and restic, then the first, middle
#               and newest snapshot restored and read through each tool's mount (at the defaults
#               about 25 GB of scratch space, and 10-20 minutes a filler variant on 2 cores)
#   BENCH_HISTORY_SCALE   pgbench scale of the history (default 100)
#   BENCH_HISTORY_DAYS    days of churn after day 0 (default 7)
#   BENCH_HISTORY_FILLERS the pgbench_accounts.filler variants, each a history of its own (default
#               "realistic stock": text that compresses about 4:1 like real rows, and pgbench's blanks)
set -euo pipefail
BUILD=${BUILD:-build}
SNAP="$PWD/$BUILD/bin/pitr-snap"
PGBIN=/usr/lib/postgresql/15/bin
DIR=${BENCH_DIR:-/var/tmp/pitr-bench}
SCALE=${BENCH_SCALE:-60}
DAYS=${BENCH_DAYS:-1}
MAIN=${BENCH_MAIN:-1}
MOUNT=${BENCH_MOUNT:-1}
AGENT_BENCH=${BENCH_AGENT:-1}
HISTORY=${BENCH_HISTORY:-1}
HSCALE=${BENCH_HISTORY_SCALE:-100}
HDAYS=${BENCH_HISTORY_DAYS:-7}
HFILLERS=${BENCH_HISTORY_FILLERS:-realistic stock}
ROUNDS=${BENCH_ROUNDS:-3}
AGENT="$PWD/$BUILD/bin/pitr-agent"
export PITR_PASSPHRASE=bench-passphrase BORG_PASSPHRASE=bench-passphrase RESTIC_PASSWORD=bench-passphrase
export BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK=yes BORG_RELOCATED_REPO_ACCESS_IS_OK=yes
mkdir -p "$DIR"; chown postgres "$DIR"

now() { date +%s.%N; }
mbps() { python3 -c "import sys; b,t=float(sys.argv[1]),float(sys.argv[2]); print(f'{b/t/1e6:8.1f}')" "$1" "$2"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:6.2f}x' if b>0 else 'n/a')" "$1" "$2"; }
dirsize() { du -sb "$1" | cut -f1; }
# Each command starts with no writeback left from the one before (restic and --no-sync restores
# leave theirs to the kernel), so that no tool pays for another's writes.
timed() { local t0; sync; t0=$(now); "$@" >/dev/null 2>&1; python3 -c "import sys; print(float(sys.argv[2])-float(sys.argv[1]))" "$t0" "$(now)"; }
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

MOUNT_PITRFS="$PWD/$BUILD/bin/mount.pitrfs"
rm -f "$DIR"/mount-*.log
PASSF="$DIR/mount-passphrase"; (umask 077; printf '%s\n' "$PITR_PASSPHRASE" > "$PASSF")
declare -A ra # each mount's kernel read-ahead, as mnt_up found it
# One mount at a time, each in the foreground of a background job so that its process is known;
# mnt_down (also the EXIT trap) unmounts it and ends the process.
mnt_pid="" mnt_dir=""
mnt_down() {
    local i
    [[ -n $mnt_dir ]] && { fusermount3 -u "$mnt_dir" 2>/dev/null || fusermount3 -uz "$mnt_dir" 2>/dev/null || true; }
    if [[ -n $mnt_pid ]]; then
        for ((i = 0; i < 100; i++)); do kill -0 "$mnt_pid" 2>/dev/null || break; sleep 0.1; done
        kill "$mnt_pid" 2>/dev/null || true
        wait "$mnt_pid" 2>/dev/null || true
        [[ -n $mnt_dir ]] && { fusermount3 -u "$mnt_dir" 2>/dev/null || true; }
    fi
    mnt_pid="" mnt_dir=""
}
# The repositories are $MR (pitrfs), $MB (borg; archive $MA, default a) and $MQ (restic).
mnt_up() { # TOOL MOUNTPOINT PATH: mount afresh and wait (at most 60 s) until PATH is there
    local tool=$1 mp=$2 want=$3 log="$DIR/mount-$1.log" end=$((SECONDS + 60))
    mnt_down
    fusermount3 -u "$mp" 2>/dev/null || true # left over from an interrupted run
    mkdir -p "$mp"
    case $tool in
    pitrfs) "$MOUNT_PITRFS" "$MR" "$mp" --foreground -o passphrase_file="$PASSF" >>"$log" 2>&1 & ;;
    pitrfs-dio) "$MOUNT_PITRFS" "$MR" "$mp" --foreground -o passphrase_file="$PASSF",direct_io >>"$log" 2>&1 & ;;
    borg) borg mount -f "$MB::${MA:-a}" "$mp" >>"$log" 2>&1 & ;;
    restic) restic --repo "$MQ" mount "$mp" >>"$log" 2>&1 & ;;
    esac
    mnt_pid=$! mnt_dir=$mp
    while ((SECONDS < end)); do
        [[ -e $want ]] && { ra[$tool]=$(cat "/sys/class/bdi/$(mountpoint -d "$mp")/read_ahead_kb" 2>/dev/null || echo '?'); return 0; }
        if ! kill -0 "$mnt_pid" 2>/dev/null; then
            echo "error: $tool mount on $mp ended before $want appeared; $log ends with:" >&2
            tail -5 "$log" >&2; exit 1
        fi
        sleep 0.1
    done
    echo "error: $tool mount: $want did not appear on $mp within 60 s (log: $log)" >&2; exit 1
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
"$PWD/$BUILD/tests/helpers/bench-smallchunks" 8192 524288 3 $(find "$SRC/base" -type f -size +100k) | sed 's/^/  /'

echo "== (a) first backup, (b) same input again, (c) restore: the median of $ROUNDS rounds"
echo "   (each round runs every tool once, in turn, so a noisy moment hits all of them)"
R="$DIR/repo-pitr" B="$DIR/repo-borg" Q="$DIR/repo-restic"
ta=() tb=() tbf=() tc=() tcn=() tab=() tbb=() tbbf=() taq=() tbq=() tbqf=() tcq=()
for ((round = 1; round <= ROUNDS; round++)); do
    rm -rf "$R" "$B" "$Q"
    "$SNAP" -q -r "$R" init
    ta+=("$(timed "$SNAP" -q -r "$R" store "$SRC" --name a)")
    tb+=("$(timed "$SNAP" -q -r "$R" store "$SRC" --name b)")
    tbf+=("$(timed "$SNAP" -q -r "$R" store "$SRC" --name b --full-read)")
    borg init --encryption=repokey "$B" >/dev/null 2>&1
    tab+=("$(timed borg create --compression zstd,3 "$B::a" "$SRC")")
    tbb+=("$(timed borg create --compression zstd,3 "$B::b" "$SRC")")
    tbbf+=("$(timed borg create --compression zstd,3 --files-cache=disabled "$B::c" "$SRC")")
    restic -q init --repo "$Q" >/dev/null
    taq+=("$(timed restic -q --repo "$Q" backup "$SRC")")
    tbq+=("$(timed restic -q --repo "$Q" backup "$SRC")")
    tbqf+=("$(timed restic -q --repo "$Q" backup --force "$SRC")")
done
for ((round = 1; round <= ROUNDS; round++)); do
    rm -rf "$DIR/restore-pitr"; drop_caches
    tc+=("$(timed "$SNAP" -q -r "$R" restore a "$DIR/restore-pitr")")
    diff -r "$SRC" "$DIR/restore-pitr" >/dev/null || { echo "restore differs from the source" >&2; exit 1; }
    # restic does not sync what it restores; --no-sync is the same promise. The sync afterwards
    # keeps its writeback out of the next measurement.
    rm -rf "$DIR/restore-pitr"; drop_caches
    tcn+=("$(timed "$SNAP" -q -r "$R" restore --no-sync a "$DIR/restore-pitr")"); sync
    diff -r "$SRC" "$DIR/restore-pitr" >/dev/null || { echo "restore --no-sync differs from the source" >&2; exit 1; }
    rm -rf "$DIR/restore-restic"; drop_caches
    tcq+=("$(timed restic -q --repo "$Q" restore latest --target "$DIR/restore-restic")"); sync
done
rs_pitr=$(dirsize "$R/packs") rs_borg=$(dirsize "$B") rs_restic=$(dirsize "$Q")

# ROW LABEL TIMES... : the median's MB/s, the range over the rounds, and ratios to references.
mrow() { # LABEL "TIMES" [REF_NAME "REF_TIMES"]...
    local label=$1 times=$2; shift 2
    # shellcheck disable=SC2086
    python3 - "$BYTES" "$label" "$times" "$@" <<'PY'
import statistics, sys
size, label, times = float(sys.argv[1]), sys.argv[2], [float(t) for t in sys.argv[3].split()]
refs = sys.argv[4:]
med = statistics.median(times)
note = f"({size / max(times) / 1e6:.0f}-{size / min(times) / 1e6:.0f})"
for name, rt in zip(refs[::2], refs[1::2]):
    note += f"  {statistics.median(float(t) for t in rt.split()) / med:.2f}x {name}"
print(f"  {label:<44} {size / med / 1e6:10.1f} MB/s   {note}")
PY
}
mrow "(a) pitrfs first backup" "${ta[*]}" borg "${tab[*]}" restic "${taq[*]}"
mrow "    borg create (zstd,3, repokey)" "${tab[*]}"
mrow "    restic backup" "${taq[*]}"
mrow "(b) pitrfs same input again" "${tb[*]}" borg "${tbb[*]}" restic "${tbq[*]}"
mrow "    borg again" "${tbb[*]}"
mrow "    restic again" "${tbq[*]}"
echo "   every file read again (no files cache), all duplicates:"
mrow "(b) pitrfs again, --full-read" "${tbf[*]}" borg "${tbbf[*]}" restic "${tbqf[*]}"
mrow "    borg again, --files-cache=disabled" "${tbbf[*]}"
mrow "    restic again, --force" "${tbqf[*]}"
mrow "(c) pitrfs restore (cold cache), synced" "${tc[*]}" restic "${tcq[*]}"
mrow "    pitrfs restore --no-sync (as restic)" "${tcn[*]}" restic "${tcq[*]}"
mrow "    restic restore (does not sync)" "${tcq[*]}"
printf '  %-44s %10s bytes   %s\n' "repository size pitrfs (packs)" "$rs_pitr" "$(ratio "$rs_pitr" "$rs_borg") of borg, $(ratio "$rs_pitr" "$rs_restic") of restic"
printf '  %-44s %10s bytes\n' "  pitrfs local index cache (LMDB)" "$(dirsize "$R/index")"
printf '  %-44s %10s bytes\n' "repository size borg" "$rs_borg" "repository size restic" "$rs_restic"
rm -rf "$DIR/restore-pitr" "$DIR/restore-restic"

echo "== peak memory against input size, incompressible stream (sampled every 50 ms)"
echo "   anonymous = the process's own memory; file = mapped files, mostly the LMDB index cache"
# openssl dies of SIGPIPE when head has enough: that is the generator's normal end.
gen() { openssl enc -aes-128-ctr -pass pass:bench -nosalt -pbkdf2 < /dev/zero 2>/dev/null | head -c "$1" || true; }
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

if [[ $MOUNT != 0 ]]; then
mount_repos() { # SRC: store it afresh as snapshot "a" in $MR (pitrfs), $MB (borg), $MQ (restic)
    rm -rf "$MR" "$MB" "$MQ"
    "$SNAP" -q -r "$MR" init
    "$SNAP" -q -r "$MR" store "$1" --name a >/dev/null
    borg init --encryption=repokey "$MB" >/dev/null 2>&1
    borg create --compression zstd,3 "$MB::a" "$1"
    restic -q init --repo "$MQ" >/dev/null
    restic -q --repo "$MQ" backup "$1" >/dev/null
}
echo "== mount: reading a snapshot through FUSE"
echo "   mount.pitrfs, borg mount (zstd,3, repokey) and restic mount of the same pgbench -s $SCALE data"
echo "   directory; each cold figure on a fresh mount after dropping the page cache"
SRC="$DIR/pgdata-s$SCALE"
make_pgdata "$SRC" "$SCALE" 55433
if [[ $MAIN != 0 ]]; then
    MR=$R MB=$B MQ=$Q # made from $SRC by the backup section above, in this run
else
    MR="$DIR/mount-repo-pitr" MB="$DIR/mount-repo-borg" MQ="$DIR/mount-repo-restic"
    mount_repos "$SRC"
fi
MP_PITR="$DIR/mnt-pitr" MP_BORG="$DIR/mnt-borg" MP_RESTIC="$DIR/mnt-restic"
# The data directory's root as each mount shows it: pitrfs by snapshot name, borg and restic
# under the absolute path that was backed up.
P_PITR="$MP_PITR/snapshots/a" P_BORG="$MP_BORG/${SRC#/}" P_RESTIC="$MP_RESTIC/snapshots/latest$(realpath "$SRC")"
read -r FBYTES FREL < <(find "$SRC/base" -type f -printf '%s base/%P\n' | sort -n | tail -1)

trap mnt_down EXIT
trap 'exit 130' INT TERM
declare -A ra t_ls n_ls t_tar b_tar
same() { cmp "$SRC/$FREL" "$1/$FREL" || { echo "error: $1/$FREL differs from the original" >&2; exit 1; }; }

# 1. sequential read of one large file
drop_caches; t_cat_cold=$(timed cat "$SRC/$FREL")
t_cat_warm=$(timed cat "$SRC/$FREL")
mnt_up pitrfs "$MP_PITR" "$P_PITR"; drop_caches
t_p_cold=$(timed cat "$P_PITR/$FREL")
t_p_warm=$(timed cat "$P_PITR/$FREL")
same "$P_PITR"
mnt_up pitrfs-dio "$MP_PITR" "$P_PITR"; drop_caches
t_d_cold=$(timed cat "$P_PITR/$FREL")
t_d_warm=$(timed cat "$P_PITR/$FREL")
same "$P_PITR"
mnt_up borg "$MP_BORG" "$P_BORG"; drop_caches
t_b_cold=$(timed cat "$P_BORG/$FREL")
same "$P_BORG"
mnt_up restic "$MP_RESTIC" "$P_RESTIC"; drop_caches
t_r_cold=$(timed cat "$P_RESTIC/$FREL")
same "$P_RESTIC"
mnt_down

# 2. ls -lR and 3. tar of the whole data directory, each on a fresh mount with a cold cache
for tool in original pitrfs borg restic; do
    case $tool in
    original) root=$SRC ;;
    pitrfs) root=$P_PITR mp=$MP_PITR ;;
    borg) root=$P_BORG mp=$MP_BORG ;;
    restic) root=$P_RESTIC mp=$MP_RESTIC ;;
    esac
    [[ $tool == original ]] || mnt_up "$tool" "$mp" "$root"
    drop_caches
    t_ls[$tool]=$(timed sh -c "cd '$root' && ls -lR . > '$DIR/mount-ls-$tool.txt'")
    n_ls[$tool]=$(grep -cE '^[-dlcbps][-rwxsStT]{9}' "$DIR/mount-ls-$tool.txt" || true)
    [[ $tool == original ]] || mnt_up "$tool" "$mp" "$root"
    drop_caches
    t_tar[$tool]=$(timed sh -c "cd '$root' && tar cf - . | wc -c > '$DIR/mount-tar-$tool.bytes'")
    b_tar[$tool]=$(cat "$DIR/mount-tar-$tool.bytes")
done

# 4. A 1 GiB file that compresses about 2:1 (hex text of random bytes), where pgbench's tables
#    compress 40:1: how the mounts compare when decompression is not nearly free.
HEXD="$DIR/hexfile" HEXF=file1g HBYTES=$((1 << 30))
mkdir -p "$HEXD"
[[ -f $HEXD/$HEXF && $(stat -c %s "$HEXD/$HEXF") == "$HBYTES" ]] || python3 - "$HEXD/$HEXF" "$HBYTES" <<'PY'
import binascii, os, sys
with open(sys.argv[1], "wb") as f:
    left = int(sys.argv[2])
    while left:
        b = binascii.hexlify(os.urandom(min(left, 1 << 22) // 2))
        f.write(b)
        left -= len(b)
PY
MR="$DIR/mount-hex-pitr" MB="$DIR/mount-hex-borg" MQ="$DIR/mount-hex-restic"
mount_repos "$HEXD"
P_PITR="$MP_PITR/snapshots/a" P_BORG="$MP_BORG/${HEXD#/}" P_RESTIC="$MP_RESTIC/snapshots/latest$(realpath "$HEXD")"
declare -A t_hex
for tool in pitrfs pitrfs-dio borg restic; do
    case $tool in
    pitrfs | pitrfs-dio) root=$P_PITR mp=$MP_PITR ;;
    borg) root=$P_BORG mp=$MP_BORG ;;
    restic) root=$P_RESTIC mp=$MP_RESTIC ;;
    esac
    mnt_up "$tool" "$mp" "$root/$HEXF"
    drop_caches
    t_hex[$tool]=$(timed cat "$root/$HEXF")
    cmp "$HEXD/$HEXF" "$root/$HEXF" || { echo "error: $root/$HEXF differs from the original" >&2; exit 1; }
done
mnt_down
trap - EXIT INT TERM

echo "   file: $FREL, the largest relation file of the data directory, $FBYTES bytes; contents"
echo "   checked with cmp through each mount; kernel read-ahead on the mounts: pitrfs ${ra[pitrfs]} KiB,"
echo "   borg ${ra[borg]} KiB, restic ${ra[restic]} KiB"
row "pitrfs mount, cold (fresh mount)" "$(mbps "$FBYTES" "$t_p_cold")" "$(ratio "$t_r_cold" "$t_p_cold") restic mount, $(ratio "$t_b_cold" "$t_p_cold") borg mount (targets >= 3x)"
row "pitrfs mount, warm (second read)" "$(mbps "$FBYTES" "$t_p_warm")" "$(ratio "$t_cat_warm" "$t_p_warm") of cat from page cache (target >= 0.50x)"
row "pitrfs mount -o direct_io, cold" "$(mbps "$FBYTES" "$t_d_cold")" "$(ratio "$t_r_cold" "$t_d_cold") restic mount, $(ratio "$t_b_cold" "$t_d_cold") borg mount"
row "pitrfs mount -o direct_io, second read" "$(mbps "$FBYTES" "$t_d_warm")" "$(ratio "$t_cat_warm" "$t_d_warm") of cat from page cache (chunk cache 256M, no page cache)"
row "    borg mount, cold (fresh mount)" "$(mbps "$FBYTES" "$t_b_cold")"
row "    restic mount, cold (fresh mount)" "$(mbps "$FBYTES" "$t_r_cold")"
row "    cat of the original, cold" "$(mbps "$FBYTES" "$t_cat_cold")"
row "    cat of the original, page cache" "$(mbps "$FBYTES" "$t_cat_warm")"
for tool in pitrfs borg restic original; do
    note="${n_ls[$tool]} entries"
    [[ ${n_ls[$tool]} == "${n_ls[original]}" ]] || note+=" (original: ${n_ls[original]})"
    [[ $tool == pitrfs ]] && note+=", $(ratio "${t_ls[borg]}" "${t_ls[pitrfs]}") borg, $(ratio "${t_ls[restic]}" "${t_ls[pitrfs]}") restic (speed ratio)"
    printf '  %-44s %10.3f s      %s\n' "ls -lR, $tool$([[ $tool == original ]] || echo ' mount'), cold" "${t_ls[$tool]}" "$note"
done
for tool in pitrfs borg restic original; do
    note="${b_tar[$tool]} bytes"
    [[ ${b_tar[$tool]} == "${b_tar[original]}" ]] || note+=" (original: ${b_tar[original]})"
    [[ $tool == pitrfs ]] && note+=", $(ratio "${t_tar[borg]}" "${t_tar[pitrfs]}") borg, $(ratio "${t_tar[restic]}" "${t_tar[pitrfs]}") restic"
    row "tar cf - . | wc -c, $tool$([[ $tool == original ]] || echo ' mount'), cold" "$(mbps "${b_tar[$tool]}" "${t_tar[$tool]}")" "$note"
done
echo "   a 1 GiB file of hex text (random bytes; compresses about 2:1), cold, fresh mount, checked"
echo "   with cmp:"
row "pitrfs mount, cold, 1 GiB of hex text" "$(mbps "$HBYTES" "${t_hex[pitrfs]}")" "$(ratio "${t_hex[restic]}" "${t_hex[pitrfs]}") restic mount, $(ratio "${t_hex[borg]}" "${t_hex[pitrfs]}") borg mount"
row "pitrfs mount -o direct_io, cold, hex text" "$(mbps "$HBYTES" "${t_hex[pitrfs-dio]}")" "$(ratio "${t_hex[restic]}" "${t_hex[pitrfs-dio]}") restic mount, $(ratio "${t_hex[borg]}" "${t_hex[pitrfs-dio]}") borg mount"
row "    borg mount, cold, 1 GiB of hex text" "$(mbps "$HBYTES" "${t_hex[borg]}")"
row "    restic mount, cold, 1 GiB of hex text" "$(mbps "$HBYTES" "${t_hex[restic]}")"
fi

if [[ $AGENT_BENCH != 0 ]]; then
echo "== base backup of a running node, pgbench -s 100, data checksums on: pitr-agent backup beside"
echo "   pg_basebackup -Ft to /dev/null and pgbackrest backup (compress-type=zst), then again after"
echo "   60 s of pgbench (pgbackrest: an incremental backup)"
A="$DIR/agent"; APGD="$DIR/pgdata-s100-node" APORT=55435
make_pgdata "$APGD" 100 $APORT
rm -rf "$A"; mkdir -p "$A/log" "$A/lock"; chown -R postgres "$A"
"$SNAP" -q -r "$A/repo" init --scrypt-n 1024
"$SNAP" -q -r "$A/repo" key export "$A/repo.key"
chown -R postgres "$A"
grep -q "include_if_exists 'pitr-bench.conf'" "$APGD/postgresql.conf" ||
    echo "include_if_exists 'pitr-bench.conf'" >>"$APGD/postgresql.conf"
printf "archive_mode = on\narchive_command = '%s -q -r %s --key-file %s -n bench archive-wal %%p %%f'\n" \
    "$AGENT" "$A/repo" "$A/repo.key" >"$APGD/pitr-bench.conf"
chown postgres "$APGD/pitr-bench.conf"
printf '%s\n' "[global]" "repo1-path=$A/pgbackrest" "compress-type=zst" "start-fast=y" \
    "archive-check=n" "log-level-console=warn" "log-path=$A/log" "lock-path=$A/lock" \
    "[bench]" "pg1-path=$APGD" "pg1-port=$APORT" "pg1-socket-path=/tmp" >"$A/pgbackrest.conf"
chown postgres "$A/pgbackrest.conf"
su postgres -c "$PGBIN/pg_ctl -D $APGD -o '-p $APORT -k /tmp -c listen_addresses=127.0.0.1' -l $APGD.log -w start >/dev/null"
trap 'su postgres -c "$PGBIN/pg_ctl -D $APGD -m fast stop" >/dev/null 2>&1 || true' EXIT
NB=$(du -sb --exclude=pg_wal "$APGD" | cut -f1)
pgbr() { su postgres -c "pgbackrest --config=$A/pgbackrest.conf --stanza=bench $*"; }
pitr_backup() { # the JSON result on stdout
    su postgres -c "env -u PITR_PASSPHRASE $AGENT -q -r $A/repo --key-file $A/repo.key -n bench -d 'host=127.0.0.1 port=$APORT user=postgres dbname=postgres' backup --json"
}
jget() { python3 -c "import json,sys; print(json.load(open(sys.argv[1]))[sys.argv[2]])" "$1" "$2"; }
since() { python3 -c "import sys; print(float(sys.argv[2]) - float(sys.argv[1]))" "$1" "$(now)"; }
pgbr stanza-create >/dev/null
echo "  data directory without pg_wal: $NB bytes"
t_bb=$(timed su postgres -c "$PGBIN/pg_basebackup -h 127.0.0.1 -p $APORT -D - -Ft -X none -c fast >/dev/null")
t0=$(now); pitr_backup >"$A/b1.json"; t_p1=$(since "$t0")
t_r1=$(timed pgbr backup --type=full)
s_r1=$(dirsize "$A/pgbackrest/backup")
s_p1=$(jget "$A/b1.json" stored_bytes)
row "pg_basebackup -Ft -X none > /dev/null" "$(mbps "$NB" "$t_bb")"
row "pgbackrest backup --type=full (zst)" "$(mbps "$NB" "$t_r1")" "repository +$s_r1 bytes"
row "pitr-agent backup" "$(mbps "$NB" "$t_p1")" "repository +$s_p1 bytes, $(jget "$A/b1.json" pages_checked) pages verified"
echo "  pitr-agent/pgbackrest: speed $(ratio "$t_r1" "$t_p1") (target >= 2x), space $(ratio "$s_p1" "$s_r1") (target < 1)"
su postgres -c "$PGBIN/pgbench -h 127.0.0.1 -p $APORT -n -c 2 -j 2 -T 60 postgres" 2>/dev/null | grep -E '^tps' | sed 's/^/  60 s of pgbench: /'
t_r2=$(timed pgbr backup --type=incr)
s_r2=$(( $(dirsize "$A/pgbackrest/backup") - s_r1 ))
t0=$(now); pitr_backup >"$A/b2.json"; t_p2=$(since "$t0")
s_p2=$(jget "$A/b2.json" stored_bytes)
row "pgbackrest backup --type=incr" "$(mbps "$NB" "$t_r2")" "repository +$s_r2 bytes"
row "pitr-agent backup, second" "$(mbps "$NB" "$t_p2")" "repository +$s_p2 bytes"
echo "  second backup adds: pitr-agent/pgbackrest incremental $(ratio "$s_p2" "$s_r2") (target <= 0.40x)"
su postgres -c "$PGBIN/pg_ctl -D $APGD -m fast stop >/dev/null"
trap - EXIT
fi

if [[ $HISTORY != 0 ]]; then
echo "== history: pgbench -s $HSCALE, day 0 then $HDAYS days of 30000 pgbench transactions, an UPDATE of"
echo "   2% of pgbench_accounts (aid % 50 = day) spread over the whole table, VACUUM and CHECKPOINT;"
echo "   each day a pg_basebackup -Fp copy, made again at the same path, is stored by pitrfs, borg"
echo "   (zstd,3, repokey: fixed 8 KiB chunks, and the default chunker) and restic. Then the first,"
echo "   middle and newest snapshot are restored (cold cache; pitrfs --no-sync, as restic) and the"
echo "   pgbench_accounts relation is read with cat through each tool's mount (fresh, cold)"
for tool in borg restic zstd su "$PGBIN/pg_basebackup" "$PGBIN/pgbench" "$SNAP" "$MOUNT_PITRFS"; do
    command -v "$tool" >/dev/null || { echo "error: history: $tool is not installed (make deps-bench, make)" >&2; exit 1; }
done
H="$(realpath "$DIR")/history" HPORT=55436
HPG="$H/pgdata" HCOPY="$H/copy" HR="$H/repo-pitr" HBF="$H/repo-borg-fixed" HBD="$H/repo-borg" HQ="$H/repo-restic"
hist_pg="" # the data directory of the running server, for hist_cleanup
hist_cleanup() {
    mnt_down
    [[ -n $hist_pg ]] && { su postgres -c "$PGBIN/pg_ctl -D $hist_pg -m fast stop" >/dev/null 2>&1 || true; }
    hist_pg=""
    rm -rf --one-file-system "$H"
}
# Whatever the EXIT trap did before this section it still does, after hist_cleanup.
trap_action() { eval "set -- $(trap -p "$1")"; printf '%s' "${3:-}"; }
hist_prev_exit=$(trap_action EXIT)
trap -- "hist_cleanup${hist_prev_exit:+; $hist_prev_exit}" EXIT
trap 'exit 130' INT TERM
hpg_start() { # DATADIR
    su postgres -c "$PGBIN/pg_ctl -D $1 -o '-p $HPORT -k /tmp -c listen_addresses=127.0.0.1' -l $1.log -w start >/dev/null"
    hist_pg=$1
}
hpg_stop() { su postgres -c "$PGBIN/pg_ctl -D $hist_pg -m fast stop >/dev/null"; hist_pg=""; }
hpsql() { su postgres -c "$PGBIN/psql -h 127.0.0.1 -p $HPORT -qAt -v ON_ERROR_STOP=1 -c \"$1\" postgres"; }
# hrun OUT CMD...: run CMD with its standard output to OUT; sets HT to the seconds it took and HM
# to its peak RSS in KiB (of CMD or anything it waited for, as time -f %M). A failing CMD ends the
# script, showing the end of its standard error.
hrun() {
    local out=$1; shift; sync
    python3 -c '
import resource, subprocess, sys, time
t0 = time.monotonic()
with open(sys.argv[1], "wb") as out, open(sys.argv[2], "wb") as err:
    rc = subprocess.call(sys.argv[4:], stdin=subprocess.DEVNULL, stdout=out, stderr=err)
t = time.monotonic() - t0
if rc:
    sys.stderr.write(open(sys.argv[2], errors="replace").read()[-2000:])
    sys.exit(f"error: history: {sys.argv[4]} exited with status {rc}")
with open(sys.argv[3], "w") as f:
    f.write(f"{t:.3f} {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}\n")
' "$out" "$H/last.err" "$H/last.time" "$@"
    read -r HT HM < "$H/last.time"
}
# relfiles ROOT REL: sets files to REL and its further segments REL.1, REL.2... found under ROOT
relfiles() { local f; files=("$2"); for f in "$1/$2".[0-9]*; do [[ -e $f ]] && files+=("${f#"$1"/}"); done; return 0; }
bsum() { stat -c %s "$@" | awk '{ s += $1 } END { print s }'; }
gb() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e9:.2f} GB')" "$1"; }
# The day-0 data directory of a filler variant, made once and kept (like make_pgdata's):
# realistic: filler = an md5, a shorter one, a word and a year (about 4:1 with zstd -3, where the
# stock blank filler is about 40:1), then VACUUM FULL so the table is rewritten densely.
hist_pgdata() { # VARIANT DIR
    local v=$1 d=$2
    [[ -f $d/PG_VERSION && -f $d.ready ]] && return 0
    rm -rf "$d" "$d.ready"
    su postgres -c "$PGBIN/initdb -D $d -k -A trust >/dev/null"
    hpg_start "$d"
    su postgres -c "$PGBIN/pgbench -h 127.0.0.1 -p $HPORT -i -s $HSCALE -q postgres >/dev/null 2>&1"
    if [[ $v == realistic ]]; then
        hpsql "UPDATE pgbench_accounts SET filler = md5(aid::text) || ' ' || left(md5((aid * 7)::text), 8) || ' ' || (ARRAY['retail', 'wholesale', 'online', 'branch'])[1 + aid % 4] || ' customer since ' || (2000 + aid % 24)::text"
        hpsql "VACUUM FULL pgbench_accounts"
    fi
    hpsql "CHECKPOINT"
    hpg_stop
    touch "$d.ready"
}
for variant in $HFILLERS; do
    [[ $variant == realistic || $variant == stock ]] || { echo "error: BENCH_HISTORY_FILLERS: unknown variant $variant" >&2; exit 1; }
    echo "-- filler: $variant"
    hist_t0=$SECONDS
    mnt_down; [[ -z $hist_pg ]] || hpg_stop
    # A mount left by an interrupted run would stop the removal (another file system).
    for m in "$H"/mnt-*; do [[ -d $m ]] && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m" 2>/dev/null || true; }; done
    rm -rf --one-file-system "$H"; mkdir -p "$H"; chown postgres "$H"
    HCACHE="$DIR/history-pgdata-$variant-s$HSCALE"
    hist_pgdata "$variant" "$HCACHE"
    cp -a "$HCACHE" "$HPG"
    hpg_start "$HPG"
    "$SNAP" -q -r "$HR" init
    borg init --encryption=repokey "$HBF" >/dev/null 2>&1
    borg init --encryption=repokey "$HBD" >/dev/null 2>&1
    restic -q init --repo "$HQ" >/dev/null
    declare -A hid=() qid=() hrel=()
    for ((day = 0; day <= HDAYS; day++)); do
        if ((day > 0)); then
            su postgres -c "$PGBIN/pgbench -h 127.0.0.1 -p $HPORT -n -c 2 -j 2 -t 15000 postgres >/dev/null 2>&1"
            hpsql "UPDATE pgbench_accounts SET abalance = abalance + 1 WHERE aid % 50 = $((day % 50))"
            hpsql "VACUUM"; hpsql "CHECKPOINT"
        fi
        hrel[$day]=$(hpsql "SELECT pg_relation_filepath('pgbench_accounts')")
        rm -rf "$HCOPY"
        su postgres -c "$PGBIN/pg_basebackup -h 127.0.0.1 -p $HPORT -D $HCOPY -Fp -X fetch -c fast"
        if ((day == 0)); then
            relfiles "$HCOPY" "${hrel[0]}" # the main fork of pgbench_accounts, all its segments
            rb=$(bsum "${files[@]/#/$HCOPY/}")
            zb=$(cat "${files[@]/#/$HCOPY/}" | zstd -3 -T0 -c | wc -c)
            zr=$(python3 -c "import sys; print(f'{int(sys.argv[1]) / int(sys.argv[2]):.1f}')" "$rb" "$zb")
            echo "  pgbench_accounts (${files[*]}): $rb bytes, zstd -3 ${zr}:1 (realistic: 3-5:1)"
            if [[ $variant == realistic ]] && ! python3 -c "import sys; sys.exit(0 if 3 <= float(sys.argv[1]) <= 5 else 1)" "$zr"; then
                echo "error: history: the realistic filler compresses ${zr}:1, not 3-5:1" >&2; exit 1
            fi
        fi
        hrun "$H/store.json" "$SNAP" -q -r "$HR" store --json "$HCOPY" --name pgdata; st_p=$HT sm_p=$HM
        hid[$day]=$(python3 -c "import json, sys; print(json.load(open(sys.argv[1]))['id'])" "$H/store.json")
        read -r sb dc < <(python3 -c "import json, sys; s = json.load(open(sys.argv[1]))['stats']; print(s['stored_bytes'], s['delta_chunks'])" "$H/store.json")
        hrun /dev/null borg create --compression zstd,3 --chunker-params fixed,8192 "$HBF::day$day" "$HCOPY"; st_bf=$HT sm_bf=$HM
        hrun /dev/null borg create --compression zstd,3 "$HBD::day$day" "$HCOPY"; st_bd=$HT sm_bd=$HM
        hrun "$H/restic.json" restic -q --repo "$HQ" backup --json "$HCOPY"; st_q=$HT sm_q=$HM
        qid[$day]=$(python3 -c "import json, sys; print([json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')][-1]['snapshot_id'])" "$H/restic.json")
        printf '  day %d, copy %s: store s (peak RSS MiB): pitrfs %.1f (%d)  borg fixed,8192 %.1f (%d)  borg %.1f (%d)  restic %.1f (%d)\n' \
            "$day" "$(du -sh "$HCOPY" | cut -f1)" "$st_p" $((sm_p / 1024)) "$st_bf" $((sm_bf / 1024)) "$st_bd" $((sm_bd / 1024)) "$st_q" $((sm_q / 1024))
        printf '         repository bytes: pitrfs %11s  borg fixed,8192 %11s  borg %11s  restic %11s  (pitrfs +%s, %s delta pages)\n' \
            "$(dirsize "$HR/packs")" "$(dirsize "$HBF")" "$(dirsize "$HBD")" "$(dirsize "$HQ")" "$sb" "$dc"
    done
    hpg_stop
    p=$(dirsize "$HR/packs") bf=$(dirsize "$HBF") bd=$(dirsize "$HBD") rq=$(dirsize "$HQ")
    echo "  pitrfs local index cache (LMDB, rebuildable, not counted): $(dirsize "$HR/index") bytes"
    echo "  after day $HDAYS: pitrfs/borg-fixed-8k $(ratio "$p" "$bf") (target <= 0.60x), pitrfs/borg $(ratio "$p" "$bd"), pitrfs/restic $(ratio "$p" "$rq")"
    rs_last=$(ratio "$p" "$bf")

    # The first, middle and newest snapshot: restore and read through the mounts.
    MR=$HR MB=$HBF MQ=$HQ
    MP_PITR="$H/mnt-pitr" MP_BORG="$H/mnt-borg" MP_RESTIC="$H/mnt-restic"
    declare -A sz=() t_rp=() t_rb=() t_rq=() cb=() t_mp=() t_mb=() t_mq=()
    sel=(0 $((HDAYS / 2)) "$HDAYS")
    for day in $(printf '%s\n' "${sel[@]}" | sort -nu); do
        RP="$H/restore-pitr" RB="$H/restore-borg" RQ="$H/restore-restic"
        rm -rf "$RP" "$RB" "$RQ"; mkdir -p "$RB"
        drop_caches; hrun /dev/null "$SNAP" -q -r "$HR" restore --no-sync "${hid[$day]}" "$RP"; t_rp[$day]=$HT m_rp=$HM
        drop_caches; hrun /dev/null sh -c 'cd "$1" && exec borg extract "$2"' sh "$RB" "$HBF::day$day"; t_rb[$day]=$HT
        drop_caches; hrun /dev/null restic -q --repo "$HQ" restore "${qid[$day]}" --target "$RQ"; t_rq[$day]=$HT
        sync
        sz[$day]=$(dirsize "$RP")
        diff -r "$RP" "$RB/${HCOPY#/}" >/dev/null || { echo "error: history: day $day: pitrfs restore differs from borg extract" >&2; exit 1; }
        diff -r "$RP" "$RQ/${HCOPY#/}" >/dev/null || { echo "error: history: day $day: pitrfs restore differs from restic restore" >&2; exit 1; }
        relfiles "$RP" "${hrel[$day]}"
        cb[$day]=$(bsum "${files[@]/#/$RP/}")
        MA="day$day"
        for tool in pitrfs borg restic; do
            case $tool in
            pitrfs) mp=$MP_PITR root="$MP_PITR/snapshots/${hid[$day]}" ;;
            borg) mp=$MP_BORG root="$MP_BORG/${HCOPY#/}" ;;
            restic) mp=$MP_RESTIC root="$MP_RESTIC/ids/${qid[$day]}$HCOPY" ;;
            esac
            mnt_up "$tool" "$mp" "$root/${files[0]}"
            drop_caches
            hrun /dev/null cat "${files[@]/#/$root/}"
            case $tool in
            pitrfs) t_mp[$day]=$HT; m_mp=$(awk '/VmHWM/ {print $2}' "/proc/$mnt_pid/status") ;;
            borg) t_mb[$day]=$HT ;;
            restic) t_mq[$day]=$HT ;;
            esac
            for f in "${files[@]}"; do
                cmp "$RP/$f" "$root/$f" || { echo "error: history: day $day: $f through the $tool mount differs" >&2; exit 1; }
            done
        done
        mnt_down
        rm -rf "$RP" "$RB" "$RQ"
        echo "  day $day: restore of $(gb "${sz[$day]}") (the three trees identical), cat of ${files[*]} ($(gb "${cb[$day]}"), checked)"
        row "pitrfs restore --no-sync" "$(mbps "${sz[$day]}" "${t_rp[$day]}")" "$(ratio "${t_rq[$day]}" "${t_rp[$day]}") restic restore, $(ratio "${t_rb[$day]}" "${t_rp[$day]}") borg extract; peak RSS $((m_rp / 1024)) MiB"
        row "    borg extract (fixed,8192)" "$(mbps "${sz[$day]}" "${t_rb[$day]}")"
        row "    restic restore" "$(mbps "${sz[$day]}" "${t_rq[$day]}")"
        row "pitrfs mount, cat pgbench_accounts" "$(mbps "${cb[$day]}" "${t_mp[$day]}")" "$(ratio "${t_mb[$day]}" "${t_mp[$day]}") borg mount, $(ratio "${t_mq[$day]}" "${t_mp[$day]}") restic mount; mount VmHWM $((m_mp / 1024)) MiB"
        row "    borg mount (fixed,8192), cat" "$(mbps "${cb[$day]}" "${t_mb[$day]}")"
        row "    restic mount, cat" "$(mbps "${cb[$day]}" "${t_mq[$day]}")"
    done
    # speed of the newest over the first: (bytes/time) / (bytes/time)
    nf() { python3 -c "import sys; a, ta, b, tb = map(float, sys.argv[1:]); print(f'{(a / ta) / (b / tb):6.2f}x')" "$@"; }
    n=$HDAYS
    echo "  $variant filler, newest (day $n) against the targets:"
    printf '    %-44s %s   (target >= 1.50x)\n' "pitrfs restore / restic restore" "$(ratio "${t_rq[$n]}" "${t_rp[$n]}")"
    printf '    %-44s %s   (target >= 2.00x)\n' "pitrfs mount cat / borg mount cat" "$(ratio "${t_mb[$n]}" "${t_mp[$n]}")"
    printf '    %-44s %s   (target >= 0.80x)\n' "pitrfs restore, newest / first (day 0)" "$(nf "${sz[$n]}" "${t_rp[$n]}" "${sz[0]}" "${t_rp[0]}")"
    printf '    %-44s %s   (target >= 0.80x)\n' "pitrfs mount cat, newest / first (day 0)" "$(nf "${cb[$n]}" "${t_mp[$n]}" "${cb[0]}" "${t_mp[0]}")"
    printf '    %-44s %s   (target <= 0.60x)\n' "repository pitrfs / borg fixed,8192" "$rs_last"
    echo "  ($variant filler: $((SECONDS - hist_t0)) s in all)"
done
hist_cleanup
if [[ -n $hist_prev_exit ]]; then trap -- "$hist_prev_exit" EXIT; else trap - EXIT; fi
trap - INT TERM
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
