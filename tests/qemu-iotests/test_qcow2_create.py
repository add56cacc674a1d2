"""blockdev-create for qcow2: new images are valid, usable and as asked.

A file is created with blockdev-create (driver file), added as a node,
and a qcow2 image is created on it with blockdev-create (driver qcow2).
``qemu-img info`` must show what was asked (virtual size, cluster size,
compat level, refcount width, lazy refcounts, backing file and format,
compression type) and ``qemu-img check`` must find nothing wrong.  The
image is then opened with blockdev-add, written through NBD, checked
again and compared with a raw image built from an in-test model.
Argument errors are QEMU 7.2's: the job fails with the reference
daemon's message.  Runs against both daemons; the features blockd
refuses are tested blockd-only.

iotests groups: rw, quick
"""

import json
import os
from typing import Any, Dict, List, Optional, Tuple

import pytest

import iotests
from iotests import MiB, Reference, compare_images, nbd_uri, qemu_img, qemu_io_cmds

pytestmark = [pytest.mark.rw, pytest.mark.quick]

SIZE = 16 * MiB


def run_job(d: Any, job_id: str, options: Dict[str, Any]) -> Tuple[List[str], Optional[str]]:
    """blockdev-create; wait for the job to conclude, dismiss it.

    Returns the JOB_STATUS_CHANGE statuses and the job's error (or None).
    """
    resp = d.cmd("blockdev-create", {"job-id": job_id, "options": options})
    assert resp == {"return": {}}, resp
    seen: List[str] = []
    while not seen or seen[-1] != "concluded":
        ev = d.qmp.wait_event("JOB_STATUS_CHANGE", timeout=60, match={"id": job_id})
        seen.append(ev["data"]["status"])
    job = [j for j in d.command("query-jobs") if j["id"] == job_id][0]
    assert job["type"] == "create"
    assert (job["current-progress"], job["total-progress"]) == (1, 1)
    d.command("job-dismiss", id=job_id)
    return seen, job.get("error")


def new_file_node(d: Any, path: str, node: str = "f0", **opts: Any) -> None:
    """Create an empty file with blockdev-create and add it as ``node``."""
    statuses, err = run_job(d, "mkfile", {"driver": "file", "filename": path, "size": 0})
    assert err is None, err
    args = {"driver": "file", "node-name": node, "filename": path}
    args.update({k.replace("_", "-"): v for k, v in opts.items()})
    d.command("blockdev-add", args)


def create_qcow2(d: Any, scratch: str, name: str = "t.qcow2", **opts: Any) -> str:
    """A new qcow2 image on a new file node f0; fails the test on error."""
    path = os.path.join(scratch, name)
    new_file_node(d, path)
    options = {"driver": "qcow2", "file": "f0", "size": SIZE}
    options.update({k.replace("_", "-"): v for k, v in opts.items()})
    statuses, err = run_job(d, "c", options)
    assert err is None, err
    assert statuses == ["created", "running", "waiting", "pending", "concluded"]
    return path


def info(path: str) -> Dict[str, Any]:
    # -U: the daemon still has the file node open.
    return json.loads(qemu_img("info", "-U", "--output=json", path).stdout)


def check(path: str) -> str:
    res = qemu_img("check", "-U", path, check=False)
    assert res.returncode == 0, res
    assert "No errors were found on the image." in res.stdout, res
    return res.stdout


def test_create_events_info_check(daemon: Any, scratch: str) -> None:
    path = create_qcow2(daemon, scratch)
    # blockdev-create is not a block job: only JOB_STATUS_CHANGE events.
    assert not [e for e in daemon.qmp.get_events() if e["event"] != "JOB_STATUS_CHANGE"]
    i = info(path)
    assert i["format"] == "qcow2"
    assert i["virtual-size"] == SIZE
    assert i["cluster-size"] == 65536
    assert "backing-filename" not in i
    spec = i["format-specific"]["data"]
    assert spec["compat"] == "1.1"
    assert spec["refcount-bits"] == 16
    assert spec["lazy-refcounts"] is False
    assert spec["compression-type"] == "zlib"
    assert spec["corrupt"] is False
    # The same layout as QEMU: header, refcount table and block, L1.
    assert "Image end offset: 262144" in check(path)


