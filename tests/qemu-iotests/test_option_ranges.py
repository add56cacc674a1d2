"""Driver option ranges and values checked as QEMU checks them.

Each row is a blockdev-add and the error QEMU 7.2 gives for it (None:
accepted).  The table runs unchanged against qemu-storage-daemon.

iotests groups: quick
"""

import os

import pytest

from iotests import MiB, qemu_img

pytestmark = pytest.mark.quick

NEG = "Parameter '{}' expects a non-negative number below 2^64"
GIB = 1 << 30
NULL_MAX = 2**63 - GIB        # QEMU's bound on a node's length


def null(**o):
    return {"driver": "null-co", **o}


def raw(**o):
    return {"driver": "raw", "file": {"driver": "null-co"}, **o}


def qcow2(**o):
    return {"driver": "qcow2", "file": {"driver": "file", "filename": "@IMG"},
            **o}


CASES = [
    ("null-size-max", null(size=NULL_MAX), None),
    ("null-size-too-big", null(size=NULL_MAX + 1),
     "Could not refresh total sector count: File too large"),
    ("null-size-int64-max", null(size=2**63 - 1),
     "Could not refresh total sector count: File too large"),
    ("null-latency-max", null(**{"latency-ns": 2**63 - 1}), None),
    ("null-latency-minus-1", null(**{"latency-ns": -1}), "latency-ns is invalid"),
    ("null-latency-2^63", null(**{"latency-ns": 2**63}), "latency-ns is invalid"),
    ("raw-offset-negative", raw(offset=-1), NEG.format("offset")),
    ("raw-size-negative", raw(size=-1), NEG.format("size")),
    ("raw-size-unaligned", raw(size=511), "Specified size is not multiple of 512"),
    ("raw-offset-past-end", raw(offset=2**40),
     "Offset (1099511627776) cannot be greater than size of the containing "
     "file (1073741824)"),
    ("file-aio-native-buffered",
     {"driver": "file", "filename": "@IMG", "aio": "native"},
     "aio=native was specified, but it requires cache.direct=on, which was "
     "not specified."),
    ("qcow2-cache-size-negative", qcow2(**{"cache-size": -1}),
     NEG.format("cache-size")),
    ("qcow2-l2-cache-size-negative", qcow2(**{"l2-cache-size": -1}),
     NEG.format("l2-cache-size")),
    ("qcow2-refcount-cache-size-negative",
     qcow2(**{"refcount-cache-size": -1}), NEG.format("refcount-cache-size")),
    ("qcow2-l2-cache-entry-size-negative",
     qcow2(**{"l2-cache-entry-size": -1}), NEG.format("l2-cache-entry-size")),
    ("qcow2-l2-cache-entry-size-100", qcow2(**{"l2-cache-entry-size": 100}),
     "L2 cache entry size must be a power of two between 512 and the "
     "cluster size (65536)"),
    ("qcow2-l2-cache-entry-size-1M", qcow2(**{"l2-cache-entry-size": MiB}),
     "L2 cache entry size must be a power of two between 512 and the "
     "cluster size (65536)"),
    ("qcow2-l2-cache-entry-size-cluster",
     qcow2(**{"l2-cache-entry-size": 65536}), None),
    ("qcow2-cache-clean-interval-negative",
     qcow2(**{"cache-clean-interval": -1}), "Cache clean interval too big"),
    ("qcow2-cache-clean-interval-2^32",
     qcow2(**{"cache-clean-interval": 2**32}), "Cache clean interval too big"),
    ("qcow2-l2-exceeds-cache", qcow2(**{"cache-size": 1, "l2-cache-size": 2}),
     "l2-cache-size may not exceed cache-size"),
    ("qcow2-refcount-exceeds-cache",
     qcow2(**{"cache-size": 1, "refcount-cache-size": 2}),
     "refcount-cache-size may not exceed cache-size"),
    ("qcow2-all-three-cache-sizes",
     qcow2(**{"cache-size": MiB, "l2-cache-size": MiB // 2,
              "refcount-cache-size": MiB // 2}),
     "cache-size, l2-cache-size and refcount-cache-size may not be set at "
     "the same time"),
    # Without cache-size, l2-cache-size is a maximum: any size opens.
    ("qcow2-l2-cache-size-2G", qcow2(**{"l2-cache-size": 2 * 1024 * MiB}), None),
    ("qcow2-l2-cache-size-2^47", qcow2(**{"l2-cache-size": 2**47}), None),
    ("qcow2-refcount-cache-size-2^47", qcow2(**{"refcount-cache-size": 2**47}),
     "Refcount cache size too big"),
    ("qcow2-cache-size-l2-2^47",
     qcow2(**{"cache-size": 2**48, "l2-cache-size": 2**47}),
     "Refcount cache size too big"),
    ("qcow2-cache-size-rc-small",
     qcow2(**{"cache-size": 2**48, "refcount-cache-size": MiB}),
     "L2 cache size too big"),
    ("qcow2-cache-size-4G", qcow2(**{"cache-size": 4 * 1024 * MiB}), None),
    ("qcow2-overlap-check-unknown", qcow2(**{"overlap-check": "bogus"}),
     "Parameter 'overlap-check' does not accept value 'bogus'"),
]


def substitute(obj, img):
    if isinstance(obj, dict):
        return {k: substitute(v, img) for k, v in obj.items()}
    return img if obj == "@IMG" else obj


@pytest.mark.parametrize("options,error", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_blockdev_add_range(daemon, scratch, options, error):
    img = os.path.join(scratch, "t.img")
    qemu_img("create", "-q", "-f", "qcow2", img, MiB)
    resp = daemon.cmd("blockdev-add",
                      {"node-name": "n", **substitute(options, img)})
    if error is None:
        assert resp == {"return": {}}
    else:
        assert resp["error"] == {"class": "GenericError", "desc": error}


@pytest.mark.parametrize("value,ok", [(-1, False), (0, True), (2**31, True),
                                      (2**32, False)])
def test_nbd_server_max_connections(daemon, value, ok):
    resp = daemon.cmd("nbd-server-start", {
        "addr": {"type": "unix", "data": {"path": daemon.sock("n.sock")}},
        "max-connections": value})
    if ok:
        assert resp == {"return": {}}
    else:
        assert resp["error"] == {
            "class": "GenericError",
            "desc": "Parameter 'max-connections' expects uint32_t"}
