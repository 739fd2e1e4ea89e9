#!/usr/bin/env bash
# mount.pitrfs on a real FUSE mount: a stored tree reads back identical (bytes and metadata),
# names, latest and streams resolve, 8 concurrent readers at random offsets get the right bytes,
# mmap and cp -a work, -o direct_io serves every read from the daemon, every write fails with
# EROFS, and a snapshot stored while mounted appears without a remount. Needs root and
# /dev/fuse: fails, never skips, without them.
. "$(dirname "$0")/lib.sh"
require fusermount3 mountpoint mkfifo mknod truncate dd stat diff cp
MOUNT="$PITR_BIN/mount.pitrfs"
[[ -x $MOUNT ]] || fail "$MOUNT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"
[[ $(id -u) -eq 0 ]] || fail "this test chowns files and makes device nodes: run it as root"
NOBODY_GROUP=$(id -gn nobody) || fail "no group for user nobody"

REPO=$T/repo
SRC=$T/src
MOUNTS=() PIDS=()
unmount_all() {
    local m p
    for m in "${MOUNTS[@]}"; do
        mountpoint -q "$m" 2>/dev/null && { fusermount3 -u "$m" 2>/dev/null || fusermount3 -uz "$m"; }
    done
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    return 0
}
cleanup_hooks+=(unmount_all)
# Mount in the foreground as a background job (its log in $T/mount-<n>.log): mount_fg DIR [opts]
mount_fg() {
    local mnt=$1 i log="$T/mount-${#MOUNTS[@]}.log"; shift
    mkdir -p "$mnt"
    MOUNTS+=("$mnt")
    "$MOUNT" "$REPO" "$mnt" --foreground "$@" 2>"$log" &
    PIDS+=($!)
    for i in $(seq 100); do
        mountpoint -q "$mnt" && return 0
        kill -0 "${PIDS[-1]}" 2>/dev/null || fail "mount.pitrfs exited: $(cat "$log")"
        sleep 0.1
    done
    fail "$mnt is not mounted after 10 s: $(cat "$log")"
}

init_repo "$REPO"

note "building the source tree"
mkdir -p "$SRC"/a/b/c "$SRC"/empty-dir "$SRC"/shared "$SRC"/pg/base/16384 "$SRC"/pg/global
random_file "$SRC"/big.bin 40
random_file "$SRC"/random.bin 1
head -c 12345 /dev/urandom >"$SRC"/a/b/c/odd-size.bin
head -c 1 /dev/urandom >"$SRC"/a/one-byte
seq 1 200000 >"$SRC"/a/text.txt
printf 'line one\nline two\n' >"$SRC"/a/b/small.txt
: >"$SRC"/empty
ln -s ../random.bin "$SRC"/a/rel-link
ln -s does/not/exist "$SRC"/dangling
ln -s "$SRC"/random.bin "$SRC"/abs-link
mkfifo "$SRC"/fifo
mknod "$SRC"/null-dev c 1 3
truncate -s 50M "$SRC"/sparse
printf 'in the middle' | dd of="$SRC"/sparse bs=1 seek=$((25 * 1024 * 1024 + 17)) conv=notrunc status=none
# Relation files (multiples of 8 KiB under base/<oid>/): cut in page blocks, many chunks per record.
python3 - "$SRC"/pg <<'PY'
import os, sys
root = sys.argv[1]
def rel(path, pages):
    with open(path, "wb") as f:
        for i in range(pages):
            head = f"page {i} of {os.path.basename(path)}".encode()
            f.write(head + os.urandom(4096) + bytes(8192 - 4096 - len(head)))
