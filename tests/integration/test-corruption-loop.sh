#!/usr/bin/env bash
# Random damage, many times over. A small repository holds a data directory stored three times
# (runs of pages, framed delta records, directory objects), a stream and an archived WAL
# segment. Each round copies it, damages one file of one kind (a pack anywhere, a framed delta
# record, a record of whole pages, a record of directory objects, a pack's trailer, a snapshot
# record, config, keys/passphrase, index/data.mdb, a WAL object) at a random place (bit flips,
# truncation, a zeroed range, appended garbage) or replaces it by a FIFO, then reads it every
# way there is: list, show, restore, cat, the mount, restore-wal, and a store that deduplicates
# against the damaged index followed by a restore of what it stored. Every command, under a timeout, must either give
# exactly the right bytes with exit 0 or fail with an exit code docs/errors.md gives for it:
# never wrong bytes with exit 0, a signal, or a hang.
#
# The rounds are drawn from a seed: CORRUPTION_SEED (default 1, printed), CORRUPTION_ROUNDS
# (default 300). A failure prints the round, the file, its kind and the damage; the same seed
# repeats it, and CORRUPTION_ONLY=N runs round N alone. All failures are listed at the end.
. "$(dirname "$0")/lib.sh"
require fusermount3 mountpoint timeout mkfifo
MOUNT="$PITR_BIN/mount.pitrfs"
AGENT="$PITR_BIN/pitr-agent"
[[ -x $MOUNT && -x $AGENT ]] || fail "$MOUNT or $AGENT is missing: run 'make' first"
[[ -c /dev/fuse ]] || fail "/dev/fuse is missing: FUSE mounts cannot be tested"
cleanup_hooks+=('mountpoint -q "$T/mnt" && { fusermount3 -u "$T/mnt" || fusermount3 -uz "$T/mnt"; }')
SEED=${CORRUPTION_SEED:-1}
ROUNDS=${CORRUPTION_ROUNDS:-300}
echo "seed $SEED, $ROUNDS rounds (CORRUPTION_SEED, CORRUPTION_ROUNDS)"

REPO=$T/repo
SRC=$T/src
init_repo "$REPO"

note "a data directory: two relation files cut in pages, small files, a symlink, a FIFO"
mkdir -p "$SRC"/base/5 "$SRC"/global "$SRC"/pg_wal
python3 - "$SRC"/base/5 <<'PY'
import random, sys
rnd = random.Random(7)
for name, pages in (("16384", 48), ("16390", 12)):
    with open(f"{sys.argv[1]}/{name}", "wb") as f:
        for p in range(pages):
            rows = b"".join(b"aid %08d abalance %7d note %016x\n"
                            % (p * 100 + r, rnd.randrange(10**7), rnd.getrandbits(64))
                            for r in range(200))
            f.write(rows[:8192])
PY
echo 15 >"$SRC"/PG_VERSION
head -c 40000 /dev/urandom >"$SRC"/global/pg_control
: >"$SRC"/global/empty
ln -s ../PG_VERSION "$SRC"/global/version-link
mkfifo "$SRC"/pg_wal/fifo
# change_pages GENERATION: rewrite a few rows in 10 pages of 16384, as UPDATEs would.
change_pages() {
    python3 - "$SRC"/base/5/16384 "$1" <<'PY'
import sys
path, gen = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    for k in range(10):
        f.seek(((k * 5 + gen) % 48) * 8192 + 700 + gen * 48)
        f.write(b"%08d" % (gen * 7919 + k))
PY
}
EXPECT=$T/expect
keep() { mkdir -p "$EXPECT/$1" && cp -a "$SRC"/. "$EXPECT/$1"/; }
ids=()
for gen in 0 1 2; do
    [[ $gen -gt 0 ]] && change_pages $gen
    id=$(store_id "$REPO" "$SRC" --name db)
    keep "$id"
    ids+=("$id")