OPTION_CASES = [
    ({"version": "v2"}, {"compat": "0.10"}),
    ({"cluster-size": 512}, {"cluster-size": 512}),
    ({"cluster-size": 2 * MiB}, {"cluster-size": 2 * MiB}),
    ({"refcount-bits": 1, "cluster-size": 4096}, {"refcount-bits": 1}),
    ({"refcount-bits": 8}, {"refcount-bits": 8}),
    ({"refcount-bits": 64}, {"refcount-bits": 64}),
    ({"lazy-refcounts": True}, {"lazy-refcounts": True}),
    ({"compression-type": "zstd"}, {"compression-type": "zstd"}),
    ({"compression-type": "zlib", "version": "v2"}, {"compat": "0.10"}),
    ({"size": 0}, {"virtual-size": 0}),
    ({"size": 3 * MiB + 512}, {"virtual-size": 3 * MiB + 512}),
    # An L1 table of many clusters.
    ({"size": 1024 * MiB, "cluster-size": 512}, {"virtual-size": 1024 * MiB}),
]


@pytest.mark.parametrize("opts,expect", OPTION_CASES,
                         ids=[json.dumps(o) for o, _ in OPTION_CASES])
def test_create_options(daemon: Any, scratch: str, opts: Dict[str, Any],
                        expect: Dict[str, Any]) -> None:
    path = create_qcow2(daemon, scratch, **opts)
    i = info(path)
    spec = i["format-specific"]["data"]
    for key, want in expect.items():
        got = i[key] if key in i else spec[key]
        assert got == want, (key, i)
    if "virtual-size" not in expect:
        assert i["virtual-size"] == SIZE
    check(path)


def test_create_backing(daemon: Any, scratch: str) -> None:
    base = os.path.join(scratch, "base.raw")
    ref = Reference(SIZE)
    ref.write(0x5b, 0, SIZE)
    ref.save(base)
    path = create_qcow2(daemon, scratch, backing_file="base.raw", backing_fmt="raw")
    i = info(path)
    assert i["backing-filename"] == "base.raw"
    assert i["backing-filename-format"] == "raw"
    check(path)
    # Opened with its backing file, it reads the base; writes go on top.
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f0"})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    uri = nbd_uri(sock, "q")
    qemu_io_cmds(uri, ["write -q -P 0x1c 100000 70000"])
    ref.write(0x1c, 100000, 70000)
    compare_images(uri, ref.save(os.path.join(scratch, "ref.raw")))


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_create_backing_without_format(daemon: Any, scratch: str, version: str) -> None:
    base = os.path.join(scratch, "base.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", base, SIZE)
    path = create_qcow2(daemon, scratch, backing_file=base, version=version)
    i = info(path)
    assert i["backing-filename"] == base
    assert "backing-filename-format" not in i
    check(path)


def test_create_small_cluster_drops_feature_table(daemon: Any, scratch: str) -> None:
    # 512-byte clusters: the header, feature table and backing name do not
    # all fit, so the (optional) feature name table is left out.
    qemu_img("create", "-q", "-f", "qcow2", os.path.join(scratch, "b.img"), SIZE)
    path = create_qcow2(daemon, scratch, cluster_size=512, backing_file="b.img",
                        backing_fmt="qcow2")
    i = info(path)
    assert i["backing-filename"] == "b.img"
    assert i["backing-filename-format"] == "qcow2"
    check(path)
    with open(path, "rb") as f:
        assert b"dirty bit" not in f.read(512)


@pytest.mark.parametrize("prealloc", ["metadata", "falloc", "full"])
def test_create_preallocation(daemon: Any, scratch: str, prealloc: str) -> None:
    path = create_qcow2(daemon, scratch, preallocation=prealloc, cluster_size=65536)
    out = check(path)
    assert "256/256 = 100.00% allocated" in out, out
    st = os.stat(path)
    assert st.st_size >= SIZE
    if prealloc == "metadata":
        assert st.st_blocks * 512 < SIZE // 2
    else:
        assert st.st_blocks * 512 >= SIZE
    # Preallocated clusters read as zeroes and can be written.
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f0"})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    uri = nbd_uri(sock, "q")
    qemu_io_cmds(uri, ["write -q -P 0x3d 65000 200000"])
    ref = Reference(SIZE)
    ref.write(0x3d, 65000, 200000)
    compare_images(uri, ref.save(os.path.join(scratch, "ref.raw")))
    assert daemon.stop()
    check(path)
    assert "256/256 = 100.00% allocated" in check(path)