rel(os.path.join(root, "base/16384/16385"), 1024)   # 8 MiB
rel(os.path.join(root, "base/16384/16385_fsm"), 3)
rel(os.path.join(root, "global/1262"), 1)
PY
chmod 0600 "$SRC"/random.bin
chmod 0755 "$SRC"/a/b/c/odd-size.bin
chmod 0444 "$SRC"/a/text.txt
chmod 2775 "$SRC"/shared
chmod 0700 "$SRC"/pg
chmod 1777 "$SRC"/empty-dir
chmod 0750 "$SRC"
chown 1234:5678 "$SRC"/a/b/small.txt "$SRC"/shared
chown nobody:"$NOBODY_GROUP" "$SRC"/empty "$SRC"/a/b/c
chown -h 1234:5678 "$SRC"/dangling
chown -R 4321:4321 "$SRC"/pg/base
touch -d '2001-02-03 04:05:06.123456789' "$SRC"/a/text.txt
touch -d '1999-12-31 23:59:59.999999999' "$SRC"/big.bin
touch -d '2030-06-15 12:00:00.000000001' "$SRC"/empty
touch -h -d '2005-05-05 05:05:05.5' "$SRC"/a/rel-link "$SRC"/dangling
touch -d '2012-01-01 00:00:00.25' "$SRC"/fifo "$SRC"/sparse "$SRC"/null-dev
touch -d '2015-07-07 07:07:07.707070707' "$SRC"/a/b/c "$SRC"/a/b "$SRC"/shared "$SRC"/pg/base/16384
touch -d '2016-08-08 08:08:08.080808080' "$SRC"

ID1=$(store_id "$REPO" "$SRC" --name fusetest)
random_file "$T"/stream 3
IDS=$(store_id "$REPO" --stdin --name dump <"$T"/stream)
MNT=$T/mnt
mount_fg "$MNT"

note "1. the mounted snapshot equals the source"
SNAPDIR=$MNT/snapshots/$ID1
ls -la "$MNT" "$MNT"/snapshots "$MNT"/streams
# One field of the mount's /stats, as JSON (KEY, or chunk_cache.KEY): stats_field MOUNTPOINT KEY.
# The file says size 0 and is made at each open: it must still be read whole.
stats_field() {
    python3 - "$1/stats" "$2" <<'PY' || fail "$1/stats: no $2 in the mount's counters"
import json, sys
v = json.load(open(sys.argv[1]))
for key in sys.argv[2].split("."):
    v = v[key]
print(json.dumps(v))
PY
}
assert_eq "$(stats_field "$MNT" direct_io)" false "direct_io in /stats"
assert_eq "$(stats_field "$MNT" chunk_cache.limit)" $((256 << 20)) "cache bound in /stats"
assert_eq "$(stats_field "$MNT" read_errors)" 0 "read errors in /stats"
(($(stats_field "$MNT" inodes) >= 5)) || fail "/stats counts fewer inodes than the mount's fixed five"
diff -r --no-dereference -x fifo -x null-dev "$SRC" "$SNAPDIR" || fail "diff -r of source and mount differs"
# Every entry: type, mode, owner, size (not of directories: the source's are its filesystem's
# block counts), mtime to the nanosecond, symlink target, device number; and the same names.
python3 - "$SRC" "$SNAPDIR" <<'PY' || fail "metadata of the mount differs from the source"
import os, stat, sys
src, mnt = sys.argv[1], sys.argv[2]
bad = 0
def check(rel):
    global bad
    a, b = os.lstat(os.path.join(src, rel)), os.lstat(os.path.join(mnt, rel))
    fields = ["st_mode", "st_uid", "st_gid", "st_mtime_ns"]
    if not stat.S_ISDIR(a.st_mode):
        fields.append("st_size")
    if stat.S_ISCHR(a.st_mode) or stat.S_ISBLK(a.st_mode):
        fields.append("st_rdev")
    for f in fields:
        if getattr(a, f) != getattr(b, f):
            print(f"{rel or '.'}: {f} {getattr(a, f)} != {getattr(b, f)}")
            bad += 1
    if stat.S_ISLNK(a.st_mode) and os.readlink(os.path.join(src, rel)) != os.readlink(os.path.join(mnt, rel)):
        print(f"{rel}: symlink target differs")
        bad += 1
