#!/bin/bash
# Install the Debian packages blockd needs to build and test, but only
# those that are missing.  Says what it does; does nothing when all is
# there.  Run as root (or with sudo available).
set -euo pipefail

packages=(
    # build (clang and its runtime: the libFuzzer harnesses)
    gcc meson ninja-build pkg-config clang libclang-rt-14-dev
    libglib2.0-dev liburing-dev libjson-c-dev zlib1g-dev libzstd-dev
    libgnutls28-dev libnbd-dev
    # tests and benchmarks: the real tools blockd is compared with
    python3 python3-pytest python3-libnbd
    qemu-utils qemu-system-common strace
    nbdkit libnbd-bin fio
    # certtool, for the TLS tests
    gnutls-bin
    # <sys/sdt.h>: USDT probes at the trace points
    systemtap-sdt-dev
)

missing=()
for p in "${packages[@]}"; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null |
            grep -q 'install ok installed'; then
        missing+=("$p")
    fi
done

if [[ ${#missing[@]} -eq 0 ]]; then
    echo "install-deps: all ${#packages[@]} packages present"
    exit 0
fi

echo "install-deps: installing missing packages: ${missing[*]}"
sudo=()
if [[ $(id -u) -ne 0 ]]; then
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