done
deltas=$("$SNAP" -r "$REPO" show "${ids[2]}" --json | json_get meta.stats.delta_chunks)
[[ $deltas -gt 0 ]] || fail "the third snapshot stored no delta pages"

note "a stream, and an archived WAL segment"
python3 -c 'import sys; sys.stdout.buffer.write(b"".join(b"line %06d of the stream\n" % i for i in range(12000)))' >"$T"/stream
STREAM=$(store_id "$REPO" --stdin --name stream <"$T"/stream)
WALNAME=000000010000000000000003
python3 - "$T/$WALNAME" <<'PY'
import os, struct, sys
seg = 16 << 20
# The long page header PostgreSQL 15 writes at the start of segment 3 of timeline 1.
header = struct.pack("<HHIQIIQII", 0xD110, 0x0002, 1, 3 * seg, 0, 0, 7300000000000000001,
                     seg, 8192)
body = os.urandom(200000)
with open(sys.argv[1], "wb") as f:
    f.write(header + body + bytes(seg - len(header) - len(body)))
PY
"$AGENT" -r "$REPO" -n n1 archive-wal "$T/$WALNAME" "$WALNAME" || fail "archive-wal failed"

note "the kinds of records the packs hold"
"$PITR_BUILD/tests/helpers/pack-check" "$REPO" >"$T"/pack-check.out || fail "pack-check: $(cat "$T"/pack-check.out)"
grep '^records:' "$T"/pack-check.out
grep -Eq 'records: .*[1-9][0-9]* framed' "$T"/pack-check.out || fail "no framed delta records"
[[ -s $REPO/index/data.mdb ]] || fail "no index/data.mdb"
ls "$REPO"/wal/n1/*/"$WALNAME" >/dev/null || fail "no WAL object"

# The rounds. Python draws them, runs every command with a timeout and judges the outcome.
python3 - "$REPO" "$EXPECT" "$T" "$SEED" "$ROUNDS" "$STREAM" "$WALNAME" "${ids[@]}" <<'PY'
import errno, hashlib, json, os, random, shutil, signal, stat, struct, subprocess, sys, time

repo, expect, scratch, seed, rounds, stream_id, walname = sys.argv[1:8]
seed, rounds = int(seed), int(rounds)
tree_ids = sys.argv[8:]
bin_dir = os.environ["PITR_BIN"]
SNAP, MOUNT, AGENT = (os.path.join(bin_dir, b) for b in ("pitr-snap", "mount.pitrfs", "pitr-agent"))
LIMIT = 20  # seconds: any command slower than this on a repository this small hangs
only = int(os.environ.get("CORRUPTION_ONLY", "0"))

# Exit codes docs/errors.md gives a failure of pitr-snap and mount.pitrfs: 1 (a failure with a
# message), 2 (key rejected), 3 (not a repository, newer format, foreign index), 4 (damaged).
# 5 (locked) and 64 (usage) have causes of their own, none of which is damage.
FAILURE_CODES = {1, 2, 3, 4}
# restore-wal: 128 plus those (PostgreSQL must stop recovery); 1 says "not archived", which is
# wrong for a file that is archived and makes PostgreSQL end recovery early.
WAL_FAILURE_CODES = {128 + c for c in FAILURE_CODES}

stream_bytes = open(os.path.join(scratch, "stream"), "rb").read()
wal_bytes = open(os.path.join(scratch, walname), "rb").read()


def manifest(root):
    """Type, mode, size, mtime and bytes (digest) or link target of every entry below root."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = os.path.join(dirpath, name)
            rel = os.path.relpath(p, root)
            st = os.lstat(p)
            kind = stat.S_IFMT(st.st_mode)
            what = None
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    what = hashlib.blake2b(f.read(), digest_size=16).hexdigest()
            elif stat.S_ISLNK(st.st_mode):
                what = os.readlink(p)
            out[rel] = (kind, stat.S_IMODE(st.st_mode), st.st_size if kind != stat.S_IFDIR else 0,
                        st.st_mtime_ns if kind != stat.S_IFLNK else 0, what)
    return out


expected = {i: manifest(os.path.join(expect, i)) for i in tree_ids}
names = {i: "db" for i in tree_ids}
names[stream_id] = "stream"


def files_of(snap):
    return sorted(rel for rel, e in expected[snap].items() if e[0] == stat.S_IFREG)


# ---- what the repository holds, by kind ----

def records_of(path):
    """(offset, length, flags, member lengths) of every record the trailer lists."""
    data = open(path, "rb").read()
    trailer_off, _chunks, count, _xxh, magic = struct.unpack("<QIIQ8s", data[-32:])
    assert magic == b"PACKTAIL", path
    out = []
    for k in range(count):
        off, length = struct.unpack_from("<QI", data, trailer_off + 12 * k)
        flags, n = data[off + 4], struct.unpack_from("<H", data, off + 6)[0]
        members = [struct.unpack_from("<I", data, off + 28 + 36 * i + 32)[0] for i in range(n)]
        out.append((off, length, flags, members))
    return out, trailer_off, len(data)


def repo_files():
    found = []
    for dirpath, _dirs, filenames in os.walk(repo):
        for name in filenames:
            found.append(os.path.relpath(os.path.join(dirpath, name), repo))
    return sorted(found)


targets = {k: [] for k in ("pack", "framed-delta-record", "page-record", "directory-record",
                           "pack-trailer", "snapshot", "config", "keys", "index", "wal-object")}
for rel in repo_files():
    if rel.startswith("packs/") and rel.endswith(".pack"):
        size = os.path.getsize(os.path.join(repo, rel))
        targets["pack"].append((rel, 0, size))
        recs, trailer_off, size = records_of(os.path.join(repo, rel))
        targets["pack-trailer"].append((rel, trailer_off, size))
        for off, length, flags, members in recs:
            if flags & 0x08:
                targets["framed-delta-record"].append((rel, off, off + length))
            elif flags & 0x02:
                continue  # chained deltas: version 2 and 3 writers only
            elif all(m % 8192 == 0 for m in members):
                targets["page-record"].append((rel, off, off + length))  # runs, single pages
            elif all(64 <= m < 16384 and m % 8192 for m in members):
                # Directory objects are grouped apart from file data; the tree's small files
                # are shorter than 64 bytes, its larger ones cut in chunks of 16 KiB or more.
                targets["directory-record"].append((rel, off, off + length))
    elif rel.startswith("snapshots/"):
        targets["snapshot"].append((rel, 0, None))
    elif rel == "config":
        targets["config"].append((rel, 0, None))
    elif rel == "keys/passphrase":
        targets["keys"].append((rel, 0, None))
    elif rel == "index/data.mdb":
        targets["index"].append((rel, 0, None))
    elif rel.startswith("wal/"):
        targets["wal-object"].append((rel, 0, None))
for kind, where in targets.items():
    print(f"{kind}: {len(where)}")
    if not where:
        sys.exit(f"FAIL: the repository has nothing of kind {kind}")

# ---- damage ----

def damage(rnd, path, lo, hi):
    """Damage path within [lo, hi) (hi None: the whole file); returns what was done."""
    size = os.path.getsize(path)
    hi = size if hi is None else min(hi, size)
    how = rnd.choice(("flip",) * 6 + ("truncate",) * 3 + ("zero",) * 3 + ("append",) * 3 +
                     ("fifo",))
    if how == "fifo":
        # A stray special file where an object should be: opening it for reading would wait
        # for a writer that never comes.
        os.unlink(path)
        os.mkfifo(path, 0o600)
        return "replaced by a FIFO"
    with open(path, "r+b") as f:
        if how == "flip" and hi > lo:
            at = rnd.randrange(lo, hi)
            mask = 1 << rnd.randrange(8)
            f.seek(at)
            b = f.read(1)[0]
            f.seek(at)
            f.write(bytes([b ^ mask]))
            return f"bit flip at {at} (xor {mask:#04x})"
        if how == "truncate" and hi > lo:
            at = rnd.randrange(lo, hi)
            f.truncate(at)
            return f"truncated to {at} of {size} bytes"
        if how == "zero" and hi > lo:
            at = rnd.randrange(lo, hi)
            n = min(rnd.choice((1, 8, 64, 512, 4096)), hi - at)
            f.seek(at)
            f.write(bytes(n))
            return f"{n} bytes zeroed at {at}"
        garbage = bytes(rnd.getrandbits(8) for _ in range(rnd.choice((1, 13, 512, 4096))))
        f.seek(0, os.SEEK_END)
        f.write(garbage)
        return f"{len(garbage)} bytes of garbage appended to {size}"


# ---- running and judging commands ----

problems = []
round_desc = ""


def problem(what):
    problems.append(f"{round_desc}: {what}")
    print(f"FAIL (continuing): {round_desc}: {what}", file=sys.stderr, flush=True)


def run(argv, label, codes=FAILURE_CODES, stdout=subprocess.PIPE):
    """Run argv; returns (exit code, stdout) when it exited 0 or with one of `codes`, else
    reports a problem and returns (None, None)."""
    try:
        p = subprocess.run(argv, stdout=stdout, stderr=subprocess.PIPE, timeout=LIMIT)
    except subprocess.TimeoutExpired:
        problem(f"{label}: still running after {LIMIT} s (a hang)")
        return None, None
    if p.returncode < 0:
        problem(f"{label}: killed by signal {signal.Signals(-p.returncode).name}: "
                f"{p.stderr.decode(errors='replace').strip()[-600:]}")
        return None, None
    if p.returncode != 0 and p.returncode not in codes:
        problem(f"{label}: exit {p.returncode}, not a code docs/errors.md gives for this: "
                f"{p.stderr.decode(errors='replace').strip()[-600:]}")
        return None, None
    return p.returncode, p.stdout


def check_list(r, damaged_rel):
    rc, out = run([SNAP, "-r", r, "list", "--json"], "list")
    if rc != 0:
        return
    try:
        listed = {s["id"]: s for s in json.loads(out)}
    except (ValueError, KeyError, TypeError) as e:
        problem(f"list: exit 0 with output that is not a list of snapshots ({e})")
        return
    want = set(names)
    if damaged_rel.startswith("snapshots/"):
        want.discard(damaged_rel.split("/", 1)[1])  # may be left out, may be listed
        listed.pop(damaged_rel.split("/", 1)[1], None)
    if set(listed) != want:
        problem(f"list: exit 0 with snapshots {sorted(listed)}, expected {sorted(want)}")
    for i, s in listed.items():
        if s.get("name") != names.get(i):
            problem(f"list: exit 0, snapshot {i} named {s.get('name')!r}, expected {names.get(i)!r}")


def check_show(r, snap):
    rc, out = run([SNAP, "-r", r, "show", snap, "--json"], f"show {snap}")
    if rc != 0:
        return
    try:
        s = json.loads(out)
    except ValueError as e:
        problem(f"show {snap}: exit 0 with output that is not JSON ({e})")
        return
    if s.get("id") != snap or s.get("name") != names[snap]:
        problem(f"show {snap}: exit 0 with id {s.get('id')!r}, name {s.get('name')!r}")


def check_restore(r, snap, want):
    target = os.path.join(scratch, "restored")
    shutil.rmtree(target, ignore_errors=True)
    rc, _ = run([SNAP, "-r", r, "restore", snap, target], f"restore {snap}")
    if rc == 0:
        got = manifest(target)
        if got != want:
            diff = sorted(k for k in set(got) | set(want) if got.get(k) != want.get(k))
            problem(f"restore {snap}: exit 0 with a tree that differs at {diff[:5]}")
    shutil.rmtree(target, ignore_errors=True)


def check_cat(r, rnd):
    if rnd.random() < 0.5:
        rc, out = run([SNAP, "-r", r, "cat", stream_id], f"cat {stream_id}")
        if rc == 0 and out != stream_bytes:
            problem(f"cat {stream_id}: exit 0 with {len(out)} bytes that are not the stream's")
        return
    snap = rnd.choice(tree_ids)
    rel = rnd.choice(files_of(snap))
    rc, out = run([SNAP, "-r", r, "cat", snap, rel], f"cat {snap} {rel}")
    if rc == 0:
        want = open(os.path.join(expect, snap, rel), "rb").read()
        if out != want:
            problem(f"cat {snap} {rel}: exit 0 with {len(out)} bytes that are not the file's")


def check_restore_wal(r):
    target = os.path.join(scratch, "restored-wal")
    if os.path.exists(target):
        os.unlink(target)
    rc, _ = run([AGENT, "-r", r, "-n", "n1", "restore-wal", walname, target],
                f"restore-wal {walname}", codes=WAL_FAILURE_CODES)
    if rc == 0:
        with open(target, "rb") as f:
            if f.read() != wal_bytes:
                problem(f"restore-wal {walname}: exit 0 with bytes that are not the segment's")
    if os.path.exists(target):
        os.unlink(target)


def check_store(r, rnd):
    """A store deduplicates against the (damaged) index: its snapshot restores right or not
    at all. The first snapshot's pages are in runs, so their ids are found in `pages`."""
    src = os.path.join(expect, tree_ids[0])
    rc, out = run([SNAP, "-r", r, "store", src, "--name", "again", "--parent", "none", "--json"],
                  "store")
    if rc != 0:
        return
    try:
        new_id = json.loads(out)["id"]
    except (ValueError, KeyError) as e:
        problem(f"store: exit 0 without a snapshot id ({e})")
        return
    names[new_id] = "again"
    try:
        check_restore(r, new_id, expected[tree_ids[0]])
    finally:
        del names[new_id]


READER = r'''
import errno, hashlib, json, os, sys
root, files = sys.argv[1], json.loads(sys.argv[2])
out = {"files": {}, "dirs": {}}
for rel in files:
    try:
        with open(os.path.join(root, rel), "rb", buffering=0) as f:
            data = bytearray()
            while True:
                b = f.read(1 << 17)
                if not b:
                    break
                data += b
        out["files"][rel] = hashlib.blake2b(bytes(data), digest_size=16).hexdigest()
    except OSError as e:
        out["files"][rel] = "error " + errno.errorcode.get(e.errno, str(e.errno))
for d in [""] + sorted({os.path.dirname(f) for f in files if os.path.dirname(f)}):
    try:
        out["dirs"][d] = sorted(os.listdir(os.path.join(root, d)))
    except OSError as e:
        out["dirs"][d] = "error " + errno.errorcode.get(e.errno, str(e.errno))
print(json.dumps(out))
'''


def check_mount(r, snap):
    mnt = os.path.join(scratch, "mnt")
    os.makedirs(mnt, exist_ok=True)
    log = open(os.path.join(scratch, "mount.log"), "w+")
    daemon = subprocess.Popen([MOUNT, r, mnt, "--foreground"], stdout=log, stderr=log)
    deadline = time.monotonic() + LIMIT
    while not os.path.ismount(mnt) and daemon.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    try:
        if not os.path.ismount(mnt):
            if daemon.poll() is None:
                problem(f"mount: nothing mounted after {LIMIT} s")
            elif daemon.returncode < 0:
                log.seek(0)
                problem(f"mount: killed by signal {signal.Signals(-daemon.returncode).name}: "
                        f"{log.read()[-600:]}")
            elif daemon.returncode == 0 or daemon.returncode not in FAILURE_CODES:
                log.seek(0)
                problem(f"mount: exit {daemon.returncode} without mounting: {log.read()[-600:]}")
            return
        files = files_of(snap)
        try:
            p = subprocess.run([sys.executable, "-c", READER, os.path.join(mnt, "snapshots", snap),
                                json.dumps(files)], stdout=subprocess.PIPE, timeout=LIMIT)
        except subprocess.TimeoutExpired:
            problem(f"mount: reading snapshot {snap} still going after {LIMIT} s (a hang)")
            return
        got = json.loads(p.stdout)
        want = expected[snap]
        for rel, digest in got["files"].items():
            if digest.startswith("error "):
                if digest not in ("error EIO", "error ENOENT"):
                    problem(f"mount: reading {snap}/{rel} failed with {digest[6:]}, not EIO")
            elif digest != want[rel][4]:
                problem(f"mount: {snap}/{rel} read without an error, but not its bytes")
        for d, listing in got["dirs"].items():
            if isinstance(listing, str):
                if listing not in ("error EIO", "error ENOENT"):
                    problem(f"mount: listing {snap}/{d} failed with {listing[6:]}, not EIO")
                continue
            names_below = sorted(os.path.basename(k) for k in want
                                 if os.path.dirname(k) == d)
            if listing != names_below:
                problem(f"mount: {snap}/{d} lists {listing}, expected {names_below}")
    finally:
        if os.path.ismount(mnt):
            if subprocess.run(["fusermount3", "-u", mnt], stderr=subprocess.DEVNULL).returncode:
                subprocess.run(["fusermount3", "-uz", mnt], stderr=subprocess.DEVNULL)
        try:
            daemon.wait(timeout=LIMIT)
        except subprocess.TimeoutExpired:
            problem(f"mount: the daemon is still running {LIMIT} s after the unmount")
            daemon.kill()
            daemon.wait()
        else:
            if daemon.returncode < 0:
                log.seek(0)
                problem(f"mount: the daemon was killed by signal "
                        f"{signal.Signals(-daemon.returncode).name}: {log.read()[-600:]}")
            elif daemon.returncode and daemon.returncode not in FAILURE_CODES:
                log.seek(0)
                problem(f"mount: the daemon exited {daemon.returncode}: {log.read()[-600:]}")
        log.close()


def check_all(r, rnd, kind, rel):
    check_list(r, rel)
    snap = rnd.choice(tree_ids)
    check_show(r, rnd.choice(tree_ids + [stream_id]))
    check_restore(r, snap, expected[snap])
    check_cat(r, rnd)
    check_restore_wal(r)
    check_mount(r, rnd.choice(tree_ids))
    if kind in ("index", "pack", "page-record", "none"):
        check_store(r, rnd)


rnd = random.Random(seed)
work = os.path.join(scratch, "round")
start = time.monotonic()

# Round 0, without damage: every check passes, or the checks themselves are wrong.
shutil.copytree(repo, work, symlinks=True)
round_desc = "round 0 (no damage)"
for snap in tree_ids:
    check_restore(work, snap, expected[snap])
    check_mount(work, snap)
check_all(work, random.Random(seed), "none", "")
if problems:
    sys.exit("FAIL: the checks fail on an undamaged repository")
print(f"round 0 (no damage): ok in {time.monotonic() - start:.1f} s", flush=True)

kinds = sorted(targets)
for n in range(1, rounds + 1):
    kind = rnd.choice(kinds)
    rel, lo, hi = rnd.choice(targets[kind])
    round_rnd = random.Random(rnd.getrandbits(64))
    if only and n != only:
        continue
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(repo, work, symlinks=True)
    how = damage(round_rnd, os.path.join(work, rel), lo, hi)
    round_desc = f"seed {seed} round {n}: {kind} {rel}: {how}"
    before = len(problems)
    check_all(work, round_rnd, kind, rel)
    print(f"round {n}: {kind} {rel}: {how}: {'ok' if len(problems) == before else 'FAIL'}",
          flush=True)
shutil.rmtree(work, ignore_errors=True)
print(f"{rounds} rounds in {time.monotonic() - start:.0f} s, {len(problems)} failures")
if problems:
    print(f"FAIL: {len(problems)} check(s) failed (seed {seed}; CORRUPTION_ONLY=N repeats round N):",
          file=sys.stderr)
    for p in problems:
        print("  - " + p, file=sys.stderr)
    sys.exit(1)
PY