n = 0
for dirpath, dirs, files in os.walk(src):
    rel = os.path.relpath(dirpath, src)
    rel = "" if rel == "." else rel
    mine = sorted(os.listdir(os.path.join(mnt, rel)))
    if mine != sorted(dirs + files):
        print(f"{rel or '.'}: entries {mine} != {sorted(dirs + files)}")
        bad += 1
    check(rel)
    for name in files + [d for d in dirs if os.path.islink(os.path.join(dirpath, d))]:
        check(os.path.join(rel, name))
    n += 1 + len(files)
print(f"compared {n} entries")
sys.exit(1 if bad else 0)
PY
[[ -p $SNAPDIR/fifo ]] || fail "fifo is not a fifo on the mount"
[[ $(stat -c '%t:%T' "$SNAPDIR"/null-dev) == 1:3 ]] || fail "device numbers of null-dev differ"
assert_eq "$(readlink "$MNT"/snapshots/fusetest)" "$ID1" "target of snapshots/fusetest"
assert_eq "$(readlink "$MNT"/snapshots/latest)" "$ID1" "target of snapshots/latest"
cmp "$SRC"/a/text.txt "$MNT"/snapshots/latest/a/text.txt || fail "latest does not resolve"
cmp "$SRC"/big.bin "$MNT"/snapshots/fusetest/big.bin || fail "the name link does not resolve"
cmp "$T"/stream "$MNT"/streams/dump || fail "streams/dump differs from the stream"
cmp "$T"/stream "$MNT"/streams/"$IDS" || fail "streams/$IDS differs from the stream"
[[ $(stat -c %i "$MNT"/streams/dump) == $(stat -c %i "$MNT"/streams/"$IDS") ]] ||
    fail "streams/dump and streams/$IDS are not the same file"
ino1=$(stat -c %i "$SNAPDIR"/a/b/small.txt)
[[ $ino1 == $(stat -c %i "$MNT"/snapshots/latest/a/b/small.txt) ]] || fail "inode numbers differ by path"
df -h "$MNT" | tail -1

