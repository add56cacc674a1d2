"""blockdev-backup and drive-backup at the QMP level: schema, validation, busy nodes.

Runs against blockd and qemu-storage-daemon 7.2 with the same
expectations: the 7.2 schema of the commands, every message of the
sync/bitmap/bitmap-mode matrix in QEMU's order, the job-creation checks,
and which nodes a running backup makes busy.  Arguments newer than 7.2
and blockd's extensions are blockd_only.

iotests groups: quick
"""

import os

import pytest

import iotests
from iotests import MiB, qemu_img

pytestmark = pytest.mark.quick

SIZE = 64 * MiB
GE = "GenericError"


@pytest.fixture
def nodes(daemon, scratch):
    """raw nodes "src" and "tgt" of SIZE bytes, a smaller "small", bitmap b0."""
    for name, size in (("src", SIZE), ("tgt", SIZE), ("small", SIZE // 2)):
        path = os.path.join(scratch, f"{name}.img")
        qemu_img("create", "-f", "raw", path, str(size))
        daemon.add_file_raw(path, node=name)
    daemon.command("block-dirty-bitmap-add", {"node": "src", "name": "b0"})
    return daemon


def backup(d, **args):
    full = {"device": "src", "target": "tgt", "job-id": "j", **args}
    return d.cmd("blockdev-backup", {k: v for k, v in full.items() if v is not None})


def assert_error(resp, desc, cls=GE):
    assert resp.get("error") == {"class": cls, "desc": desc}, resp


# --- schema ------------------------------------------------------------------

# BackupCommon as qemu-storage-daemon 7.2 introspects it: (name, optional).
COMMON_72 = [("job-id", True), ("device", False), ("sync", False), ("speed", True),
             ("bitmap", True), ("bitmap-mode", True), ("compress", True),
             ("on-source-error", True), ("on-target-error", True),
             ("auto-finalize", True), ("auto-dismiss", True),
             ("filter-node-name", True), ("x-perf", True)]


def schema_index(d):
    schema = d.command("query-qmp-schema")
    return {e["name"]: e for e in schema}


def members(index, name):
    return [(m["name"], "default" in m) for m in index[name]["members"]]


def member_type(index, obj, member):
    return index[[m for m in index[obj]["members"] if m["name"] == member][0]["type"]]


def test_schema_of_the_commands(daemon):
    """Every 7.2 member, in 7.2's order, with its type and optionality."""
    idx = schema_index(daemon)
    bb = idx[idx["blockdev-backup"]["arg-type"]]
    db = idx[idx["drive-backup"]["arg-type"]]
    assert idx["drive-backup"].get("features") == ["deprecated"]
    common = members(idx, bb["name"])[:len(COMMON_72)]
    assert common == COMMON_72
    assert ("target", False) in members(idx, bb["name"])
    assert members(idx, db["name"])[-3:] == [("target", False), ("format", True),
                                             ("mode", True)]
    sync = member_type(idx, bb["name"], "sync")
    assert sync["values"] == ["top", "full", "none", "incremental", "bitmap"]
    assert member_type(idx, bb["name"], "bitmap-mode")["values"] == [
        "on-success", "never", "always"]
    assert member_type(idx, bb["name"], "on-source-error")["values"] == [
        "report", "ignore", "enospc", "stop", "auto"]
    assert member_type(idx, db["name"], "mode")["values"] == ["existing", "absolute-paths"]
    xperf = [m for m in bb["members"] if m["name"] == "x-perf"][0]
    assert xperf.get("features") == ["unstable"]
    perf = [(n, o) for n, o in members(idx, xperf["type"])]
    assert perf[:3] == [("use-copy-range", True), ("max-workers", True), ("max-chunk", True)]
    kinds = idx[idx["transaction"]["arg-type"]]
    actions = idx[[m for m in kinds["members"] if m["name"] == "actions"][0]["type"]]
    cases = {v["case"] for v in idx[actions["element-type"]]["variants"]}
    assert {"blockdev-backup", "drive-backup"} <= cases


@iotests.blockd_only("arguments of QEMU 9.1, 9.2, 10.1 and blockd's extensions")
def test_schema_of_later_arguments(daemon):
    idx = schema_index(daemon)
    bb = idx[idx["blockdev-backup"]["arg-type"]]
    names = dict(members(idx, bb["name"]))
    for name in ("discard-source", "on-cbw-error", "__org.blockd_bitmap-node"):
        assert names[name] is True, name
    assert member_type(idx, bb["name"], "on-cbw-error")["values"] == [
        "break-guest-write", "break-snapshot"]
    xperf = [m for m in bb["members"] if m["name"] == "x-perf"][0]
    assert ("min-cluster-size", True) in members(idx, xperf["type"])


# --- validation --------------------------------------------------------------

MATRIX = [
    # 1. bitmap sync modes need a bitmap
    (dict(sync="bitmap"), "must provide a valid bitmap name for 'bitmap' sync mode"),
    (dict(sync="incremental"),
     "must provide a valid bitmap name for 'incremental' sync mode"),
    # 2. incremental means on-success (checked before the bitmap is looked up)
    (dict(sync="incremental", bitmap="nope", **{"bitmap-mode": "never"}),
     "Bitmap sync mode must be 'on-success' when using sync mode 'incremental'"),
    # 3. the bitmap is looked up on the device
    (dict(sync="bitmap", bitmap="nope", **{"bitmap-mode": "never"}),
     "Bitmap 'nope' could not be found"),
    (dict(sync="none", bitmap="nope"), "Bitmap 'nope' could not be found"),
    # 4. a bitmap needs its mode
    (dict(sync="bitmap", bitmap="b0"),
     "Bitmap sync mode must be given when providing a bitmap"),
    # 6. none makes no bitmap
    (dict(sync="none", bitmap="b0", **{"bitmap-mode": "on-success"}),
     "sync mode 'none' does not produce meaningful bitmap outputs"),
    # 7. never is only for sync=bitmap
    (dict(sync="full", bitmap="b0", **{"bitmap-mode": "never"}),
     "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'full'"),
    (dict(sync="top", bitmap="b0", **{"bitmap-mode": "never"}),
     "Bitmap sync mode 'never' has no meaningful effect when combined with sync mode 'top'"),
    # 8. a mode needs a bitmap
    (dict(sync="full", **{"bitmap-mode": "on-success"}),
     "Cannot specify bitmap sync mode without a bitmap"),
    (dict(sync="none", **{"bitmap-mode": "never"}),
     "Cannot specify bitmap sync mode without a bitmap"),
    # then the job-creation checks
    (dict(sync="full", target="src"), "Source and target cannot be the same"),
    (dict(sync="full", compress=True), "Compression is not supported for this drive "),
    (dict(sync="full", **{"x-perf": {"max-workers": 0}}),
     "max-workers must be between 1 and 2147483647"),
    (dict(sync="full", **{"x-perf": {"max-chunk": -1}}),
     "max-chunk must be zero (which means no limit) or positive"),
    (dict(sync="full", target="small"), "Source and target image have different sizes"),
    (dict(sync="full", **{"x-perf": {"max-chunk": 1024}}),
     "Required max-chunk (1024) is less than backup cluster size (65536)"),
    (dict(sync="full", **{"job-id": "1bad"}), "Invalid job ID '1bad'"),
    # QEMU's default job id is the device name, which a daemon's nodes lack.
    (dict(sync="full", **{"job-id": None}), "Invalid job ID ''"),
    (dict(sync="full", speed=-1), "Parameter 'speed' expects a non-negative value"),
    (dict(sync="full", device="nope"), "Cannot find device='nope' nor node-name='nope'"),
    (dict(sync="full", target="nope"), "Cannot find device='nope' nor node-name='nope'"),
]


@pytest.mark.parametrize("args,desc", MATRIX, ids=[d for _, d in MATRIX])
def test_validation_message(nodes, args, desc):
    assert_error(backup(nodes, **args), desc)
    # Nothing was left behind: no job, no filter, the bitmap usable.
    assert nodes.command("query-jobs") == []
    names = {n["node-name"] for n in nodes.command("query-named-block-nodes")}
    assert names == {"src", "src-file", "tgt", "tgt-file", "small", "small-file"}
    nodes.command("block-dirty-bitmap-clear", {"node": "src", "name": "b0"})


def test_validation_order_matrix_first(nodes):
    """A matrix error wins over a job-creation error (target too small)."""
    assert_error(backup(nodes, sync="bitmap", target="small"),
                 "must provide a valid bitmap name for 'bitmap' sync mode")


def test_busy_bitmap(nodes):
    """A running backup freezes its bitmap: another one is refused at once."""
    assert backup(nodes, sync="full", bitmap="b0", speed=1,
                  **{"bitmap-mode": "on-success"}) == {"return": {}}
    assert_error(backup(nodes, sync="bitmap", bitmap="b0", target="small",
                        **{"job-id": "k", "bitmap-mode": "never"}),
                 "Bitmap 'b0' is currently in use by another operation and cannot be used")
    nodes.command("job-cancel", id="j")
    nodes.qmp.wait_event("BLOCK_JOB_CANCELLED", timeout=30, match={"device": "j"})


@iotests.blockd_only("min-cluster-size is QEMU 9.2's")
def test_min_cluster_size_power_of_two(nodes):
    assert_error(backup(nodes, sync="full", **{"x-perf": {"min-cluster-size": 65537}}),
                 "min-cluster-size needs to be a power of 2")


@iotests.blockd_only("__org.blockd_bitmap-node is a blockd extension")
def test_bitmap_node_messages(nodes):
    assert_error(backup(nodes, sync="full", **{"__org.blockd_bitmap-node": "src-file"}),
                 "Cannot specify a bitmap node without a bitmap")
    assert_error(backup(nodes, sync="bitmap", bitmap="b0", **{
        "bitmap-mode": "never", "__org.blockd_bitmap-node": "nope"}),
        "Cannot find device='nope' nor node-name='nope'")
    assert_error(backup(nodes, sync="bitmap", bitmap="b0", **{
        "bitmap-mode": "never", "__org.blockd_bitmap-node": "src-file"}),
        "Bitmap 'b0' could not be found")


# --- busy nodes ----------------------------------------------------------------

def test_nodes_busy_while_backup_runs(nodes):
    """blockdev-del and a second backup get QEMU's refusals, in its order."""
    assert backup(nodes, sync="none", **{"filter-node-name": "flt",
                                         "job-id": "j0"}) == {"return": {}}
    busy = "Node '%s' is busy: block device is in use by block job: backup"
    cases = [
        (dict(**{"job-id": "j1"}), busy % "tgt"),
        (dict(**{"job-id": "j0"}), busy % "tgt"),
        (dict(device="tgt", target="src", **{"job-id": "j2"}), busy % "tgt"),
        (dict(target="small", **{"job-id": "j1"}),
         "Source and target image have different sizes"),
    ]
    for args, desc in cases:
        assert_error(backup(nodes, sync="none", **args), desc)
    for node, desc in (("src", "Block device src is in use"),
                       ("src-file", "Block device src-file is in use"),
                       ("tgt", busy % "tgt"),
                       ("tgt-file", "Block device tgt-file is in use"),
                       ("flt", busy % "flt")):
        assert_error(nodes.cmd("blockdev-del", {"node-name": node}), desc)
    job = nodes.command("query-block-jobs")
    assert [(j["device"], j["type"], j["status"], j["len"], j["offset"]) for j in job] == [
        ("j0", "backup", "running", SIZE, 0)]
    nodes.command("job-cancel", id="j0")
    ev = nodes.qmp.wait_event("BLOCK_JOB_CANCELLED", timeout=30, match={"device": "j0"})
    assert ev["data"] == {"device": "j0", "len": SIZE, "offset": 0, "speed": 0,
                          "type": "backup"}
    nodes.qmp.wait_event("JOB_STATUS_CHANGE", timeout=30,
                         match={"id": "j0", "status": "null"})
    # Free again: the filter is gone and the target can be deleted.
    names = {n["node-name"] for n in nodes.command("query-named-block-nodes")}
    assert "flt" not in names
    nodes.command("blockdev-del", {"node-name": "tgt"})


# --- transactions ----------------------------------------------------------------

def test_transaction_abort_leaves_no_job(nodes):
    resp = nodes.cmd("transaction", {"actions": [
        {"type": "blockdev-backup", "data": {"device": "src", "target": "tgt",
                                             "sync": "full", "job-id": "j"}},
        {"type": "abort", "data": {}}]})
    assert_error(resp, "Transaction aborted using Abort action")
    assert nodes.command("query-jobs") == []
    names = {n["node-name"] for n in nodes.command("query-named-block-nodes")}
    assert names == {"src", "src-file", "tgt", "tgt-file", "small", "small-file"}
    nodes.command("blockdev-del", {"node-name": "tgt"})


def test_grouped_bitmap_action(nodes):
    """QEMU refuses bitmap actions in grouped transactions; blockd accepts them."""
    resp = nodes.cmd("transaction", {
        "actions": [{"type": "block-dirty-bitmap-add",
                     "data": {"node": "src", "name": "b1"}}],
        "properties": {"completion-mode": "grouped"}})
    if iotests.is_reference():
        assert_error(resp, "Action 'block-dirty-bitmap-add' does not support "
                     "Transaction property completion-mode = grouped")
    else:
        assert resp == {"return": {}}
        nodes.command("block-dirty-bitmap-remove", {"node": "src", "name": "b1"})


SPILL_SIZE = "__org.blockd_write-behind-spill-size"
SPILL_DIR = "__org.blockd_write-behind-spill-dir"
WRITE_BEHIND = "__org.blockd_write-behind-buffer"


@iotests.blockd_only("the write-behind spill is a blockd extension")
@pytest.mark.parametrize("args,desc", [
    # QMP takes -1 for a size as 2^64 - 1, as QEMU does.
    ({SPILL_SIZE: -1}, "Cannot create block-copy-state: write-behind-spill-bytes is too large"),
    ({SPILL_DIR: []}, f"Invalid parameter type for '{SPILL_DIR}', expected: string"),
    ({WRITE_BEHIND: 65536, SPILL_SIZE: 2**63},
     "Cannot create block-copy-state: write-behind-spill-bytes is too large"),
    ({WRITE_BEHIND: 65536, SPILL_SIZE: 4096},
     "Cannot create block-copy-state: The write-behind spill size (4096 bytes) is "
     "less than a cluster (65536 bytes)"),
    ({SPILL_SIZE: MiB},
     "Cannot create block-copy-state: A write-behind spill needs a write-behind "
     "buffer of at least a cluster (65536 bytes)"),
    ({WRITE_BEHIND: MiB, SPILL_DIR: "/tmp"}, f"{SPILL_DIR} needs {SPILL_SIZE}"),
    ({WRITE_BEHIND: MiB, SPILL_SIZE: MiB, SPILL_DIR: "/nonexistent"},
     "Cannot create block-copy-state: Could not create a write-behind spill file "
     "in '/nonexistent': No such file or directory"),
], ids=["negative", "dir-not-string", "too-large", "less-than-a-cluster", "no-buffer",
        "dir-without-size", "no-such-dir"])
def test_write_behind_spill_messages(nodes, args, desc):
    assert_error(backup(nodes, sync="full", **args), desc)
    assert nodes.command("query-jobs") == []


@iotests.blockd_only("the write-behind spill is a blockd extension")
def test_write_behind_spill_in_schema(nodes):
    idx = schema_index(nodes)
    args = members(idx, idx["blockdev-backup"]["arg-type"])
    assert (SPILL_SIZE, True) in args and (SPILL_DIR, True) in args
