#!/usr/bin/env bash
# Store a tree with every kind of entry and metadata, restore it, and compare; then check that
# storing it again writes nothing, that a small change writes little, that old snapshots keep
# their content, and that a stream goes through store --stdin / cat unchanged.
. "$(dirname "$0")/lib.sh"
require mkfifo truncate dd id stat
[[ $(id -u) -eq 0 ]] || fail "this test chowns files to other users: run it as root"
NOBODY_GROUP=$(id -gn nobody) || fail "no group for user nobody"

REPO=$T/repo
SRC=$T/src
init_repo "$REPO"

note "building the source tree"
mkdir -p "$SRC"/a/b/c "$SRC"/empty-dir "$SRC"/shared "$SRC"/pg/base/16384 "$SRC"/pg/global
random_file "$SRC"/random.bin 1
head -c 12345 /dev/urandom >"$SRC"/a/b/c/odd-size.bin
seq 1 200000 >"$SRC"/a/text.txt
printf 'line one\nline two\n' >"$SRC"/a/b/small.txt
: >"$SRC"/empty
: >"$SRC"/a/b/c/empty-too
random_file "$SRC"/big.bin 30
ln -s ../random.bin "$SRC"/a/rel-link
ln -s b/c/odd-size.bin "$SRC"/a/rel-link2
ln -s does/not/exist "$SRC"/dangling
ln -s "$SRC"/random.bin "$SRC"/abs-link
mkfifo "$SRC"/fifo
# Sparse: 50 MiB apparent, a few bytes written in the middle.
truncate -s 50M "$SRC"/sparse
# Large enough (>= 64 MiB) to be restored in ranges by several workers at once: data, a hole,
# data, and an odd tail so the last range is short.
head -c 30M /dev/urandom >"$SRC"/large-split
truncate -s 60M "$SRC"/large-split
head -c $((20 * 1024 * 1024 + 4321)) /dev/urandom >>"$SRC"/large-split
printf 'in the middle' | dd of="$SRC"/sparse bs=1 seek=$((25 * 1024 * 1024 + 17)) conv=notrunc status=none
# A fake PostgreSQL cluster: relation files are a multiple of 8192 bytes (page chunking).
python3 - "$SRC"/pg <<'PY'
import os, sys
root = sys.argv[1]
def rel(path, pages, seed):
    with open(path, "wb") as f:
        for i in range(pages):
            head = f"page {i} of {os.path.basename(path)} seed {seed}".encode()
            f.write(head + os.urandom(4096) + bytes(8192 - 4096 - len(head)))
rel(os.path.join(root, "base/16384/16385"), 256, 1)   # 2 MiB
rel(os.path.join(root, "base/16384/16385_fsm"), 3, 2)
rel(os.path.join(root, "base/16384/16390.1"), 16, 3)
rel(os.path.join(root, "global/1262"), 1, 4)
with open(os.path.join(root, "PG_VERSION"), "w") as f:
    f.write("15\n")
PY
# Modes, including a setgid directory.
chmod 0600 "$SRC"/random.bin
chmod 0755 "$SRC"/a/b/c/odd-size.bin
chmod 0444 "$SRC"/a/text.txt
chmod 2775 "$SRC"/shared
chmod 0700 "$SRC"/pg
chmod 1777 "$SRC"/empty-dir
# Owners: numeric ids without a passwd entry and a named user, also on a symlink.
chown 1234:5678 "$SRC"/a/b/small.txt "$SRC"/shared
chown nobody:"$NOBODY_GROUP" "$SRC"/empty "$SRC"/a/b/c
chown -h 1234:5678 "$SRC"/dangling
chown -R 4321:4321 "$SRC"/pg/base
# Times, with nanoseconds; directories last (creating entries changes their mtime).
touch -d '2001-02-03 04:05:06.123456789' "$SRC"/a/text.txt
touch -d '1999-12-31 23:59:59.999999999' "$SRC"/big.bin
touch -d '2030-06-15 12:00:00.000000001' "$SRC"/empty
touch -h -d '2005-05-05 05:05:05.5' "$SRC"/a/rel-link "$SRC"/dangling
touch -d '2012-01-01 00:00:00.25' "$SRC"/fifo "$SRC"/sparse
touch -d '2015-07-07 07:07:07.707070707' "$SRC"/a/b/c "$SRC"/a/b "$SRC"/shared "$SRC"/pg/base/16384
ORIG=$T/orig
cp -a "$SRC" "$ORIG" # what snapshot 1 holds, for the check after the source changes

