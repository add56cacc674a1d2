#!/bin/bash
# Run the test suites against the build in $BLOCKD_BUILD_DIR and print one
# closing line "N passed, N failed" over all of them.  Exits non-zero if
# anything failed or if no test ran at all.
#
#   scripts/run-tests.sh all|unit|iotests|fuzz
set -uo pipefail

what=${1:-all}
top=$(cd "$(dirname "$0")/.." && pwd)
build=${BLOCKD_BUILD_DIR:-$top/build}
python=/usr/bin/python3
export BLOCKD_BINARY=${BLOCKD_BINARY:-$build/storage-daemon/blockd}

passed=0
failed=0
skipped=0

run_unit() {
    meson test -C "$build" --suite unit --print-errorlogs --num-processes 2
    local log=$build/meson-logs/testlog.json
    local counts
    counts=$("$python" - "$log" <<'PY'
import json, sys
ok = bad = skip = 0
for line in open(sys.argv[1]):
    result = json.loads(line)["result"]
    if result in ("OK", "EXPECTEDFAIL"):
        ok += 1
    elif result == "SKIP":
        skip += 1
    else:
        bad += 1
print(ok, bad, skip)
PY
)
    read -r ok bad skip <<<"$counts"
    passed=$((passed + ok)); failed=$((failed + bad))
    skipped=$((skipped + skip))
}

run_iotests() {
    local xml=$build/iotests-junit.xml
    (cd "$top" && "$python" -m pytest tests/qemu-iotests -q \
        -p no:cacheprovider --junitxml="$xml")
    local counts
    counts=$("$python" - "$xml" <<'PY'
import sys
import xml.etree.ElementTree as ET
tests = fail = skip = 0
for suite in ET.parse(sys.argv[1]).getroot().iter("testsuite"):
    tests += int(suite.get("tests", 0))
    fail += int(suite.get("failures", 0)) + int(suite.get("errors", 0))
    skip += int(suite.get("skipped", 0))
print(tests - fail - skip, fail, skip)
PY
) || counts="0 1 0"
    read -r ok bad skip <<<"$counts"
    passed=$((passed + ok)); failed=$((failed + bad))
    skipped=$((skipped + skip))
}

# Each fuzzer that runs its time without a crash counts as one test.
run_fuzz() {
    local out
    out=$("$top/scripts/run-fuzzers.sh")
    local rc=$?
    echo "$out"
    if [[ $rc -eq 77 ]]; then
        skipped=$((skipped + 1))
        return
    fi
    passed=$((passed + $(grep -c ': ok$' <<<"$out")))
    failed=$((failed + $(grep -c ': FAILED$' <<<"$out")))
    if [[ $rc -ne 0 ]] && ! grep -q ': FAILED$' <<<"$out"; then
        failed=$((failed + 1))      # the fuzz build itself failed
    fi
}

case $what in
    unit) run_unit ;;
    iotests) run_iotests ;;
    fuzz) run_fuzz ;;
    all) run_unit; run_iotests; run_fuzz ;;
    *) echo "usage: $0 all|unit|iotests|fuzz" >&2; exit 2 ;;
esac

echo "$passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 && $passed -gt 0 ]]