note "2. 8 concurrent readers at random offsets (second mount, 2 MiB cache: constant eviction)"
MNT2=$T/mnt2
mount_fg "$MNT2" -o cache_size=2M,readahead=1M
cat >"$T"/reader.py <<'PY'
import os, random, sys
src, mnt, seed, count = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
rng = random.Random(seed)
size = os.path.getsize(src)
a, b = os.open(src, os.O_RDONLY), os.open(mnt, os.O_RDONLY)
sizes = [1, 7, 511, 4096, 8191, 8192, 8193, 65536, 65537, 131072, 1 << 20]
for i in range(count):
    k = rng.random()
    if k < 0.1:    # past the end
        off, n = size + rng.randrange(0, 1 << 20), rng.randrange(1, 1 << 16)
    elif k < 0.2:  # across the end
        off, n = max(0, size - rng.randrange(1, 1 << 17)), rng.randrange(1, 1 << 18)
    elif k < 0.4:  # around page boundaries (page-file chunks are 8 KiB)
        off, n = max(0, rng.randrange(0, size // 8192) * 8192 + rng.choice([-1, 0, 1])), rng.choice(sizes)
    else:
        off, n = rng.randrange(0, size), rng.choice(sizes + [rng.randrange(1, 3 << 20)])
    want, got = os.pread(a, n, off), os.pread(b, n, off)
    if want != got:
        print(f"{mnt}: pread({n}, {off}) gave {len(got)} bytes, wanted {len(want)}, equal prefix "
              f"{next((j for j in range(min(len(got), len(want))) if got[j] != want[j]), min(len(got), len(want)))}")
        sys.exit(1)
    if i % 8 == 0:  # drop the mount's pages so that reads keep reaching the daemon
        os.posix_fadvise(b, 0, 0, os.POSIX_FADV_DONTNEED)
PY
# N readers at once below snapshot directory DIR, odd ones on big.bin, even ones on a relation
# file, reader i with seed FIRST_SEED + i: run_readers DIR N FIRST_SEED READS_EACH
run_readers() {
    local dir=$1 n=$2 seed=$3 reads=$4 i f p pids=() bad=0
    for i in $(seq "$n"); do
        f=big.bin
        [[ $((i % 2)) -eq 0 ]] && f=pg/base/16384/16385
        python3 "$T"/reader.py "$SRC/$f" "$dir/$f" "$((seed + i))" "$reads" &
        pids+=($!)
    done
    for p in "${pids[@]}"; do wait "$p" || bad=1; done
    return $bad
}
run_readers "$MNT2/snapshots/$ID1" 8 0 250 || fail "a concurrent reader got wrong bytes"
python3 "$T"/reader.py "$SRC"/sparse "$MNT"/snapshots/"$ID1"/sparse 99 100 || fail "sparse file reads differ"
python3 "$T"/reader.py "$T"/stream "$MNT"/streams/dump 98 100 || fail "stream reads differ"

note "2b. 1 MiB O_DIRECT reads of a file of 2048 chunks (more than writev takes at once)"
TINY=$T/tiny
"$SNAP" -r "$TINY" init --scrypt-n 1024 --page-size 512 >/dev/null
mkdir -p "$T"/tsrc/base/1
head -c $((4 << 20)) /dev/urandom >"$T"/tsrc/base/1/1234
store_id "$TINY" "$T"/tsrc --name tiny >/dev/null
mkdir -p "$T"/tmnt
MOUNTS+=("$T"/tmnt)
"$MOUNT" "$TINY" "$T"/tmnt -o logfile="$T"/tiny.log || fail "mount of the tiny-chunk repository failed"
python3 - "$T"/tsrc/base/1/1234 "$T"/tmnt/snapshots/tiny/base/1/1234 <<'PY' || fail "O_DIRECT reads differ"
import mmap, os, sys
want = open(sys.argv[1], "rb").read()
fd = os.open(sys.argv[2], os.O_RDONLY | os.O_DIRECT)
buf = mmap.mmap(-1, 1 << 20)
for off in range(0, len(want), 1 << 20):
    n = os.preadv(fd, [buf], off)
    assert n == min(1 << 20, len(want) - off) and buf[:n] == want[off:off + n], off
print("O_DIRECT reads ok")
PY
timeout 10 fusermount3 -u "$T"/tmnt || fail "unmount of the tiny-chunk mount failed"

note "2c. -o direct_io: every read reaches the daemon, the bytes are the same, private mmap works"
MNT3=$T/mnt3
mount_fg "$MNT3" -o direct_io,cache_size=4M
D3=$MNT3/snapshots/$ID1
assert_eq "$(stats_field "$MNT3" direct_io)" true "direct_io in /stats"
assert_eq "$(stat -c %o "$D3"/big.bin)" 1048576 "st_blksize under direct_io"
# Two reads of big.bin: the daemon must serve every byte twice (through the page cache the
# second would not reach it).
before=$(stats_field "$MNT3" read_bytes)
cat "$D3"/big.bin >/dev/null
cmp "$SRC"/big.bin "$D3"/big.bin || fail "big.bin differs under direct_io"
assert_eq "$(($(stats_field "$MNT3" read_bytes) - before))" "$((2 * $(stat -c %s "$SRC"/big.bin)))" \
    "bytes the daemon served for two reads of big.bin"
diff -r --no-dereference -x fifo -x null-dev "$SRC" "$D3" || fail "diff -r of source and direct_io mount differs"
run_readers "$D3" 4 20 150 || fail "a concurrent reader got wrong bytes under direct_io"
python3 - "$SRC" "$D3" <<'PY' || fail "mmap under direct_io"
import errno, mmap, os, sys
src, mnt = sys.argv[1], sys.argv[2]
for rel in ["big.bin", "pg/base/16384/16385", "a/one-byte"]:
    with open(os.path.join(mnt, rel), "rb") as f, open(os.path.join(src, rel), "rb") as g:
        m = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
        assert m[:] == g.read(), rel
        m.close()
        try:  # libfuse 3.14 cannot ask the kernel for shared mappings of direct_io files
            mmap.mmap(f.fileno(), 0, flags=mmap.MAP_SHARED, prot=mmap.PROT_READ)
            sys.exit(f"{rel}: a shared mapping of a direct_io file worked: update the docs")
        except OSError as e:
            assert e.errno == errno.ENODEV, (rel, e)
print("private mmap ok, shared mmap ENODEV")
PY

note "3. mmap, and cp -a of the whole snapshot"
python3 - "$SRC" "$SNAPDIR" <<'PY' || fail "mmap of a mounted file differs"
import hashlib, mmap, os, random, sys
src, mnt = sys.argv[1], sys.argv[2]
for rel in ["big.bin", "a/text.txt", "pg/base/16384/16385", "a/one-byte"]:
    with open(os.path.join(mnt, rel), "rb") as f, open(os.path.join(src, rel), "rb") as g:
        m = mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ)
        want = g.read()
        assert hashlib.sha256(m).digest() == hashlib.sha256(want).digest(), rel
        rng = random.Random(7)
        for _ in range(200):
            off = rng.randrange(len(want))
            n = rng.randrange(1, 100000)
            assert m[off:off + n] == want[off:off + n], (rel, off, n)
        m.close()
print("mmap ok")
PY
cp -a "$SNAPDIR" "$T"/copy || fail "cp -a of the snapshot failed"
assert_same_tree "$SRC" "$T"/copy
rm -rf "$T"/copy

note "4. every write fails with EROFS"
python3 - "$MNT" "$ID1" <<'PY' || fail "a write did not fail with EROFS"
import errno, os, sys
mnt, sid = sys.argv[1], sys.argv[2]
snap = os.path.join(mnt, "snapshots", sid)
f, d = os.path.join(snap, "a/text.txt"), os.path.join(snap, "a")
ops = {
    "open O_WRONLY": lambda: os.open(f, os.O_WRONLY),
    "open O_RDWR": lambda: os.open(f, os.O_RDWR),
    "open O_TRUNC": lambda: os.open(f, os.O_RDONLY | os.O_TRUNC),
    "open O_APPEND": lambda: os.open(f, os.O_WRONLY | os.O_APPEND),
    "create": lambda: os.open(os.path.join(d, "new"), os.O_WRONLY | os.O_CREAT, 0o644),
    "mkdir": lambda: os.mkdir(os.path.join(d, "newdir")),
    "mkfifo": lambda: os.mkfifo(os.path.join(d, "fifo2")),
    "mknod": lambda: os.mknod(os.path.join(d, "dev2"), 0o600 | 0o020000, os.makedev(1, 3)),
    "unlink": lambda: os.unlink(f),
    "rmdir": lambda: os.rmdir(os.path.join(snap, "empty-dir")),
    "rename": lambda: os.rename(f, f + ".x"),
    "rename dir": lambda: os.rename(d, d + ".x"),
    "symlink": lambda: os.symlink("x", os.path.join(d, "l")),
    "link": lambda: os.link(f, os.path.join(d, "hard")),
    "chmod": lambda: os.chmod(f, 0o600),
    "chown": lambda: os.chown(f, 1, 1),
    "lchown symlink": lambda: os.lchown(os.path.join(snap, "dangling"), 1, 1),
    "truncate": lambda: os.truncate(f, 0),
    "utime (touch)": lambda: os.utime(f, None),
    "setxattr": lambda: os.setxattr(f, "user.x", b"1"),
    "removexattr": lambda: os.removexattr(f, "user.x"),
    "mkdir in /snapshots": lambda: os.mkdir(os.path.join(mnt, "snapshots", "x")),
    "unlink /snapshots/latest": lambda: os.unlink(os.path.join(mnt, "snapshots", "latest")),
    "rmdir a snapshot": lambda: os.rmdir(snap),
    "write a stream": lambda: os.open(os.path.join(mnt, "streams", "dump"), os.O_WRONLY),
    "create in /": lambda: os.open(os.path.join(mnt, "x"), os.O_WRONLY | os.O_CREAT, 0o644),
    "chmod /": lambda: os.chmod(mnt, 0o700),
}
bad = 0
for name, op in ops.items():
    try:
        op()
        print(f"{name}: succeeded"); bad += 1
    except OSError as e:
        if e.errno != errno.EROFS:
            print(f"{name}: {e} (wanted EROFS)"); bad += 1
print(f"{len(ops) - bad} of {len(ops)} write operations failed with EROFS")
sys.exit(1 if bad else 0)
PY
for cmd in "touch $SNAPDIR/a/text.txt" "cp /etc/hostname $SNAPDIR/a/" "rm -f $SNAPDIR/empty" \
    "chmod 600 $SNAPDIR/empty" "truncate -s 0 $SNAPDIR/empty"; do
    out=$(eval "$cmd" 2>&1) && fail "'$cmd' succeeded on the mount"
    [[ $out == *"Read-only file system"* ]] || fail "'$cmd' did not say 'Read-only file system': $out"
done
cmp "$SRC"/a/text.txt "$SNAPDIR"/a/text.txt || fail "a failed write changed the file"

note "6. a snapshot stored while mounted appears without a remount"
before=$(ls "$MNT"/snapshots | wc -l)
mkdir -p "$T"/src2/dir
echo "second snapshot" >"$T"/src2/dir/file
ID2=$(store_id "$REPO" "$T"/src2 --name second)
ls "$MNT"/snapshots | grep -qx "$ID2" || fail "new snapshot $ID2 not listed in /snapshots"
cmp "$T"/src2/dir/file "$MNT"/snapshots/"$ID2"/dir/file || fail "new snapshot reads wrong"
assert_eq "$(readlink "$MNT"/snapshots/second)" "$ID2" "target of the new name link"
echo "third" >"$T"/src2/dir/file
ID3=$(store_id "$REPO" "$T"/src2 --name second)
# Straight to a lookup, no readdir first: a miss looks at the catalog again.
cmp "$T"/src2/dir/file "$MNT"/snapshots/"$ID3"/dir/file || fail "lookup of a new snapshot id failed"
for i in $(seq 50); do # names are cached by the kernel for 1 s
    [[ $(readlink "$MNT"/snapshots/latest) == "$ID3" && $(readlink "$MNT"/snapshots/second) == "$ID3" ]] && break
    sleep 0.1
done
assert_eq "$(readlink "$MNT"/snapshots/latest)" "$ID3" "latest after a new snapshot"
assert_eq "$(readlink "$MNT"/snapshots/second)" "$ID3" "the name of two snapshots (newest wins)"
echo "stream two" | "$SNAP" -r "$REPO" store --stdin --name dump2 >/dev/null
assert_eq "$(cat "$MNT"/streams/dump2)" "stream two" "a stream stored while mounted"
after=$(ls "$MNT"/snapshots | wc -l)
echo "/snapshots: $before entries before, $after after"
cmp "$SRC"/big.bin "$SNAPDIR"/big.bin || fail "the first snapshot changed"

note "unmount"
for m in "$MNT" "$MNT2" "$MNT3"; do
    timeout 10 fusermount3 -u "$m" || fail "fusermount3 -u $m failed"
done
for p in "${PIDS[@]}"; do
    for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && fail "mount.pitrfs $p still runs 10 s after its unmount"
    wait "$p" || fail "mount.pitrfs $p exited with $? after unmount"
done
PIDS=()
cat "$T"/mount-*.log
grep -qi error "$T"/mount-*.log && fail "the mounts logged errors"
echo "ok"
