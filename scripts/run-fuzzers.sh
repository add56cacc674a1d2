#!/bin/bash
# Build the libFuzzer harnesses with clang into build-fuzz/ and run each
# for a bounded time, starting from its committed seed corpus.  Prints one
# line per fuzzer ("fuzz-NAME: ok" or "fuzz-NAME: FAILED") and exits
# non-zero if any found a crash.  Without clang's libFuzzer runtime it
# says so and exits 77 ("skipped").
#
#   scripts/run-fuzzers.sh [SECONDS-PER-FUZZER]
set -uo pipefail

seconds=${1:-${FUZZ_SECONDS:-20}}
top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build-fuzz

if ! command -v clang >/dev/null ||
        ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
            >/dev/null 2>&1; then
    echo "run-fuzzers: clang with libFuzzer not found, skipping"
    exit 77
fi
if [[ ! -f $build/build.ninja ]]; then
    CC=clang meson setup "$build" "$top" -Dfuzzing=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
ninja -C "$build" >/dev/null || exit 1

failed=0
for fuzzer in "$build"/tests/fuzz/fuzz-*; do
    [[ -x $fuzzer && ! -d $fuzzer ]] || continue
    name=$(basename "$fuzzer")
    work=$(mktemp -d)
    cp "$top/tests/fuzz/corpus/$name"/* "$work/" 2>/dev/null
    if (cd "$work" && "$fuzzer" -max_total_time="$seconds" \
            -timeout=10 -rss_limit_mb=2048 "$work" >fuzz.log 2>&1); then
        echo "$name: ok"
    else
        echo "$name: FAILED"
        tail -40 "$work/fuzz.log"
        cp "$work"/crash-* "$top/build-fuzz/" 2>/dev/null
        failed=1
    fi
    rm -rf "$work"
done
exit $failed
