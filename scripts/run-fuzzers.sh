#!/bin/bash
# Build the libFuzzer harnesses with clang, ASan and UBSan into build-fuzz/
# and run each for a bounded time, starting from its committed seed corpus.
# Prints one line per fuzzer the fuzz build defines ("fuzz-NAME: ok" or
# "fuzz-NAME: FAILED") and exits non-zero if any failed, if one was not
# built, or if the toolchain is missing: a fuzzer that cannot run fails.
#
#   scripts/run-fuzzers.sh [SECONDS-PER-FUZZER]
set -uo pipefail

seconds=${1:-${FUZZ_SECONDS:-20}}
top=$(cd "$(dirname "$0")/.." && pwd)
build=$top/build-fuzz

if ! command -v clang >/dev/null ||
        ! ls /usr/lib/llvm-*/lib/clang/*/lib/linux/libclang_rt.fuzzer-x86_64.a \
            >/dev/null 2>&1; then
    echo "run-fuzzers: clang with libFuzzer not found (scripts/install-deps.sh installs it)"
    exit 1
fi
if [[ ! -f $build/build.ninja ]]; then
    CC=clang meson setup "$build" "$top" -Dfuzzing=true \
        -Db_sanitize=address,undefined -Db_lundef=false >/dev/null || exit 1
fi
ninja -C "$build" >/dev/null || exit 1

# The fuzzers the build defines, not the files that happen to exist.
mapfile -t fuzzers < <(meson introspect "$build" --targets |
    /usr/bin/python3 -c 'import json, sys
for t in json.load(sys.stdin):
    if t["type"] == "executable" and t["name"].startswith("fuzz-"):
        print(t["filename"][0])')
if [[ ${#fuzzers[@]} -eq 0 ]]; then
    echo "run-fuzzers: the fuzz build defines no fuzzer"
    exit 1
fi

failed=0
for fuzzer in "${fuzzers[@]}"; do
    name=$(basename "$fuzzer")
    if [[ ! -x $fuzzer ]]; then
        echo "$name: FAILED"
        echo "run-fuzzers: $fuzzer was not built"
        failed=1
        continue
    fi
    work=$(mktemp -d)
    cp "$top/tests/fuzz/corpus/$name"/* "$work/" 2>/dev/null
    if (cd "$work" && "$fuzzer" -max_total_time="$seconds" \
            -timeout=10 -rss_limit_mb=2048 "$work" >fuzz.log 2>&1); then
        echo "$name: ok"
    else
        echo "$name: FAILED"
        tail -40 "$work/fuzz.log"
        cp "$work"/crash-* "$build/" 2>/dev/null
        failed=1
    fi
    rm -rf "$work"
done
exit $failed