note "store 1"
out1=$("$SNAP" -r "$REPO" store "$SRC" --name rt --json) || fail "first store failed"
echo "$out1"
ID1=$(json_get id <<<"$out1")
[[ $ID1 =~ ^[0-9a-f]{16}$ ]] || fail "snapshot id '$ID1' is not 16 hex digits"
pages=$(json_get stats.page_files <<<"$out1")
[[ $pages -ge 4 ]] || fail "expected the 4 relation files to be stored as page files, got $pages"

note "restore 1"
"$SNAP" -r "$REPO" restore "$ID1" "$T/out1" || fail "restore of $ID1 failed"
assert_same_entries "$SRC" "$T/out1"
cmp "$SRC"/sparse "$T"/out1/sparse || fail "sparse file differs"
python3 - "$T"/out1/sparse $((25 * 1024 * 1024 + 17)) <<'PY' || fail "restored sparse file is not zeros around the written bytes"
import sys
data = open(sys.argv[1], "rb").read()
off = int(sys.argv[2])
assert data[off:off + 13] == b"in the middle", data[off:off + 13]
assert data[:off].count(0) == off and data[off + 13:].count(0) == len(data) - off - 13
PY
[[ $(stat -c %s "$T"/out1/sparse) -eq $((50 * 1024 * 1024)) ]] || fail "sparse file has the wrong size"
[[ -p $T/out1/fifo ]] || fail "fifo was not restored as a fifo"
[[ $(stat -c %a "$T"/out1/shared) == 2775 ]] || fail "setgid directory lost its mode"
[[ $(stat -c %u:%g "$T"/out1/a/b/small.txt) == 1234:5678 ]] || fail "owner 1234:5678 lost"
[[ $(stat -c %U "$T"/out1/empty) == nobody ]] || fail "owner nobody lost"
[[ $(readlink "$T"/out1/dangling) == does/not/exist ]] || fail "dangling symlink target changed"
[[ $(stat -c %y "$T"/out1/a/text.txt) == *04:05:06.123456789* ]] || fail "nanosecond mtime lost"

pack_bytes() { "$SNAP" -r "$REPO" info --json | json_get pack_bytes; }
pb1=$(pack_bytes)

note "store 2: unchanged tree"
out2=$("$SNAP" -r "$REPO" store "$SRC" --name rt --json) || fail "second store failed"
echo "$out2"
new2=$(json_get stats.new_bytes <<<"$out2")
assert_eq "$new2" 0 "new bytes of an unchanged tree"
pb2=$(pack_bytes)
echo "pack bytes: $pb1 -> $pb2"
[[ $((pb2 - pb1)) -lt $((pb1 / 100)) ]] || fail "pack bytes grew from $pb1 to $pb2 (>= 1%) for an unchanged tree"

note "store 3: one byte of the big file and one page of the relation changed"
printf '\xa5' | dd of="$SRC"/big.bin bs=1 seek=$((17 * 1024 * 1024 + 3)) conv=notrunc status=none
python3 - "$SRC"/pg/base/16384/16385 <<'PY'
import os, sys
with open(sys.argv[1], "r+b") as f:
    f.seek(100 * 8192 + 200)
    f.write(os.urandom(64))
PY
cmp -s "$SRC"/big.bin "$ORIG"/big.bin && fail "sanity: big.bin did not change"
out3=$("$SNAP" -r "$REPO" store "$SRC" --name rt --json) || fail "third store failed"
echo "$out3"
ID3=$(json_get id <<<"$out3")
new3=$(json_get stats.new_bytes <<<"$out3")
[[ $new3 -gt 0 ]] || fail "the change stored no new bytes"
[[ $new3 -lt $((1024 * 1024)) ]] || fail "a 1-byte and a 64-byte change stored $new3 new bytes (>= 1 MiB)"

"$SNAP" -r "$REPO" restore "$ID3" "$T/out3" || fail "restore of $ID3 failed"
assert_same_entries "$SRC" "$T/out3"
"$SNAP" -r "$REPO" restore "$ID1" "$T/out1b" || fail "second restore of $ID1 failed"
assert_same_entries "$ORIG" "$T/out1b"
cmp -s "$T"/out1b/big.bin "$T"/out3/big.bin && fail "snapshot 1 and 3 restore the same big.bin"

