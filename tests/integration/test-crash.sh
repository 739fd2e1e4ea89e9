#!/usr/bin/env bash
# kill -9 a store at random moments (0-0.8 s, scaled to how long a store takes), over and over. After every kill: the repository opens and
# lists, every pack file is whole (trailer and every record check out), and snapshots restore
# exactly the source state they were taken of. A snapshot counts once `store` printed
# "complete"; one that got into the catalog but was killed before printing is checked too.
. "$(dirname "$0")/lib.sh"
PACK_CHECK=$(helper pack-check)
ITERATIONS=${CRASH_ITERATIONS:-20}
RANDOM=${CRASH_SEED:-$$}
echo "random seed ${CRASH_SEED:-$$} (CRASH_SEED=N repeats a run's delays)"
REPO=$T/repo
SRC=$T/src
init_repo "$REPO"

note "source tree (~60 MB)"
mkdir -p "$SRC"/random "$SRC"/text "$SRC"/pg/base/5
random_file "$SRC"/random/r1 16
random_file "$SRC"/random/r2 12
random_file "$SRC"/grow 2
python3 - "$SRC" <<'PY'
import os, random, sys
root = sys.argv[1]
rnd = random.Random(7)
words = [f"word{i}" for i in range(5000)]
for i in range(6):  # ~3 MB each, compresses well
    with open(os.path.join(root, "text", f"t{i}.txt"), "w") as f:
        while f.tell() < 3 << 20:
            f.write(" ".join(rnd.choice(words) for _ in range(20)) + "\n")
with open(os.path.join(root, "pg/base/5/1259"), "wb") as f:  # 12 MB of pages, half random
    for i in range(1536):
        f.write(os.urandom(4096) + bytes(4096))
PY
du -sh "$SRC"

declare -A manifest_of # snapshot name -> manifest file of the source state it was given
completed=()           # ids of snapshots reported complete
killed_mid=0 killed_after=0 finished=0

restore_matches() { # id name
    local out=$T/restore-$1
    rm -rf "$out"
    "$SNAP" -r "$REPO" restore "$1" "$out" >/dev/null 2>"$T"/restore.err ||
        { cat "$T"/restore.err; fail "restore of snapshot $1 ($2) failed"; }
    diff <(tree_manifest "$out") "${manifest_of[$2]}" >/dev/null ||
        fail "snapshot $1 ($2) does not restore the source state it was taken of"
    rm -rf "$out"
}

check_repo() { # iteration label
    "$SNAP" -r "$REPO" list --json >"$T"/list.json 2>"$T"/list.err ||
        { cat "$T"/list.err; fail "$1: list failed after kill -9"; }
    grep -qi -e warning -e damaged "$T"/list.err && { cat "$T"/list.err; fail "$1: list warned after kill -9"; }
    "$PACK_CHECK" "$REPO" >"$T"/pack-check.out ||
        { grep -v '^ok ' "$T"/pack-check.out; fail "$1: a pack file is damaged after kill -9"; }
    local id listed_ids
    listed_ids=" $(listed "$T"/list.json | cut -d' ' -f1 | tr '\n' ' ')"
    for id in "${completed[@]}"; do
        [[ $listed_ids == *" $id "* ]] || fail "$1: snapshot $id was reported complete but is not listed"
    done
}
listed() { # list.json: "id name" per snapshot
    python3 -c '
import json, sys
for s in json.load(open(sys.argv[1])): print(s["id"], s["name"])' "$1"
}

# Change the source the way every iteration does (below).
mutate() { # iteration
    random_file "$SRC"/grow $((RANDOM % 6 + 3))
    dd if=/dev/urandom of="$SRC"/random/r1 bs=64K count=4 seek=$((RANDOM % 250)) conv=notrunc status=none
    if (($1 % 2 == 0)); then
        rm -f "$SRC"/random/new-*
        random_file "$SRC/random/new-$1" 4
    fi
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }

# Two stores that are not killed: the first (everything new) and one like an iteration's. The
# second's duration bounds the random delay (never above 0.8 s), so that kills land inside
# stores about as often as after them even when storing is fast.
note "calibration"
tree_manifest "$SRC" >"$T"/manifest-base
manifest_of[base]=$T/manifest-base
completed+=("$(store_id "$REPO" "$SRC" --name base)")
mutate 0
tree_manifest "$SRC" >"$T"/manifest-base2
manifest_of[base2]=$T/manifest-base2
t0=$(now_ms)
completed+=("$(store_id "$REPO" "$SRC" --name base2)")
store_ms=$(($(now_ms) - t0))
max_ms=$((store_ms * 3 / 2))
((max_ms < 50)) && max_ms=50
((max_ms > 800)) && max_ms=800
echo "an iteration's store takes ${store_ms} ms: kills come after 0-${max_ms} ms"

