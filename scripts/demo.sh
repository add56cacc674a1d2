#!/bin/bash
# blockd demo (run by "make demo"): export a raw image over NBD, write and
# read it with qemu-io, check it against a locally built reference, then
# stop the daemon over QMP.  Exits non-zero on the first failure.
#
# BLOCKD_BINARY selects the daemon (default: build/storage-daemon/blockd);
# BLOCKD_BINARY=/usr/bin/qemu-storage-daemon runs the same demo against QEMU.

set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
BLOCKD=${BLOCKD_BINARY:-$REPO/build/storage-daemon/blockd}
PYTHON=/usr/bin/python3
QMP_PY=$REPO/tests/qemu-iotests/qmp.py
SIZE_MB=256

step() { printf '==> %s\n' "$*"; }
fail() { printf 'demo: FAILED: %s\n' "$*" >&2; exit 1; }

[ -x "$BLOCKD" ] || fail "daemon binary $BLOCKD not found (build first, or set BLOCKD_BINARY)"
for tool in qemu-img qemu-io; do
    command -v "$tool" >/dev/null || fail "$tool is not installed"
done

WORK=$(mktemp -d /tmp/blockd-demo.XXXXXX)
IMG=$WORK/disk.img
REF=$WORK/ref.img
SOCK=$WORK/nbd.sock
QMP=$WORK/qmp.sock
PIDFILE=$WORK/blockd.pid
DAEMON_PID=

cleanup() {
    if [ -n "$DAEMON_PID" ] && kill -0 "$DAEMON_PID" 2>/dev/null; then
        kill -TERM "$DAEMON_PID" 2>/dev/null || true
        for _ in $(seq 50); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.1; done
        kill -KILL "$DAEMON_PID" 2>/dev/null || true
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

# Initial content and the writes done over NBD: "pattern offset length".
INITIAL=("0x11 0 64M" "0x22 64M 64M" "0x33 128M 64M" "0x44 192M 64M")
NBD_WRITES=("0xab 0 1M" "0xcd 5M 4k" "0xef 100M 3M" "0x00 130M 64k" "0x7e 255M 1M")

qemu_io_writes() {   # IMAGE-OR-URI PATTERN-LIST...
    local target=$1; shift
    local args=() w
    for w in "$@"; do
        read -r pat off len <<<"$w"
        args+=(-c "write -q -P $pat $off $len")
    done
    qemu-io -f raw "${args[@]}" "$target"
}

step "creating a ${SIZE_MB} MiB raw image filled with data"
qemu-img create -q -f raw "$IMG" ${SIZE_MB}M
qemu_io_writes "$IMG" "${INITIAL[@]}"

step "building the reference image locally (same patterns, no daemon)"
qemu-img create -q -f raw "$REF" ${SIZE_MB}M
qemu_io_writes "$REF" "${INITIAL[@]}" "${NBD_WRITES[@]}"

step "starting $(basename "$BLOCKD") with the image exported over NBD ($SOCK)"
"$BLOCKD" \
    --chardev "socket,id=mon0,path=$QMP,server=on,wait=off" --monitor chardev=mon0 \
    --blockdev "driver=file,node-name=disk-file,filename=$IMG" \
    --blockdev "driver=raw,node-name=disk,file=disk-file" \
    --nbd-server "addr.type=unix,addr.path=$SOCK" \
    --export "type=nbd,id=export0,node-name=disk,name=disk,writable=on" \
    --pidfile "$PIDFILE" &
DAEMON_PID=$!
for _ in $(seq 300); do
    [ -s "$PIDFILE" ] && break
    kill -0 "$DAEMON_PID" 2>/dev/null || fail "daemon exited during start-up"
    sleep 0.02
done
[ -s "$PIDFILE" ] || fail "daemon did not write its pidfile"
step "daemon running, pid $(cat "$PIDFILE")"

URI="nbd+unix:///disk?socket=$SOCK"
step "writing through NBD with qemu-io ($URI)"
qemu_io_writes "$URI" "${NBD_WRITES[@]}" || fail "qemu-io write over NBD"

step "reading back through NBD with qemu-io read -P"
args=()
for w in "${NBD_WRITES[@]}"; do
    read -r pat off len <<<"$w"
    args+=(-c "read -q -P $pat $off $len")
done
args+=(-c "read -q -P 0x22 64M 36M" -c "read -q -P 0x44 192M 63M")
qemu-io -f raw "${args[@]}" "$URI" || fail "pattern verification over NBD"

step "stopping the daemon with QMP quit"
"$PYTHON" "$QMP_PY" "$QMP" quit >/dev/null || fail "QMP quit"
for _ in $(seq 250); do kill -0 "$DAEMON_PID" 2>/dev/null || break; sleep 0.02; done
wait "$DAEMON_PID" || fail "daemon exited with status $?"
DAEMON_PID=

step "comparing the image with the reference (qemu-img compare)"
qemu-img compare -f raw -F raw "$IMG" "$REF" || fail "image differs from the reference"

step "demo passed"