note "restore --no-sync: the same files, and no waiting for the disk"
# strace shows the difference: a normal restore starts writeback (sync_file_range) and ends
# with syncfs; --no-sync calls neither. (LeakSanitizer cannot run under ptrace: off here.)
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -e trace=syncfs,sync_file_range,fsync -o "$T"/sync.trace \
    "$SNAP" -r "$REPO" restore "$ID3" "$T/out3s" >/dev/null || fail "restore of $ID3 failed"
grep -q 'syncfs(' "$T"/sync.trace || fail "a normal restore did not call syncfs"
grep -q 'sync_file_range(' "$T"/sync.trace || fail "a normal restore did not start writeback"
ASAN_OPTIONS="${ASAN_OPTIONS:+$ASAN_OPTIONS:}detect_leaks=0" strace -f -qq -e trace=syncfs,sync_file_range,fsync -o "$T"/nosync.trace \
    "$SNAP" -r "$REPO" restore --no-sync "$ID3" "$T/out3n" >/dev/null ||
    fail "restore --no-sync of $ID3 failed"
assert_same_entries "$SRC" "$T/out3n"
grep -E 'syncfs\(|sync_file_range\(' "$T"/nosync.trace &&
    fail "restore --no-sync still waited for the disk"
rm -rf "$T/out3s" "$T/out3n"

note "stream"
random_file "$T"/stream 20
out4=$("$SNAP" -r "$REPO" store --stdin --name stream --json <"$T"/stream) || fail "store --stdin failed"
ID4=$(json_get id <<<"$out4")
assert_eq "$(json_get kind <<<"$out4")" stream "kind of a --stdin snapshot"
"$SNAP" -r "$REPO" cat "$ID4" >"$T"/stream.out || fail "cat $ID4 failed"
cmp "$T"/stream "$T"/stream.out || fail "the stream read back differs"
"$SNAP" -r "$REPO" restore --no-sync "$ID4" "$T"/stream.restored >/dev/null ||
    fail "restore --no-sync of stream $ID4 failed"
cmp "$T"/stream "$T"/stream.restored || fail "the stream restored with --no-sync differs"
# An empty stream is a stream too.
ID5=$(store_id "$REPO" --stdin --name empty-stream </dev/null)
"$SNAP" -r "$REPO" cat "$ID5" >"$T"/empty.out || fail "cat of an empty stream failed"
[[ ! -s $T/empty.out ]] || fail "an empty stream read back non-empty"

note "list"
"$SNAP" -r "$REPO" list --json >"$T"/list.json || fail "list --json failed"
python3 -m json.tool "$T"/list.json >/dev/null || fail "list --json is not valid JSON"
n=$(python3 -c 'import json,sys; print(len(json.load(open(sys.argv[1]))))' "$T"/list.json)
[[ $n -ge 3 ]] || fail "list --json has $n entries, expected at least 3"
for id in "$ID1" "$ID3" "$ID4"; do grep -q "\"$id\"" "$T"/list.json || fail "$id not listed"; done

# The top directory of the tree: its mode, owner and times are kept with the snapshot and set
# on the restore target last, whether restore creates the target or it exists and is empty.
note "top directory"
TOP="$T"/top
mkdir -p "$TOP"/sub && echo data >"$TOP"/sub/file
chown 4321:8765 "$TOP" && chmod 0750 "$TOP" && touch -d '2021-03-04 05:06:07.891011121' "$TOP"
"$SNAP" -r "$REPO" store "$TOP" --name top >/dev/null || fail "store of the top-directory tree failed"
"$SNAP" -r "$REPO" restore top "$T"/top-new >/dev/null || fail "restore into a new directory failed"
assert_same_tree "$TOP" "$T"/top-new
mkdir -m 0755 "$T"/top-given
"$SNAP" -r "$REPO" restore top "$T"/top-given >/dev/null || fail "restore into an existing empty directory failed"
assert_same_tree "$TOP" "$T"/top-given
assert_eq "$(stat -c '%a %u %g %y' "$T"/top-given)" "750 4321 8765 2021-03-04 05:06:07.891011121 +0000" \
    "attributes of the restored top directory"
echo "roundtrip ok"