# One store of the source's current state, killed with -9 when WHEN says: after a delay in
# seconds, once a pack is being written ("spool"), or once it printed complete ("complete").
store_and_kill() { # name when
    local name=$1 when=$2 pid rc=0 k id state
    tree_manifest "$SRC" >"$T"/manifest-$name
    manifest_of[$name]=$T/manifest-$name
    "$SNAP" -r "$REPO" store "$SRC" --name "$name" >"$T"/store.out 2>"$T"/store.err &
    pid=$!
    case $when in
    spool | complete)
        for ((k = 0; k < 30000; k++)); do
            if [[ $when == spool ]]; then compgen -G "$REPO/tmp/spool-*" >/dev/null && break
            else grep -q complete "$T"/store.out && break; fi
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.001
        done ;;
    *) sleep "$when" ;;
    esac
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" || rc=$?
    if grep -q complete "$T"/store.out; then
        id=$(sed -n 's/^snapshot \([0-9a-f]\{16\}\) complete.*/\1/p' "$T"/store.out)
        [[ -n $id ]] || fail "cannot find the id in: $(cat "$T"/store.out)"
        completed+=("$id")
        if [[ $rc -eq 0 ]]; then finished=$((finished + 1)); else killed_after=$((killed_after + 1)); fi
        state="complete ($id)"
    elif [[ $rc -eq 137 ]]; then
        killed_mid=$((killed_mid + 1))
        state="killed mid-store"
    else
        cat "$T"/store.err
        fail "$name: store exited $rc without being killed or completing"
    fi
    echo "$name: kill $when: $state (${SECONDS}s into the test)"
    check_repo "$name"
    # Every snapshot in the catalog must be whole, reported or not; check one at random.
    local ids rid rname
    mapfile -t ids < <(listed "$T"/list.json)
    if ((${#ids[@]} > 0)); then
        read -r rid rname <<<"${ids[RANDOM % ${#ids[@]}]}"
        restore_matches "$rid" "$rname"
    fi
}

for ((i = 1; i <= ITERATIONS; i++)); do
    # New data every time, so the store has work to be killed in (the tree stays ~60 MB): a
    # file rewritten with 3-8 MB, a rewritten region, and every other time a new file
    # replacing the previous one.
    mutate "$i"
    store_and_kill "it$i" "$(printf '0.%03d' $((RANDOM % max_ms)))"
done
# Random delays can miss one of the two outcomes when the machine got much slower or faster
# after the calibration: then one more store is killed exactly where the missing one happens.
for ((i = 1; killed_mid == 0 && i <= 3; i++)); do
    mutate $((ITERATIONS + i))
    store_and_kill "forced-mid$i" spool
done
for ((i = 1; killed_after + finished == 0 && i <= 3; i++)); do
    mutate $((ITERATIONS + 3 + i))
    store_and_kill "forced-complete$i" complete
done

echo "kills: $killed_mid mid-store, $killed_after after printing complete; $finished finished before the kill"
[[ $((killed_after + finished)) -gt 0 ]] || fail "no killed store completed, so no durability was checked"
[[ $killed_mid -gt 0 ]] || fail "no store was killed mid-way, so no crash was tested"

note "all snapshots in the catalog restore their source state"
mapfile -t ids < <(listed "$T"/list.json)
for line in "${ids[@]}"; do
    read -r rid rname <<<"$line"
    restore_matches "$rid" "$rname"
done
echo "${#ids[@]} snapshots restored (${#completed[@]} reported complete) at ${SECONDS}s"

note "a clean store afterwards; leftovers of killed stores are swept"
"$SNAP" -r "$REPO" store "$SRC" --name final >/dev/null || fail "store after the kills failed"
check_repo final
left=$(find "$REPO"/tmp -type f | wc -l)
[[ $left -eq 0 ]] || { ls -l "$REPO"/tmp; fail "$left temporary files of killed stores remain in tmp/"; }
echo "crash ok"