@pytest.mark.parametrize("cluster_size", [4096, 65536])
def test_create_then_write_through_nbd(daemon: Any, scratch: str, cluster_size: int) -> None:
    path = create_qcow2(daemon, scratch, cluster_size=cluster_size)
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f0"})
    sock = daemon.start_nbd_unix()
    daemon.export("q", writable=True)
    uri = nbd_uri(sock, "q")
    ref = Reference(SIZE)
    cmds = []
    for pat, off, ln in [(0x11, 0, 512), (0x22, 1000, 3000), (0x33, cluster_size - 7, 20),
                         (0x44, 3 * cluster_size + 100, 5 * cluster_size),
                         (0x55, 2 * MiB + 13, 3 * MiB + 1), (0x66, SIZE - 4096, 4096)]:
        cmds.append(f"write -q -P {pat:#x} {off} {ln}")
        ref.write(pat, off, ln)
    qemu_io_cmds(uri, cmds)
    raw = ref.save(os.path.join(scratch, "ref.raw"))
    compare_images(uri, raw)
    assert daemon.stop()
    check(path)
    compare_images(path, raw, fmt_a="qcow2")


def test_create_on_inline_file_definition(daemon: Any, scratch: str) -> None:
    path = os.path.join(scratch, "inline.qcow2")
    run_job(daemon, "mkfile", {"driver": "file", "filename": path, "size": 0})
    statuses, err = run_job(daemon, "c", {
        "driver": "qcow2", "size": MiB,
        "file": {"driver": "file", "filename": path}})
    assert err is None, err
    assert info(path)["virtual-size"] == MiB
    check(path)
    # The node was temporary: the file is not held open any more.
    assert [n for n in daemon.command("query-named-block-nodes")
            if n["file"] == path] == []


def test_create_overwrites_existing_image(daemon: Any, scratch: str) -> None:
    path = os.path.join(scratch, "old.qcow2")
    qemu_img("create", "-q", "-f", "qcow2", path, 64 * MiB)
    qemu_io_cmds(path, ["write -q -P 0x77 0 4M"], fmt="qcow2")
    daemon.command("blockdev-add", {"driver": "file", "node-name": "f0", "filename": path})
    statuses, err = run_job(daemon, "c", {"driver": "qcow2", "file": "f0", "size": SIZE})
    assert err is None, err
    assert info(path)["virtual-size"] == SIZE
    check(path)
    daemon.command("blockdev-add", {"driver": "qcow2", "node-name": "q", "file": "f0"})
    sock = daemon.start_nbd_unix()
    daemon.export("q")
    compare_images(nbd_uri(sock, "q"), Reference(SIZE).save(os.path.join(scratch, "z.raw")))


LONG = "/" + "a" * 1100

