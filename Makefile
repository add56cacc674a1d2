# A thin wrapper over meson and ninja, in the manner of QEMU's.
#
#   make              install missing packages, configure, build
#   make check        build, then run every test (unit, iotests, fuzzers)
#   make check-unit   C unit tests only
#   make check-iotests  the Python integration tests only
#   make check-fuzz   the libFuzzer harnesses, FUZZ_SECONDS each (clang)
#
# CHECK_SUITES picks the suites 'make check' runs (default: all three).
# scripts/run-tests fails closed: a suite that did not run, or ran no test,
# fails (docs/devel/testing.rst).
#   make demo         build, then run the live demo (scripts/demo.py)
#   make bench        build, then compare with qemu-storage-daemon
#   make clean        remove the build directory
#
# SANITIZE=1 builds into build-sanitize/ with ASan and UBSan and runs
# everything against that build.  (The fuzzers always use ASan and UBSan.)

SANITIZE ?=
ifeq ($(SANITIZE),1)
BUILD_DIR ?= build-sanitize
MESON_OPTS += -Db_sanitize=address,undefined -Db_lundef=false
# A small quarantine keeps the daemon's RSS meaningful for the tests that
# check memory stays bounded; any error or leak still fails the run.
export ASAN_OPTIONS := quarantine_size_mb=8:detect_leaks=1
export UBSAN_OPTIONS := halt_on_error=1:print_stacktrace=1
else
BUILD_DIR ?= build
endif

CHECK_SUITES ?= unit iotests fuzz
export BLOCKD_BUILD_DIR := $(abspath $(BUILD_DIR))

.PHONY: all deps build check check-unit check-iotests check-fuzz demo bench \
	clean

all: build

deps:
	@scripts/install-deps.sh

$(BUILD_DIR)/build.ninja:
	meson setup $(BUILD_DIR) $(MESON_OPTS)

build: deps $(BUILD_DIR)/build.ninja
	ninja -C $(BUILD_DIR)

check: build
	@scripts/run-tests $(CHECK_SUITES)

check-unit: build
	@scripts/run-tests unit

check-iotests: build
	@scripts/run-tests iotests

check-fuzz: deps
	@scripts/run-tests fuzz

demo: build
	@/usr/bin/python3 scripts/demo.py

bench: build
	bench/nbd-io

clean:
	rm -rf build build-sanitize build-fuzz