ARGUMENT_ERRORS = [
    ({"file": "nope"}, "Cannot find device='nope' nor node-name='nope'"),
    ({"size": 1000}, "Image size must be a multiple of 512 bytes"),
    ({"size": 1000, "cluster-size": 1000}, "Image size must be a multiple of 512 bytes"),
    ({"cluster-size": 1000}, "Cluster size must be a power of two between 512 and 2048k"),
    ({"cluster-size": 256}, "Cluster size must be a power of two between 512 and 2048k"),
    ({"cluster-size": 4 * MiB}, "Cluster size must be a power of two between 512 and 2048k"),
    ({"extended-l2": True, "version": "v2"},
     "Extended L2 entries are only supported with compatibility level 1.1 and above "
     "(use version=v3 or greater)"),
    ({"extended-l2": True, "cluster-size": 4096},
     "Extended L2 entries are only supported with cluster sizes of at least 16384 bytes"),
    ({"preallocation": "metadata", "backing-file": "/x"},
     "Backing file and preallocation can only be used at the same time if extended_l2 is on"),
    ({"backing-fmt": "raw"}, "Backing format cannot be used without backing file"),
    ({"version": "v2", "lazy-refcounts": True},
     "Lazy refcounts only supported with compatibility level 1.1 and above "
     "(use version=v3 or greater)"),
    ({"refcount-bits": 3}, "Refcount width must be a power of two and may not exceed 64 bits"),
    ({"refcount-bits": 0}, "Refcount width must be a power of two and may not exceed 64 bits"),
    ({"refcount-bits": 128}, "Refcount width must be a power of two and may not exceed 64 bits"),
    ({"version": "v2", "refcount-bits": 8},
     "Different refcount widths than 16 bits require compatibility level 1.1 or above "
     "(use version=v3 or greater)"),
    ({"data-file-raw": True}, "data-file-raw requires data-file"),
    ({"compression-type": "zstd", "version": "v2"},
     "Non-zlib compression type is only supported with compatibility level 1.1 and above "
     "(use version=v3 or greater)"),
    ({"size": 9223372036854775296},
     "Could not resize image: offset(9223372036854775296) exceeds maximum(9223372035781033984)"),
    ({"size": 2 ** 51 + 512}, "Could not resize image: Failed to grow the L1 table: File too large"),
    ({"backing-file": LONG},
     f"Could not assign backing file '{LONG}' with format '(null)': Invalid argument"),
    ({"backing-file": "/" + "b" * 400, "backing-fmt": "raw", "cluster-size": 512},
     f"Could not assign backing file '{'/' + 'b' * 400}' with format 'raw': "
     "No space left on device"),
]


def test_argument_errors(daemon: Any, scratch: str) -> None:
    new_file_node(daemon, os.path.join(scratch, "e.qcow2"))
    for n, (opts, message) in enumerate(ARGUMENT_ERRORS):
        options = {"driver": "qcow2", "file": "f0", "size": MiB, **opts}
        statuses, err = run_job(daemon, f"e{n}", options)
        assert err == message, (opts, err)
        assert statuses == ["created", "running", "aborting", "concluded"]


def test_read_only_node(daemon: Any, scratch: str) -> None:
    new_file_node(daemon, os.path.join(scratch, "ro.qcow2"), read_only=True)
    statuses, err = run_job(daemon, "c", {"driver": "qcow2", "file": "f0", "size": MiB})
    assert err == "Block node is read-only"


def test_qmp_errors(daemon: Any, scratch: str) -> None:
    def create(**opts: Any) -> Dict[str, Any]:
        return daemon.cmd("blockdev-create", {"job-id": "x", "options": {
            "driver": "qcow2", **opts}})
    assert create(size=MiB)["error"]["desc"] == "Parameter 'options.file' is missing"
    assert create(file="f0")["error"]["desc"] == "Parameter 'options.size' is missing"
    assert create(file="f0", size=MiB, version="v4")["error"]["desc"] == (
        "Parameter 'version' does not accept value 'v4'")
    assert create(file="f0", size=MiB, **{"compression-type": "lzo"})["error"]["desc"] == (
        "Parameter 'compression-type' does not accept value 'lzo'")
    assert daemon.command("query-jobs") == []


@iotests.blockd_only("QEMU creates these; blockd refuses them")
@pytest.mark.parametrize("opts,message", [
    ({"extended-l2": True}, "qcow2: extended L2 entries (extended-l2) are not supported"),
    ({"data-file": "f0"}, "qcow2: external data files (data-file) are not supported"),
    ({"encrypt": {"format": "luks", "key-secret": "s"}},
     "qcow2: encrypted images (encrypt) are not supported"),
])
def test_refused_features(daemon: Any, scratch: str, opts: Dict[str, Any], message: str) -> None:
    new_file_node(daemon, os.path.join(scratch, "r.qcow2"))
    statuses, err = run_job(daemon, "c", {"driver": "qcow2", "file": "f0", "size": MiB, **opts})
    assert err == message
