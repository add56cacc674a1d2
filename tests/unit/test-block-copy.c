/*
 * block-copy (block/block-copy.c) and the in-flight list under it
 * (block/reqlist.c), through their real interfaces on real nodes.
 *
 * An in-test driver ("test-disk") stores data in memory and reports,
 * per 64 KiB cluster, what block status says (data, zeroes, or not
 * allocated), counts the data writes and write-zeroes each cluster got,
 * fails requests in a chosen range, and holds requests in a chosen range
 * until the test lets them go, so that tests can keep a task in flight
 * while another call arrives.  Every request goes through the main loop
 * once, so concurrent requests interleave.  Made "big", it stores and
 * counts nothing, for tests of the memory budget.
 *
 * An owner node ("test-owner", in QEMU terms the copy-before-write
 * filter) holds the source and target edges with the permissions a copy
 * needs, and the copy bitmap.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/block-backend.h"
#include "block/block-copy.h"
#include "block/backup/block-copy-int.h"
#include "block/dirty-bitmap.h"
#include "block/reqlist.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-input-visitor.h"
#include "util/main-loop.h"
#include "util/ratelimit.h"

#include <fcntl.h>
#include <signal.h>
#include <sys/resource.h>

enum {
    CLUSTER = 64 * 1024,
    DISK_SIZE = 4 * 1024 * 1024,
    CLUSTERS = DISK_SIZE / CLUSTER,
};

typedef enum {
    KIND_DATA,
    KIND_ZERO,
    KIND_UNALLOCATED,
} ClusterKind;

typedef struct TestDisk {
    uint8_t *data;                      /* NULL: big, stores nothing */
    ClusterKind kind[CLUSTERS];
    unsigned writes[CLUSTERS];          /* successful data writes */
    unsigned zero_writes[CLUSTERS];
    unsigned reads;
    unsigned discards;
    /* bdrv_get_info: its result, and the cluster size it reports. */
    int info_ret;
    int64_t info_cluster_size;
    /* Requests overlapping [fail_start, fail_end) fail with fail_ret. */
    int64_t fail_start, fail_end;
    int fail_ret;
    /* Requests overlapping [hold_start, hold_end) wait in @held. */
    int64_t hold_start, hold_end;
    CoQueue held;
    unsigned held_count;
    /* Bytes being read right now, and the most at any time. */
    int64_t reading, max_reading;
    /* Every request takes this long (0: one main-loop turn). */
    int64_t latency_ms;
} TestDisk;

static bool overlaps(int64_t a, int64_t a_bytes, int64_t b, int64_t b_end)
{
    return a < b_end && b < a + a_bytes;
}

static void coroutine_fn disk_yield_once(void)
{
    coroutine_wake(coroutine_self());
    coroutine_yield();
}

static gboolean disk_sleep_done(gpointer opaque)
{
    coroutine_wake(opaque);
    return G_SOURCE_REMOVE;
}

static void coroutine_fn disk_sleep_ms(int64_t ms)
{
    g_timeout_add(ms, disk_sleep_done, coroutine_self());
    coroutine_yield();
}

/* Hold, fail, or let the request through. */
static int coroutine_fn disk_gate(TestDisk *d, int64_t offset, int64_t bytes)
{
    while (overlaps(offset, bytes, d->hold_start, d->hold_end)) {
        d->held_count++;
        co_queue_wait(&d->held);
        d->held_count--;
    }
    if (d->latency_ms) {
        disk_sleep_ms(d->latency_ms);
    } else {
        disk_yield_once();
    }
    if (overlaps(offset, bytes, d->fail_start, d->fail_end)) {
        return d->fail_ret;
    }
    return 0;
}

static int coroutine_fn disk_open(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp)
{
    TestDisk *d = bs->opaque;

    d->data = g_malloc0(DISK_SIZE);
    d->info_ret = -ENOTSUP;
    d->fail_start = d->fail_end = -1;
    d->hold_start = d->hold_end = -1;
    co_queue_init(&d->held);
    bs->total_bytes = DISK_SIZE;
    bs->bl.request_alignment = 512;
    bs->bl.min_mem_alignment = 512;
    return 0;
}

static void disk_close(BlockDriverState *bs)
{
    TestDisk *d = bs->opaque;

    g_free(d->data);
}

static int coroutine_fn disk_co_preadv(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    TestDisk *d = bs->opaque;
    int ret;

    d->reading += bytes;
    d->max_reading = MAX(d->max_reading, d->reading);
    ret = disk_gate(d, offset, bytes);
    d->reading -= bytes;
    if (ret < 0) {
        return ret;
    }
    d->reads++;
    if (d->data) {
        iovector_from_buf(qiov, 0, d->data + offset, bytes);
    }
    return 0;
}

static int coroutine_fn disk_co_pwritev(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        IOVector *qiov,
                                        BdrvRequestFlags flags)
{
    TestDisk *d = bs->opaque;
    int ret = disk_gate(d, offset, bytes);

    if (ret < 0 || !d->data) {
        return ret;
    }
    iovector_to_buf(qiov, 0, d->data + offset, bytes);
    for (int64_t c = offset / CLUSTER; c * CLUSTER < offset + bytes; c++) {
        d->writes[c]++;
    }
    return 0;
}

static int coroutine_fn disk_co_pwrite_zeroes(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes,
                                              BdrvRequestFlags flags)
{
    TestDisk *d = bs->opaque;
    int ret = disk_gate(d, offset, bytes);

    g_assert_cmpint(flags & BDRV_REQ_MAY_UNMAP, ==, 0);
    if (ret < 0 || !d->data) {
        return ret;
    }
    memset(d->data + offset, 0, bytes);
    for (int64_t c = offset / CLUSTER; c * CLUSTER < offset + bytes; c++) {
        d->zero_writes[c]++;
    }
    return 0;
}

static int coroutine_fn disk_co_pdiscard(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes)
{
    TestDisk *d = bs->opaque;

    d->discards++;
    return 0;
}

static const int disk_kind_status[] = {
    [KIND_DATA] = BDRV_BLOCK_DATA | BDRV_BLOCK_ALLOCATED,
    [KIND_ZERO] = BDRV_BLOCK_ZERO | BDRV_BLOCK_ALLOCATED,
    [KIND_UNALLOCATED] = 0,
};

static int coroutine_fn disk_co_block_status(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, int64_t *map,
                                             BlockDriverState **file)
{
    TestDisk *d = bs->opaque;
    ClusterKind kind;
    int64_t end = offset + bytes;
    int64_t pos = ALIGN_UP(offset + 1, CLUSTER);

    if (!d->data) {
        *pnum = bytes;
        return disk_kind_status[KIND_DATA];
    }
    kind = d->kind[offset / CLUSTER];
    while (pos < end && d->kind[pos / CLUSTER] == kind) {
        pos += CLUSTER;
    }
    *pnum = MIN(pos, end) - offset;
    return disk_kind_status[kind];
}

/* Make @bs a disk of @size bytes that stores nothing. */
static void disk_make_big(BlockDriverState *bs, int64_t size)
{
    TestDisk *d = bs->opaque;

    g_clear_pointer(&d->data, g_free);
    bs->total_bytes = size;
}

static int disk_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    TestDisk *d = bs->opaque;

    bdi->cluster_size = d->info_cluster_size;
    return d->info_ret;
}

static const BlockDriver bdrv_test_disk = {
    .format_name = "test-disk",
    .instance_size = sizeof(TestDisk),
    .bdrv_open = disk_open,
    .bdrv_close = disk_close,
    .bdrv_co_preadv = disk_co_preadv,
    .bdrv_co_pwritev = disk_co_pwritev,
    .bdrv_co_pwrite_zeroes = disk_co_pwrite_zeroes,
    .bdrv_co_pdiscard = disk_co_pdiscard,
    .bdrv_co_block_status = disk_co_block_status,
    .bdrv_get_info = disk_get_info,
};

static int coroutine_fn owner_open(BlockDriverState *bs,
                                   BlockdevOptions *options, Error **errp)
{
    bs->total_bytes = DISK_SIZE;
    return 0;
}

/* Read (and discard) the source, write the target. */
static void owner_child_perm(BlockDriverState *bs, BdrvChild *child,
                             uint64_t parent_perm, uint64_t parent_shared,
                             uint64_t *nperm, uint64_t *nshared)
{
    *nperm = BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE;
    *nshared = BLK_PERM_ALL;
}

static const BlockDriver bdrv_test_owner = {
    .format_name = "test-owner",
    .bdrv_open = owner_open,
    .bdrv_child_perm = owner_child_perm,
};

/* --- fixture --- */

typedef struct Fixture {
    BlockDriverState *owner, *src_bs, *tgt_bs;
    BdrvChild *source, *target;
    TestDisk *src, *tgt;
    BlockCopyState *bcs;
    uint64_t progress;
} Fixture;

static void coroutine_fn open_nodes_entry(void *opaque)
{
    Fixture *f = opaque;

    f->owner = bdrv_new_open_driver(&bdrv_test_owner, "owner", false,
                                    &error_abort);
    f->src_bs = bdrv_new_open_driver(&bdrv_test_disk, "src", true,
                                     &error_abort);
    f->tgt_bs = bdrv_new_open_driver(&bdrv_test_disk, "tgt", false,
                                     &error_abort);
}

static void progress_cb(void *opaque, uint64_t bytes)
{
    Fixture *f = opaque;

    f->progress += bytes;
}

/* Nodes and edges, no state yet; the source holds a byte pattern. */
static void fixture_open_nodes(Fixture *f)
{
    *f = (Fixture) { 0 };
    co_run_sync(open_nodes_entry, f);
    f->src = f->src_bs->opaque;
    f->tgt = f->tgt_bs->opaque;
    f->tgt->info_ret = 0;       /* no cluster size: the default */
    for (int i = 0; i < DISK_SIZE; i++) {
        f->src->data[i] = (i * 13 + i / 4096) | 1;
    }
    f->source = bdrv_attach_child(f->src_bs, "file", BDRV_CHILD_DATA,
                                  &child_of_bds, f->owner, f->owner, 0,
                                  BLK_PERM_ALL, &error_abort);
    f->target = bdrv_attach_child(f->tgt_bs, "target", BDRV_CHILD_DATA,
                                  &child_of_bds, f->owner, f->owner, 0,
                                  BLK_PERM_ALL, &error_abort);
}

static void fixture_new_state(Fixture *f, const BdrvDirtyBitmap *bitmap,
                              const BlockCopyOptions *opts)
{
    f->bcs = block_copy_state_new(f->source, f->target, bitmap, opts,
                                  &error_abort);
    block_copy_set_progress_callback(f->bcs, progress_cb, f);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    fixture_open_nodes(f);
    fixture_new_state(f, NULL, NULL);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    block_copy_state_free(f->bcs);
    bdrv_unref(f->owner);
    bdrv_unref(f->src_bs);
    bdrv_unref(f->tgt_bs);
}

static void assert_cluster_copied(Fixture *f, int c)
{
    g_assert_cmpmem(f->tgt->data + c * CLUSTER, CLUSTER,
                    f->src->data + c * CLUSTER, CLUSTER);
}

static void assert_each_cluster_written_once(Fixture *f)
{
    for (int c = 0; c < CLUSTERS; c++) {
        g_assert_cmpuint(f->tgt->writes[c], ==, 1);
    }
}

/* The target equals the source, and no cluster was copied twice. */
static void assert_copied_exactly_once(Fixture *f)
{
    g_assert_cmpmem(f->tgt->data, DISK_SIZE, f->src->data, DISK_SIZE);
    assert_each_cluster_written_once(f);
}

/* --- running calls --- */

typedef struct SyncCall {
    Fixture *f;
    int64_t offset, bytes;
    uint64_t timeout_ns;
    int ret;
    bool error_is_read;
    bool done;
} SyncCall;

static void coroutine_fn sync_call_entry(void *opaque)
{
    SyncCall *c = opaque;

    c->ret = block_copy(c->f->bcs, c->offset, c->bytes, c->timeout_ns,
                        &c->error_is_read);
    c->done = true;
}

static void sync_call_start(SyncCall *c, Fixture *f, int64_t offset,
                            int64_t bytes)
{
    *c = (SyncCall) { .f = f, .offset = offset, .bytes = bytes,
                      .timeout_ns = c->timeout_ns };
    coroutine_enter(coroutine_create(sync_call_entry, c));
}

static void run_until(bool *flag)
{
    while (!*flag) {
        main_loop_wait(true);
    }
}

/* Let queued wake-ups and timers run, without blocking. */
static void run_pending(void)
{
    for (int i = 0; i < 50; i++) {
        main_loop_wait(false);
    }
}

static int sync_copy(Fixture *f, int64_t offset, int64_t bytes,
                     bool *error_is_read)
{
    SyncCall c = { 0 };

    sync_call_start(&c, f, offset, bytes);
    run_until(&c.done);
    if (error_is_read) {
        *error_is_read = c.error_is_read;
    }
    return c.ret;
}

typedef struct AsyncCall {
    BlockCopyCallState *call;
    bool cb_ran;
} AsyncCall;

static void async_cb(void *opaque)
{
    AsyncCall *a = opaque;

    g_assert_true(block_copy_call_finished(a->call));
    a->cb_ran = true;
}

/* Wait for @a's callback; the call must have succeeded.  Frees it. */
static void finish_async_call(AsyncCall *a)
{
    run_until(&a->cb_ran);
    g_assert_true(block_copy_call_succeeded(a->call));
    block_copy_call_free(a->call);
}

static void async_start(AsyncCall *a, Fixture *f, int64_t offset,
                        int64_t bytes, int max_workers, int64_t max_chunk)
{
    *a = (AsyncCall) { 0 };
    a->call = block_copy_async(f->bcs, offset, bytes, max_workers, max_chunk,
                               async_cb, a);
    /* The callback never runs before block_copy_async() returns. */
    g_assert_false(a->cb_ran);
}

static int async_copy_all_bytes(Fixture *f, int64_t bytes,
                                bool *error_is_read)
{
    AsyncCall a;
    int ret;

    async_start(&a, f, 0, bytes, BLOCK_COPY_MAX_WORKERS, 0);
    run_until(&a.cb_ran);
    ret = block_copy_call_status(a.call, error_is_read);
    g_assert_cmpint(block_copy_call_succeeded(a.call), ==, ret == 0);
    g_assert_cmpint(block_copy_call_failed(a.call), ==, ret < 0);
    block_copy_call_free(a.call);
    return ret;
}

static int async_copy_all(Fixture *f, bool *error_is_read)
{
    return async_copy_all_bytes(f, DISK_SIZE, error_is_read);
}

static void release_source(Fixture *f)
{
    f->src->hold_start = f->src->hold_end = -1;
    co_queue_restart_all(&f->src->held);
}

/* --- tests: the basics --- */

/* A background copy of everything: target = source, each cluster once. */
static void test_full_copy(Fixture *f, gconstpointer data)
{
    g_assert_cmpint(block_copy_cluster_size(f->bcs), ==, CLUSTER);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==, DISK_SIZE);
    g_assert_cmpint(async_copy_all(f, NULL), ==, 0);
    assert_copied_exactly_once(f);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==, 0);
    g_assert_cmpuint(f->progress, ==, DISK_SIZE);
    /* 1 MiB tasks. */
    g_assert_cmpuint(f->src->reads, ==, DISK_SIZE / (1024 * 1024));

    /* Nothing left: a second call copies nothing. */
    g_assert_cmpint(sync_copy(f, 0, DISK_SIZE, NULL), ==, 0);
    assert_each_cluster_written_once(f);
}

/* The copy bitmap records nothing itself: writes do not dirty it. */
static void test_bitmap_disabled(Fixture *f, gconstpointer data)
{
    BdrvDirtyBitmap *bitmap = block_copy_dirty_bitmap(f->bcs);

    g_assert_false(bdrv_dirty_bitmap_enabled(bitmap));
    g_assert_null(bdrv_dirty_bitmap_name(bitmap));
    g_assert_true(bdrv_dirty_bitmap_bs(bitmap) == f->owner);
    g_assert_cmpuint(bdrv_dirty_bitmap_granularity(bitmap), ==, CLUSTER);
}

/* max_chunk caps the task size; max_workers caps the parallel tasks. */
static void test_chunk_and_workers(Fixture *f, gconstpointer data)
{
    AsyncCall a;

    async_start(&a, f, 0, DISK_SIZE, 2, 3 * CLUSTER);
    finish_async_call(&a);
    g_assert_cmpmem(f->tgt->data, DISK_SIZE, f->src->data, DISK_SIZE);
    g_assert_cmpuint(f->src->reads, ==, DIV_ROUND_UP(CLUSTERS, 3));
    g_assert_cmpint(f->src->max_reading, <=, 2 * 3 * CLUSTER);
}

/* Zero clusters become write-zeroes; unaligned calls cover whole clusters. */
static void test_zeroes(Fixture *f, gconstpointer data)
{
    for (int c = 4; c < 8; c++) {
        f->src->kind[c] = KIND_ZERO;
    }
    memset(f->tgt->data, 0xff, DISK_SIZE);
    g_assert_cmpint(sync_copy(f, 2 * CLUSTER + 100, 8 * CLUSTER, NULL), ==,
                    0);
    for (int c = 0; c < CLUSTERS; c++) {
        bool copied = c >= 2 && c < 11;
        bool zero = c >= 4 && c < 8;

        g_assert_cmpuint(f->tgt->zero_writes[c], ==, copied && zero);
        g_assert_cmpuint(f->tgt->writes[c], ==, copied && !zero);
        if (copied && !zero) {
            assert_cluster_copied(f, c);
        }
    }
    for (int i = 4 * CLUSTER; i < 8 * CLUSTER; i++) {
        g_assert_cmpint(f->tgt->data[i], ==, 0);
    }
    g_assert_cmpuint(f->progress, ==, 9 * CLUSTER);
}

/* sync=top: unallocated runs are dropped, and count as progress. */
static void test_skip_unallocated(Fixture *f, gconstpointer data)
{
    for (int c = 0; c < CLUSTERS; c += 3) {
        f->src->kind[c] = KIND_UNALLOCATED;
    }
    block_copy_set_skip_unallocated(f->bcs, true);
    g_assert_cmpint(async_copy_all(f, NULL), ==, 0);
    for (int c = 0; c < CLUSTERS; c++) {
        g_assert_cmpuint(f->tgt->writes[c], ==, c % 3 != 0);
    }
    g_assert_cmpuint(f->progress, ==, DISK_SIZE);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==, 0);
}

typedef struct ResetCall {
    BlockCopyState *bcs;
    int64_t offset, count;
    int ret;
} ResetCall;

static void coroutine_fn reset_entry(void *opaque)
{
    ResetCall *r = opaque;

    r->ret = block_copy_reset_unallocated(r->bcs, r->offset, &r->count);
}

/* The background scan of sync=top clears unallocated clusters. */
static void test_reset_unallocated(Fixture *f, gconstpointer data)
{
    int allocated_clusters = 0;

    for (int c = 10; c < 20; c++) {
        f->src->kind[c] = KIND_UNALLOCATED;
    }
    for (int64_t offset = 0; offset < DISK_SIZE;) {
        ResetCall r = { .bcs = f->bcs, .offset = offset };

        co_run_sync(reset_entry, &r);
        g_assert_cmpint(r.ret, >=, 0);
        g_assert_cmpint(r.count, >, 0);
        if (r.ret == 1) {
            allocated_clusters += r.count / CLUSTER;
        } else {
            g_assert_cmpint(offset, ==, 10 * CLUSTER);
            g_assert_cmpint(r.count, ==, 10 * CLUSTER);
        }
        offset += r.count;
    }
    g_assert_cmpint(allocated_clusters, ==, CLUSTERS - 10);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==,
                     DISK_SIZE - 10 * CLUSTER);
}

/* --- tests: failures --- */

/*
 * A failed target write: the call fails with error_is_read false, the
 * failed task's clusters are dirty again, the others are copied; the
 * next call copies the rest.
 */
static void test_write_failure(Fixture *f, gconstpointer data)
{
    bool error_is_read = true;

    f->tgt->fail_start = 20 * CLUSTER;
    f->tgt->fail_end = 20 * CLUSTER + 1;
    f->tgt->fail_ret = -ENOSPC;
    g_assert_cmpint(async_copy_all(f, &error_is_read), ==, -ENOSPC);
    g_assert_false(error_is_read);
    /* The 1 MiB task holding cluster 20 is to copy again, not more. */
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), >=, CLUSTER);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs) + f->progress, ==,
                     DISK_SIZE);
    g_assert_true(hbitmap_get(bdrv_dirty_bitmap_bits(
                                  block_copy_dirty_bitmap(f->bcs)),
                              20 * CLUSTER));
    g_assert_cmpuint(f->tgt->writes[20], ==, 0);

    f->tgt->fail_start = f->tgt->fail_end = -1;
    g_assert_cmpint(async_copy_all(f, NULL), ==, 0);
    assert_copied_exactly_once(f);
    g_assert_cmpuint(f->progress, ==, DISK_SIZE);
}

/* A failed source read: error_is_read is true, nothing is written. */
static void test_read_failure(Fixture *f, gconstpointer data)
{
    bool error_is_read = false;

    f->src->fail_start = 0;
    f->src->fail_end = DISK_SIZE;
    f->src->fail_ret = -EIO;
    g_assert_cmpint(sync_copy(f, 5 * CLUSTER, CLUSTER, &error_is_read), ==,
                    -EIO);
    g_assert_true(error_is_read);
    g_assert_cmpuint(f->tgt->writes[5], ==, 0);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==, DISK_SIZE);
    g_assert_cmpuint(f->progress, ==, 0);
}

/* --- tests: who waits for whom --- */

/*
 * A background task holds clusters 0-15 in flight (its read is held).
 * A synchronous call elsewhere does not wait for it; one over the held
 * range waits, and copies nothing itself: every cluster once.
 */
static void test_sync_waits_only_on_overlap(Fixture *f, gconstpointer data)
{
    AsyncCall a;
    SyncCall far = { 0 }, near = { 0 };

    f->src->hold_start = 0;
    f->src->hold_end = CLUSTER;
    async_start(&a, f, 0, DISK_SIZE, 1, 0);
    while (f->src->held_count == 0) {
        main_loop_wait(true);
    }

    sync_call_start(&far, f, 40 * CLUSTER, 2 * CLUSTER);
    run_until(&far.done);
    g_assert_cmpint(far.ret, ==, 0);
    assert_cluster_copied(f, 40);
    assert_cluster_copied(f, 41);

    sync_call_start(&near, f, 3 * CLUSTER, CLUSTER);
    run_pending();
    g_assert_false(near.done);
    g_assert_cmpuint(f->tgt->writes[3], ==, 0);

    f->src->hold_start = f->src->hold_end = -1;
    co_queue_restart_all(&f->src->held);
    run_until(&near.done);
    g_assert_cmpint(near.ret, ==, 0);
    assert_cluster_copied(f, 3);
    finish_async_call(&a);

    assert_copied_exactly_once(f);
    g_assert_cmpuint(f->progress, ==, DISK_SIZE);
}

/*
 * The task a synchronous call waits for fails: its clusters are dirty
 * again, and the waiting call copies them itself.
 */
static void test_sync_after_failed_peer(Fixture *f, gconstpointer data)
{
    AsyncCall a;
    SyncCall c = { 0 };

    f->src->hold_start = 0;
    f->src->hold_end = CLUSTER;
    f->src->fail_start = 0;
    f->src->fail_end = CLUSTER;
    f->src->fail_ret = -EIO;
    async_start(&a, f, 0, DISK_SIZE, 1, 0);
    while (f->src->held_count == 0) {
        main_loop_wait(true);
    }
    sync_call_start(&c, f, 2 * CLUSTER, CLUSTER);
    run_pending();
    g_assert_false(c.done);

    /* The held read fails; then reads work again. */
    f->src->hold_start = f->src->hold_end = -1;
    co_queue_restart_all(&f->src->held);
    run_until(&a.cb_ran);
    g_assert_true(block_copy_call_failed(a.call));
    block_copy_call_free(a.call);
    f->src->fail_start = f->src->fail_end = -1;
    run_until(&c.done);
    g_assert_cmpint(c.ret, ==, 0);
    assert_cluster_copied(f, 2);
    g_assert_cmpuint(f->tgt->writes[2], ==, 1);
    g_assert_cmpuint(f->tgt->writes[0], ==, 0);
}

/*
 * Many synchronous calls over random ranges race a background copy:
 * still every cluster exactly once, and target = source.
 */
static void test_exactly_once_random(Fixture *f, gconstpointer data)
{
    enum { CALLS = 40 };
    g_autoptr(GRand) rand = g_rand_new_with_seed(42);
    SyncCall calls[CALLS];
    AsyncCall a;

    async_start(&a, f, 0, DISK_SIZE, 4, 2 * CLUSTER);
    for (int i = 0; i < CALLS; i++) {
        int first = g_rand_int_range(rand, 0, CLUSTERS);
        int n = g_rand_int_range(rand, 1, MIN(6, CLUSTERS - first) + 1);

        calls[i].timeout_ns = 0;
        sync_call_start(&calls[i], f, first * CLUSTER, n * CLUSTER);
        if (i % 4 == 0) {
            main_loop_wait(false);
        }
    }
    for (int i = 0; i < CALLS; i++) {
        run_until(&calls[i].done);
        g_assert_cmpint(calls[i].ret, ==, 0);
        for (int64_t o = calls[i].offset;
             o < calls[i].offset + calls[i].bytes; o += CLUSTER) {
            assert_cluster_copied(f, o / CLUSTER);
        }
    }
    finish_async_call(&a);
    assert_copied_exactly_once(f);
    g_assert_cmpuint(f->progress, ==, DISK_SIZE);
}

/*
 * A synchronous call that waits too long returns -ETIMEDOUT; its copy
 * goes on, and freeing the state waits for it.
 */
static void test_sync_timeout(Fixture *f, gconstpointer data)
{
    SyncCall c = { .timeout_ns = 20 * 1000 * 1000 };

    f->src->hold_start = 0;
    f->src->hold_end = CLUSTER;
    sync_call_start(&c, f, 0, 2 * CLUSTER);
    run_until(&c.done);
    g_assert_cmpint(c.ret, ==, -ETIMEDOUT);
    g_assert_false(c.error_is_read);
    /* The copy is still in flight: its owner counts it. */
    g_assert_cmpuint(f->owner->in_flight, ==, 1);
    g_assert_cmpuint(f->tgt->writes[0], ==, 0);

    f->src->hold_start = f->src->hold_end = -1;
    co_queue_restart_all(&f->src->held);
    block_copy_state_free(f->bcs);
    f->bcs = NULL;
    g_assert_cmpuint(f->owner->in_flight, ==, 0);
    assert_cluster_copied(f, 0);
    assert_cluster_copied(f, 1);
}

/* A quick call within its timeout returns its own result. */
static void test_sync_within_timeout(Fixture *f, gconstpointer data)
{
    SyncCall c = { .timeout_ns = 10ULL * 1000 * 1000 * 1000 };

    sync_call_start(&c, f, CLUSTER, CLUSTER);
    run_until(&c.done);
    g_assert_cmpint(c.ret, ==, 0);
    assert_cluster_copied(f, 1);
    g_assert_cmpuint(f->owner->in_flight, ==, 0);
}

/* --- tests: cancel and rate limit --- */

/* Cancel stops a rate-limited call; the callback reports it. */
static void test_cancel(Fixture *f, gconstpointer data)
{
    AsyncCall a;

    block_copy_set_speed(f->bcs, 1024 * 1024);
    async_start(&a, f, 0, DISK_SIZE, BLOCK_COPY_MAX_WORKERS, CLUSTER);
    while (f->progress == 0) {
        main_loop_wait(true);
    }
    block_copy_call_cancel(a.call);
    block_copy_call_cancel(a.call);
    run_until(&a.cb_ran);
    g_assert_true(block_copy_call_cancelled(a.call));
    g_assert_false(block_copy_call_succeeded(a.call));
    g_assert_false(block_copy_call_failed(a.call));
    g_assert_cmpint(block_copy_call_status(a.call, NULL), ==, 0);
    block_copy_call_free(a.call);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), >, 0);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs) + f->progress, ==,
                     DISK_SIZE);
}

/*
 * 4 MiB at 8 MiB/s in 1 MiB tasks: the first task goes at once, each of
 * the other three waits for the one before to be paid, so the copy
 * takes at least 375 ms.  (Only a lower bound: the machine is loaded.)
 */
static void test_ratelimit(Fixture *f, gconstpointer data)
{
    int64_t start = clock_now_ns();
    AsyncCall a;

    block_copy_set_speed(f->bcs, 8 * 1024 * 1024);
    async_start(&a, f, 0, DISK_SIZE, BLOCK_COPY_MAX_WORKERS, 0);
    finish_async_call(&a);
    g_assert_cmpint(clock_now_ns() - start, >=, 370 * 1000 * 1000);
    g_assert_cmpmem(f->tgt->data, DISK_SIZE, f->src->data, DISK_SIZE);

    /* Synchronous calls ignore the limit. */
    block_copy_set_speed(f->bcs, 1);
    bdrv_set_dirty_bitmap(block_copy_dirty_bitmap(f->bcs), 0, DISK_SIZE);
    start = clock_now_ns();
    g_assert_cmpint(sync_copy(f, 0, DISK_SIZE, NULL), ==, 0);
    g_assert_cmpint(clock_now_ns() - start, <, 5LL * 1000 * 1000 * 1000);
}

/*
 * A background call asleep on the limit holds no clusters: a guest
 * write's copy of the clusters it would take next goes on at once, and
 * the background call does not copy them again.
 */
static void test_limit_holds_nothing(Fixture *f, gconstpointer data)
{
    AsyncCall a;

    block_copy_set_speed(f->bcs, 1024);
    async_start(&a, f, 0, DISK_SIZE, BLOCK_COPY_MAX_WORKERS, 0);
    while (f->progress == 0) {
        main_loop_wait(true);
    }
    run_pending();
    g_assert_cmpint(sync_copy(f, 16 * CLUSTER, 2 * CLUSTER, NULL), ==, 0);
    assert_cluster_copied(f, 16);
    block_copy_set_speed(f->bcs, 0);
    finish_async_call(&a);
    assert_each_cluster_written_once(f);
}

/* A faster limit wakes a call sleeping off the old one. */
static void test_speed_change_kicks(Fixture *f, gconstpointer data)
{
    int64_t start = clock_now_ns();
    AsyncCall a;

    block_copy_set_speed(f->bcs, 1024);
    async_start(&a, f, 0, DISK_SIZE, BLOCK_COPY_MAX_WORKERS, 0);
    while (f->progress == 0) {
        main_loop_wait(true);
    }
    /* At 1 KiB/s the rest would take hours. */
    block_copy_set_speed(f->bcs, 0);
    finish_async_call(&a);
    g_assert_cmpint(clock_now_ns() - start, <, 30LL * 1000 * 1000 * 1000);
}

/* --- tests: creation --- */

static void test_initial_bitmap(Fixture *f, gconstpointer data)
{
    BdrvDirtyBitmap *user = bdrv_create_dirty_bitmap(f->src_bs, 4096, "b",
                                                     &error_abort);
    const HBitmap *bits;

    block_copy_state_free(f->bcs);
    bdrv_set_dirty_bitmap(user, CLUSTER + 100, 1000);
    bdrv_set_dirty_bitmap(user, 10 * CLUSTER - 4096, 8192);
    fixture_new_state(f, user, NULL);
    bits = bdrv_dirty_bitmap_bits(block_copy_dirty_bitmap(f->bcs));
    /* Rounded out to clusters. */
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==, 3 * CLUSTER);
    g_assert_true(hbitmap_get(bits, CLUSTER));
    g_assert_true(hbitmap_get(bits, 9 * CLUSTER));
    g_assert_true(hbitmap_get(bits, 10 * CLUSTER));
    g_assert_cmpint(async_copy_all(f, NULL), ==, 0);
    for (int c = 0; c < CLUSTERS; c++) {
        g_assert_cmpuint(f->tgt->writes[c], ==, c == 1 || c == 9 || c == 10);
    }
    bdrv_release_dirty_bitmap(user);
}

static BlockCopyState *state_new_err(Fixture *f, const BlockCopyOptions *o,
                                     char **msg)
{
    Error *err = NULL;
    BlockCopyState *s = block_copy_state_new(f->source, f->target, NULL, o,
                                             &err);

    *msg = err ? g_strdup(error_get_pretty(err)) : NULL;
    error_free(err);
    return s;
}

/* Reference §3.2: the cluster size and QEMU's error for an unknown one. */
static void test_cluster_size(void)
{
    BlockCopyOptions opts = { 0 };
    g_autofree char *msg = NULL;
    BlockCopyState *s;
    Fixture f;

    fixture_open_nodes(&f);

    /* No info, no backing: the default (with a warning). */
    f.tgt->info_ret = -ENOTSUP;
    s = state_new_err(&f, NULL, &msg);
    g_assert_nonnull(s);
    g_assert_cmpint(block_copy_cluster_size(s), ==, CLUSTER);
    block_copy_state_free(s);

    /* The target's cluster, if larger. */
    f.tgt->info_ret = 0;
    f.tgt->info_cluster_size = 2 * 1024 * 1024;
    s = state_new_err(&f, NULL, &msg);
    g_assert_cmpint(block_copy_cluster_size(s), ==, 2 * 1024 * 1024);
    block_copy_state_free(s);
    f.tgt->info_cluster_size = 4096;
    s = state_new_err(&f, NULL, &msg);
    g_assert_cmpint(block_copy_cluster_size(s), ==, CLUSTER);
    block_copy_state_free(s);

    /* min-cluster-size raises it. */
    opts.min_cluster_size = 256 * 1024;
    s = state_new_err(&f, &opts, &msg);
    g_assert_cmpint(block_copy_cluster_size(s), ==, 256 * 1024);
    block_copy_state_free(s);
    opts.min_cluster_size = 3000;
    g_assert_null(state_new_err(&f, &opts, &msg));
    g_assert_cmpstr(msg, ==, "min-cluster-size needs to be a power of 2");
    g_clear_pointer(&msg, g_free);
    opts.min_cluster_size = 0;

    /* Another error, no backing: refused. */
    f.tgt->info_ret = -EIO;
    g_assert_null(state_new_err(&f, NULL, &msg));
    g_assert_cmpstr(msg, ==, "Couldn't determine the cluster size of the "
                    "target image, which has no backing file: "
                    "Input/output error");
    g_clear_pointer(&msg, g_free);

    /* Compression needs a target that can write compressed clusters. */
    f.tgt->info_ret = 0;
    opts.compress = true;
    g_assert_null(state_new_err(&f, &opts, &msg));
    g_assert_cmpstr(msg, ==, "Compression is not supported for this drive "
                    "tgt");

    f.bcs = NULL;
    fixture_teardown(&f, NULL);
}

/* discard_source: every copied range is discarded on the source. */
static void test_discard_source(void)
{
    BlockCopyOptions opts = { .discard_source = true };
    Fixture f;

    fixture_open_nodes(&f);
    fixture_new_state(&f, NULL, &opts);
    g_assert_cmpint(async_copy_all(&f, NULL), ==, 0);
    g_assert_cmpuint(f.src->discards, ==, DISK_SIZE / (1024 * 1024));
    fixture_teardown(&f, NULL);
}

/*
 * The memory budget bounds the bounce buffers of all tasks: 64 workers
 * with 4 MiB tasks (the target's clusters) would read 256 MiB at once;
 * the budget lets 32 of them, and the others wait.
 */
static void test_memory_budget(void)
{
    enum {
        BIG_SIZE = 512 * 1024 * 1024,
        BIG_CLUSTER = 4 * 1024 * 1024,
        BUDGET_TASKS = BLOCK_COPY_MEMORY_BUDGET / BIG_CLUSTER,
    };
    AsyncCall a;
    Fixture f;

    fixture_open_nodes(&f);
    disk_make_big(f.src_bs, BIG_SIZE);
    disk_make_big(f.tgt_bs, BIG_SIZE);
    f.owner->total_bytes = BIG_SIZE;
    f.tgt->info_cluster_size = BIG_CLUSTER;
    f.src->hold_start = 0;
    f.src->hold_end = BIG_SIZE;
    fixture_new_state(&f, NULL, NULL);
    g_assert_cmpint(block_copy_cluster_size(f.bcs), ==, BIG_CLUSTER);

    async_start(&a, &f, 0, BIG_SIZE, BLOCK_COPY_MAX_WORKERS, 0);
    while (f.src->held_count < BUDGET_TASKS) {
        main_loop_wait(true);
    }
    run_pending();
    g_assert_cmpuint(f.src->held_count, ==, BUDGET_TASKS);
    g_assert_cmpint(f.src->reading, ==, BLOCK_COPY_MEMORY_BUDGET);

    release_source(&f);
    finish_async_call(&a);
    g_assert_cmpint(f.src->max_reading, ==, BLOCK_COPY_MEMORY_BUDGET);
    g_assert_cmpuint(f.progress, ==, BIG_SIZE);
    fixture_teardown(&f, NULL);
}

/* A source whose length is not a multiple of the cluster size. */
static void test_unaligned_end(void)
{
    const int64_t len = DISK_SIZE - 3 * 4096 - 512;
    const int64_t last = ALIGN_DOWN(len, CLUSTER);
    Fixture f;

    fixture_open_nodes(&f);
    f.src_bs->total_bytes = len;
    f.tgt_bs->total_bytes = len;
    f.owner->total_bytes = len;
    fixture_new_state(&f, NULL, NULL);

    g_assert_cmpint(sync_copy(&f, last, len - last, NULL), ==, 0);
    g_assert_cmpuint(f.progress, ==, len - last);
    g_assert_cmpuint(f.tgt->writes[last / CLUSTER], ==, 1);
    g_assert_cmpint(async_copy_all_bytes(&f, len, NULL), ==, 0);
    g_assert_cmpmem(f.tgt->data, len, f.src->data, len);
    g_assert_cmpuint(f.progress, ==, len);
    for (int c = 0; c < CLUSTERS; c++) {
        g_assert_cmpuint(f.tgt->writes[c], ==, 1);
    }
    fixture_teardown(&f, NULL);
}

/* --- tests: real drivers --- */

typedef struct OpenArgs {
    BlockdevOptions *options;
    BlockDriverState *bs;
} OpenArgs;

static void coroutine_fn open_json_entry(void *opaque)
{
    OpenArgs *args = opaque;

    args->bs = bdrv_open_blockdev(args->options, false, &error_abort);
}

/* Open a node as blockdev-add would, from JSON. */
static BlockDriverState *open_json(const char *text)
{
    json_object *obj = json_tokener_parse(text);
    OpenArgs args = { 0 };
    Visitor *v;

    g_assert_nonnull(obj);
    v = qobject_input_visitor_new(obj);
    json_object_put(obj);
    visit_type_BlockdevOptions(v, NULL, &args.options, &error_abort);
    visit_free(v);
    co_run_sync(open_json_entry, &args);
    qapi_free_BlockdevOptions(args.options);
    return args.bs;
}

/* The owner over two real nodes (no test-disk counters). */
static void fixture_open_real(Fixture *f, const char *source_json,
                              const char *target_json)
{
    *f = (Fixture) { 0 };
    co_run_sync(open_nodes_entry, f);
    bdrv_unref(f->src_bs);
    bdrv_unref(f->tgt_bs);
    f->src_bs = open_json(source_json);
    f->tgt_bs = open_json(target_json);
    f->owner->total_bytes = bdrv_getlength(f->src_bs);
    f->source = bdrv_attach_child(f->src_bs, "file", BDRV_CHILD_DATA,
                                  &child_of_bds, f->owner, f->owner, 0,
                                  BLK_PERM_ALL, &error_abort);
    f->target = bdrv_attach_child(f->tgt_bs, "target", BDRV_CHILD_DATA,
                                  &child_of_bds, f->owner, f->owner, 0,
                                  BLK_PERM_ALL, &error_abort);
    fixture_new_state(f, NULL, NULL);
}

/*
 * null-co under blkdebug: the first target write covering 1 MiB fails
 * with ENOSPC, the call reports a write error, the retry copies the
 * rest.
 */
static void test_blkdebug_target(void)
{
    Fixture f;
    bool error_is_read = true;

    fixture_open_real(&f,
                      "{\"driver\": \"null-co\", \"node-name\": \"nsrc\", "
                      "\"size\": 4194304}",
                      "{\"driver\": \"blkdebug\", \"node-name\": \"dbg\", "
                      "\"inject-error\": [{\"event\": \"pwritev\", "
                      "\"errno\": 28, \"sector\": 2048, \"once\": true}], "
                      "\"image\": {\"driver\": \"null-co\", "
                      "\"node-name\": \"ntgt\", \"size\": 4194304}}");
    g_assert_cmpint(async_copy_all(&f, &error_is_read), ==, -ENOSPC);
    g_assert_false(error_is_read);
    g_assert_cmpuint(block_copy_remaining_bytes(f.bcs), ==, 1024 * 1024);
    g_assert_cmpint(async_copy_all(&f, NULL), ==, 0);
    g_assert_cmpuint(block_copy_remaining_bytes(f.bcs), ==, 0);
    g_assert_cmpuint(f.progress, ==, DISK_SIZE);
    fixture_teardown(&f, NULL);
}

/* Files in a temporary directory: the target file ends up the source's. */
static void test_files(void)
{
    g_autofree char *dir = g_dir_make_tmp("test-block-copy-XXXXXX", NULL);
    g_autofree char *src_path = g_build_filename(dir, "src.img", NULL);
    g_autofree char *tgt_path = g_build_filename(dir, "tgt.img", NULL);
    g_autofree char *src_json = g_strdup_printf(
        "{\"driver\": \"file\", \"node-name\": \"fsrc\", "
        "\"filename\": \"%s\"}", src_path);
    g_autofree char *tgt_json = g_strdup_printf(
        "{\"driver\": \"file\", \"node-name\": \"ftgt\", "
        "\"filename\": \"%s\"}", tgt_path);
    g_autofree uint8_t *pattern = g_malloc(DISK_SIZE);
    g_autofree uint8_t *junk = g_malloc(DISK_SIZE);
    g_autofree char *copied = NULL;
    enum { HOLE = DISK_SIZE / 2 };
    int fd;
    gsize copied_len;
    Fixture f;

    g_assert_nonnull(dir);
    for (int i = 0; i < DISK_SIZE; i++) {
        pattern[i] = i % 251;
    }
    /*
     * A hole of 1 MiB in the middle: block status says zeroes there, and
     * the target gets write-zeroes over its 0xff.
     */
    memset(pattern + HOLE, 0, 1024 * 1024);
    fd = open(src_path, O_RDWR | O_CREAT | O_TRUNC, 0600);
    g_assert_cmpint(fd, >=, 0);
    g_assert_cmpint(ftruncate(fd, DISK_SIZE), ==, 0);
    g_assert_cmpint(pwrite(fd, pattern, HOLE, 0), ==, HOLE);
    g_assert_cmpint(pwrite(fd, pattern + HOLE + 1024 * 1024,
                           DISK_SIZE - HOLE - 1024 * 1024,
                           HOLE + 1024 * 1024), ==,
                    DISK_SIZE - HOLE - 1024 * 1024);
    close(fd);
    memset(junk, 0xff, DISK_SIZE);
    g_assert_true(g_file_set_contents(tgt_path, (char *)junk, DISK_SIZE,
                                      NULL));

    fixture_open_real(&f, src_json, tgt_json);
    g_assert_cmpint(sync_copy(&f, CLUSTER, 3 * CLUSTER, NULL), ==, 0);
    g_assert_cmpint(async_copy_all(&f, NULL), ==, 0);
    g_assert_cmpuint(f.progress, ==, DISK_SIZE);
    fixture_teardown(&f, NULL);

    g_assert_true(g_file_get_contents(tgt_path, &copied, &copied_len, NULL));
    g_assert_cmpmem(copied, copied_len, pattern, DISK_SIZE);
    g_assert_cmpint(unlink(src_path), ==, 0);
    g_assert_cmpint(unlink(tgt_path), ==, 0);
    g_assert_cmpint(rmdir(dir), ==, 0);
}

/* --- tests: legacy fleecing --- */

typedef struct ReaderOp {
    BlockBackend *blk;
    uint8_t buf[4096];
    int ret;
    bool done;
} ReaderOp;

static void coroutine_fn reader_entry(void *opaque)
{
    ReaderOp *r = opaque;

    r->ret = blk_co_pread(r->blk, 0, sizeof(r->buf), r->buf, 0);
    r->done = true;
}

/*
 * The target is an overlay over the source (directly, or through a
 * filter), read by an export: a copy into it waits for the overlay's
 * reads in flight (they may be reading through to the source), before
 * it even reaches the target's driver.
 */
static void test_fleecing_serialises(gconstpointer through_filter)
{
    BlockDriverState *backing = NULL;
    ReaderOp reader = { 0 };
    SyncCall c = { 0 };
    Fixture f;

    fixture_open_nodes(&f);
    backing = through_filter
              ? open_json("{\"driver\": \"blkdebug\", "
                          "\"node-name\": \"filter\", \"image\": \"src\"}")
              : f.src_bs;
    bdrv_attach_child(backing, "backing", BDRV_CHILD_COW, &child_of_bds,
                      f.tgt_bs, f.tgt_bs, 0, BLK_PERM_ALL, &error_abort);
    if (through_filter) {
        bdrv_unref(backing);    /* the backing edge holds it */
    }
    g_assert_nonnull(f.tgt_bs->backing);
    reader.blk = blk_new_with_bs(f.tgt_bs, "export", BLK_PERM_CONSISTENT_READ,
                                 BLK_PERM_ALL, &error_abort);
    fixture_new_state(&f, NULL, NULL);

    f.tgt->hold_start = 0;
    f.tgt->hold_end = CLUSTER;
    coroutine_enter(coroutine_create(reader_entry, &reader));
    g_assert_cmpuint(f.tgt->held_count, ==, 1);
    sync_call_start(&c, &f, 0, CLUSTER);
    run_pending();
    g_assert_false(c.done);
    /* Our write waits in the I/O core, not in the driver with the read. */
    g_assert_cmpuint(f.tgt->held_count, ==, 1);

    f.tgt->hold_start = f.tgt->hold_end = -1;
    co_queue_restart_all(&f.tgt->held);
    run_until(&c.done);
    g_assert_true(reader.done);
    g_assert_cmpint(reader.ret, ==, 0);
    g_assert_cmpint(reader.buf[0], ==, 0);     /* the target's old data */
    g_assert_cmpint(c.ret, ==, 0);
    assert_cluster_copied(&f, 0);
    blk_unref(reader.blk);
    fixture_teardown(&f, NULL);
}

/* --- tests: write-behind --- */

typedef struct BehindFixture {
    Fixture f;
    int failures;
    int failure_ret;
} BehindFixture;

static void failure_cb(void *opaque, int ret)
{
    BehindFixture *b = opaque;

    b->failures++;
    b->failure_ret = ret;
}

/* A state with @opts whose target writes are held until released. */
static void behind_open(BehindFixture *b, const BlockCopyOptions *opts)
{
    *b = (BehindFixture) { 0 };
    fixture_open_nodes(&b->f);
    fixture_new_state(&b->f, NULL, opts);
    block_copy_set_failure_callback(b->f.bcs, failure_cb, b);
    b->f.tgt->hold_start = 0;
    b->f.tgt->hold_end = DISK_SIZE;
}

/* Write-behind of two clusters. */
static void behind_setup(BehindFixture *b, gconstpointer data)
{
    BlockCopyOptions opts = { .write_behind_bytes = 2 * CLUSTER };

    behind_open(b, &opts);
}

static void behind_teardown(BehindFixture *b, gconstpointer data)
{
    fixture_teardown(&b->f, NULL);
}

static void release_target(Fixture *f)
{
    f->tgt->hold_start = f->tgt->hold_end = -1;
    co_queue_restart_all(&f->tgt->held);
}

typedef struct BehindWait {
    BlockCopyState *bcs;
    int64_t offset, bytes;
    bool done;
} BehindWait;

static void coroutine_fn behind_wait_entry(void *opaque)
{
    BehindWait *w = opaque;

    block_copy_wait_behind_writes(w->bcs, w->offset, w->bytes);
    w->done = true;
}

/*
 * block_copy() returns once the old data is read; the write follows.
 * Until then the bytes count as remaining, the owner as busy, and
 * readers of the target wait; nobody copies the range again.
 */
static void test_behind_returns_early(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;
    BehindWait reader = { .bcs = f->bcs, .offset = 0, .bytes = CLUSTER };
    BehindWait elsewhere = { .bcs = f->bcs, .offset = CLUSTER,
                             .bytes = CLUSTER };

    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);
    g_assert_cmpuint(f->tgt->held_count, ==, 1);
    g_assert_cmpuint(f->tgt->writes[0], ==, 0);
    g_assert_cmpuint(f->progress, ==, 0);
    g_assert_cmpuint(block_copy_remaining_bytes(f->bcs), ==, DISK_SIZE);
    g_assert_cmpuint(f->owner->in_flight, ==, 1);

    /* A second write there has nothing to copy and waits for nothing. */
    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);

    coroutine_enter(coroutine_create(behind_wait_entry, &reader));
    coroutine_enter(coroutine_create(behind_wait_entry, &elsewhere));
    g_assert_true(elsewhere.done);
    run_pending();
    g_assert_false(reader.done);

    release_target(f);
    run_until(&reader.done);
    g_assert_cmpuint(f->tgt->writes[0], ==, 1);
    assert_cluster_copied(f, 0);
    g_assert_cmpuint(f->progress, ==, CLUSTER);
    g_assert_cmpuint(f->owner->in_flight, ==, 0);
    g_assert_false(block_copy_state_failed(f->bcs));
    g_assert_cmpint(b->failures, ==, 0);
}

/* Writes behind are bounded: with the budget taken, block_copy() waits. */
static void test_behind_bounded(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;
    SyncCall third = { 0 };

    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);
    g_assert_cmpint(sync_copy(f, 5 * CLUSTER, CLUSTER, NULL), ==, 0);
    sync_call_start(&third, f, 9 * CLUSTER, CLUSTER);
    run_pending();
    g_assert_false(third.done);
    g_assert_cmpuint(f->tgt->held_count, ==, 3);

    release_target(f);
    run_until(&third.done);
    g_assert_cmpint(third.ret, ==, 0);
    /* The third write was not behind: it is done when the call returns. */
    g_assert_cmpuint(f->tgt->writes[9], ==, 1);
    assert_cluster_copied(f, 9);
    run_pending();
    assert_cluster_copied(f, 0);
    assert_cluster_copied(f, 5);
    g_assert_cmpuint(f->progress, ==, 3 * CLUSTER);
}

/*
 * A failed write behind cannot be retried: the state is failed, the
 * owner told once, and the clusters are not to be copied again (the
 * source holds new data there).
 */
static void test_behind_failure(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;
    const HBitmap *bits =
        bdrv_dirty_bitmap_bits(block_copy_dirty_bitmap(f->bcs));

    f->tgt->fail_start = 0;
    f->tgt->fail_end = 2 * CLUSTER;
    f->tgt->fail_ret = -ENOSPC;
    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);
    g_assert_cmpint(sync_copy(f, CLUSTER, CLUSTER, NULL), ==, 0);
    g_assert_false(block_copy_state_failed(f->bcs));

    release_target(f);
    run_pending();
    g_assert_true(block_copy_state_failed(f->bcs));
    g_assert_cmpint(b->failures, ==, 1);
    g_assert_cmpint(b->failure_ret, ==, -ENOSPC);
    g_assert_false(hbitmap_get(bits, 0));
    g_assert_false(hbitmap_get(bits, CLUSTER));
    g_assert_cmpuint(f->progress, ==, 0);
    g_assert_cmpuint(f->owner->in_flight, ==, 0);
}

/* The background call is done only when the writes behind are. */
static void test_behind_async_waits(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;
    AsyncCall a;

    g_assert_cmpint(sync_copy(f, 3 * CLUSTER, CLUSTER, NULL), ==, 0);
    f->tgt->hold_start = 3 * CLUSTER;
    f->tgt->hold_end = 4 * CLUSTER;
    co_queue_restart_all(&f->tgt->held);
    async_start(&a, f, 0, DISK_SIZE, BLOCK_COPY_MAX_WORKERS, 0);
    while (f->progress < DISK_SIZE - CLUSTER) {
        main_loop_wait(true);
    }
    run_pending();
    g_assert_false(a.cb_ran);
    release_target(f);
    finish_async_call(&a);
    assert_copied_exactly_once(f);
}

/* Freeing the state waits for the writes behind. */
static void test_behind_free_waits(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;

    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);
    release_target(f);
    block_copy_state_free(f->bcs);
    f->bcs = NULL;
    assert_cluster_copied(f, 0);
    g_assert_cmpuint(f->owner->in_flight, ==, 0);
}

static void coroutine_fn free_state_entry(void *opaque)
{
    Fixture *f = opaque;

    block_copy_state_free(f->bcs);
    f->bcs = NULL;
}

/*
 * ... also in a coroutine, while the owner and the target have other
 * requests in flight (a guest write through the filter, a reader of the
 * target): the end of the write behind must wake the free although no
 * in-flight count drops to zero.
 */
static void test_behind_free_in_coroutine(BehindFixture *b,
                                          gconstpointer data)
{
    Fixture *f = &b->f;

    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);
    f->owner->in_flight++;
    f->tgt_bs->in_flight++;
    coroutine_enter(coroutine_create(free_state_entry, f));
    g_assert_nonnull(f->bcs);
    release_target(f);
    run_pending();
    g_assert_null(f->bcs);
    assert_cluster_copied(f, 0);
    g_assert_cmpuint(f->owner->in_flight, ==, 1);
    f->owner->in_flight--;
    f->tgt_bs->in_flight--;
}

static void test_behind_not_with_discard(void)
{
    BlockCopyOptions opts = { .write_behind_bytes = CLUSTER,
                              .discard_source = true };
    g_autofree char *msg = NULL;
    Fixture f;

    fixture_open_nodes(&f);
    g_assert_null(state_new_err(&f, &opts, &msg));
    g_assert_cmpstr(msg, ==,
                    "Write-behind cannot be used with discard-source");
    f.bcs = NULL;
    fixture_teardown(&f, NULL);
}

/* --- tests: the write-behind spill --- */

enum {
    SPILL_UNITS = 16,
};

/*
 * The spill's extent allocator against a naive model, one flag per
 * unit: an allocation must get the start of the first free run long
 * enough (first fit), or -ENOSPC when there is none, however the
 * releases before split and merged the free space.
 */
static int64_t spill_model_first_fit(const bool *used, int units)
{
    for (int start = 0; start + units <= SPILL_UNITS; start++) {
        int n = 0;

        while (n < units && !used[start + n]) {
            n++;
        }
        if (n == units) {
            return start;
        }
    }
    return -1;
}

static void test_spill_extents(void)
{
    g_autoptr(BlockCopySpill) spill =
        block_copy_spill_new(g_get_tmp_dir(), SPILL_UNITS * CLUSTER + 5,
                             CLUSTER, &error_abort);
    bool used[SPILL_UNITS] = { false };
    int64_t start[SPILL_UNITS], units[SPILL_UNITS];
    int held = 0;

    /* Sizes round up to whole units; a partial unit of size is unused. */
    g_assert_cmpint(block_copy_spill_alloc(spill, 1), ==, 0);
    g_assert_cmpint(block_copy_spill_alloc(spill, CLUSTER), ==, CLUSTER);
    block_copy_spill_release(spill, 0, 1);
    block_copy_spill_release(spill, CLUSTER, CLUSTER);
    g_assert_cmpint(block_copy_spill_alloc(spill, (SPILL_UNITS + 1) *
                                                  CLUSTER), ==, -ENOSPC);

    for (int i = 0; i < 4000; i++) {
        if (held > 0 && (g_test_rand_int_range(0, 2) || held ==
                                                          SPILL_UNITS)) {
            int k = g_test_rand_int_range(0, held);

            for (int u = 0; u < units[k]; u++) {
                used[start[k] + u] = false;
            }
            block_copy_spill_release(spill, start[k] * CLUSTER,
                                     units[k] * CLUSTER - 7);
            start[k] = start[--held];
            units[k] = units[held];
        } else {
            int n = g_test_rand_int_range(1, 5);
            int64_t want = spill_model_first_fit(used, n);
            int64_t got = block_copy_spill_alloc(spill, n * CLUSTER);

            if (want < 0) {
                g_assert_cmpint(got, ==, -ENOSPC);
                continue;
            }
            g_assert_cmpint(got, ==, want * CLUSTER);
            for (int u = 0; u < n; u++) {
                used[want + u] = true;
            }
            start[held] = want;
            units[held++] = n;
        }
    }
    while (held > 0) {
        held--;
        block_copy_spill_release(spill, start[held] * CLUSTER,
                                 units[held] * CLUSTER);
    }
    /* Everything merged back into one extent. */
    g_assert_cmpint(block_copy_spill_alloc(spill, SPILL_UNITS * CLUSTER),
                    ==, 0);
}

/* One cluster of write-behind memory and a spill of four. */
static void spill_setup(BehindFixture *b, gconstpointer data)
{
    BlockCopyOptions opts = {
        .write_behind_bytes = CLUSTER,
        .write_behind_spill_bytes = 4 * CLUSTER,
        .write_behind_spill_dir = g_get_tmp_dir(),
    };

    behind_open(b, &opts);
}

/*
 * Past the memory, calls return once their data is in the spill; past
 * the spill too, they wait for the target.  Readers of the target wait
 * for spilled clusters as well, and every cluster gets its old data
 * exactly once.
 */
static void test_spill_returns_early(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;
    static const int clusters[] = { 0, 3, 7, 8, 12 };
    BehindWait reader = { .bcs = f->bcs, .offset = 7 * CLUSTER,
                          .bytes = CLUSTER };
    SyncCall last = { 0 };

    for (size_t i = 0; i < G_N_ELEMENTS(clusters); i++) {
        g_assert_cmpint(sync_copy(f, clusters[i] * CLUSTER, CLUSTER, NULL),
                        ==, 0);
    }
    /* One write behind from memory; the spilled ones wait for memory. */
    g_assert_cmpuint(f->tgt->held_count, ==, 1);
    g_assert_cmpuint(f->owner->in_flight, ==, 5);
    g_assert_cmpuint(f->progress, ==, 0);

    sync_call_start(&last, f, 20 * CLUSTER, CLUSTER);
    run_pending();
    g_assert_false(last.done);
    coroutine_enter(coroutine_create(behind_wait_entry, &reader));
    run_pending();
    g_assert_false(reader.done);

    release_target(f);
    run_until(&last.done);
    g_assert_cmpint(last.ret, ==, 0);
    run_until(&reader.done);
    while (f->owner->in_flight > 0) {
        main_loop_wait(true);
    }
    for (size_t i = 0; i < G_N_ELEMENTS(clusters); i++) {
        assert_cluster_copied(f, clusters[i]);
        g_assert_cmpuint(f->tgt->writes[clusters[i]], ==, 1);
    }
    assert_cluster_copied(f, 20);
    g_assert_cmpuint(f->progress, ==, 6 * CLUSTER);
    g_assert_false(block_copy_state_failed(f->bcs));
}

/*
 * A task larger than the memory spills whole and goes to the target a
 * memory-sized piece at a time; the space comes back for the next one.
 */
static void test_spill_large_task(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;

    for (int round = 0; round < 2; round++) {
        int64_t offset = round * 8 * CLUSTER;

        g_assert_cmpint(sync_copy(f, offset, 4 * CLUSTER, NULL), ==, 0);
        g_assert_cmpuint(f->tgt->held_count, ==, 1);
        release_target(f);
        while (f->owner->in_flight > 0) {
            main_loop_wait(true);
        }
        for (int c = offset / CLUSTER; c < offset / CLUSTER + 4; c++) {
            assert_cluster_copied(f, c);
            g_assert_cmpuint(f->tgt->writes[c], ==, 1);
        }
        f->tgt->hold_start = 0;
        f->tgt->hold_end = DISK_SIZE;
    }
    g_assert_cmpuint(f->progress, ==, 8 * CLUSTER);
}

/*
 * A spill that cannot be written loses nothing: the call waits for the
 * target write, as without a spill.  (No file may grow: the write fails
 * with EFBIG.)
 */
static void test_spill_write_fails(BehindFixture *b, gconstpointer data)
{
    Fixture *f = &b->f;
    struct rlimit old, none = { 0 };
    SyncCall second = { 0 };

    g_assert_cmpint(sync_copy(f, 0, CLUSTER, NULL), ==, 0);
    g_assert_cmpint(getrlimit(RLIMIT_FSIZE, &old), ==, 0);
    none.rlim_max = old.rlim_max;
    signal(SIGXFSZ, SIG_IGN);
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &none), ==, 0);
    sync_call_start(&second, f, 5 * CLUSTER, CLUSTER);
    /* The spill write failed once the task is at the target. */
    while (f->tgt->held_count < 2) {
        main_loop_wait(true);
    }
    g_assert_cmpint(setrlimit(RLIMIT_FSIZE, &old), ==, 0);
    run_pending();
    g_assert_false(second.done);

    release_target(f);
    run_until(&second.done);
    g_assert_cmpint(second.ret, ==, 0);
    g_assert_cmpuint(f->tgt->writes[5], ==, 1);
    assert_cluster_copied(f, 5);
    while (f->owner->in_flight > 0) {
        main_loop_wait(true);
    }
    assert_cluster_copied(f, 0);
    g_assert_false(block_copy_state_failed(f->bcs));
}

/* The spill's own checks, and a directory it cannot use. */
static void test_spill_options(void)
{
    static const struct {
        BlockCopyOptions opts;
        const char *msg;
    } cases[] = {
        { { .write_behind_bytes = CLUSTER,
            .write_behind_spill_bytes = CLUSTER - 1 },
          "The write-behind spill size (65535 bytes) is less than a "
          "cluster (65536 bytes)" },
        { { .write_behind_bytes = CLUSTER - 1,
            .write_behind_spill_bytes = CLUSTER },
          "A write-behind spill needs a write-behind buffer of at least "
          "a cluster (65536 bytes)" },
        { { .write_behind_spill_bytes = CLUSTER },
          "A write-behind spill needs a write-behind buffer of at least "
          "a cluster (65536 bytes)" },
        { { .write_behind_bytes = CLUSTER,
            .write_behind_spill_bytes = (uint64_t)INT64_MAX + 1 },
          "write-behind-spill-bytes is too large" },
        { { .write_behind_bytes = CLUSTER,
            .write_behind_spill_bytes = CLUSTER,
            .write_behind_spill_dir = "/nonexistent/spill" },
          "Could not create a write-behind spill file in "
          "'/nonexistent/spill': No such file or directory" },
    };
    Fixture f;

    fixture_open_nodes(&f);
    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        g_autofree char *msg = NULL;

        g_assert_null(state_new_err(&f, &cases[i].opts, &msg));
        g_assert_cmpstr(msg, ==, cases[i].msg);
    }
    f.bcs = NULL;
    fixture_teardown(&f, NULL);
}

/* --- measurements (-m perf) --- */

/*
 * The latency of block_copy() -- what a guest write through
 * copy-before-write waits for -- with a target that takes 4 ms per
 * write, without and with write-behind (1 MiB of buffers): one cluster
 * per call, 64 calls, either spaced out (a guest writing now and then)
 * or back to back (a burst larger than the buffers).
 */
static double perf_mean_latency_ms(uint64_t behind_bytes, int gap_ms)
{
    BlockCopyOptions opts = { .write_behind_bytes = behind_bytes };
    int64_t total_ns = 0;
    Fixture f;

    fixture_open_nodes(&f);
    fixture_new_state(&f, NULL, &opts);
    f.tgt->latency_ms = 4;
    for (int c = 0; c < CLUSTERS; c++) {
        int64_t start = clock_now_ns();

        g_assert_cmpint(sync_copy(&f, c * CLUSTER, CLUSTER, NULL), ==, 0);
        total_ns += clock_now_ns() - start;
        if (gap_ms) {
            g_usleep(gap_ms * 1000);
        }
    }
    block_copy_state_free(f.bcs);       /* waits for writes behind */
    f.bcs = NULL;
    g_assert_cmpmem(f.tgt->data, DISK_SIZE, f.src->data, DISK_SIZE);
    fixture_teardown(&f, NULL);
    return total_ns / 1e6 / CLUSTERS;
}

static void test_perf_write_behind(void)
{
    static const struct {
        const char *name;
        int gap_ms;
    } loads[] = {
        { "spaced (10 ms apart)", 10 },
        { "burst", 0 },
    };

    for (size_t i = 0; i < G_N_ELEMENTS(loads); i++) {
        double off = perf_mean_latency_ms(0, loads[i].gap_ms);
        double on = perf_mean_latency_ms(1024 * 1024, loads[i].gap_ms);

        g_test_minimized_result(on, "%s: block_copy() mean latency "
                                "%.3f ms without write-behind, %.3f ms "
                                "with", loads[i].name, off, on);
    }
}

/* --- reqlist --- */

typedef struct Waiter {
    BlockReqList *list;
    int64_t offset, bytes;
    bool all;
    bool done;
} Waiter;

static void coroutine_fn waiter_entry(void *opaque)
{
    Waiter *w = opaque;

    if (w->all) {
        reqlist_wait_all(w->list, w->offset, w->bytes);
    } else {
        g_assert_true(reqlist_wait_one(w->list, w->offset, w->bytes));
    }
    w->done = true;
}

static void test_reqlist(void)
{
    BlockReqList list;
    BlockReq a, b;
    Waiter one = { &list, 150, 10, false };
    Waiter all = { &list, 0, 1000, true };
    Waiter shrink = { &list, 180, 10, true };

    reqlist_init(&list);
    g_assert_true(reqlist_is_empty(&list));
    reqlist_add(&list, &a, 100, 100);
    reqlist_add(&list, &b, 300, 100);
    g_assert_false(reqlist_is_empty(&list));
    g_assert_true(reqlist_find_conflict(&list, 0, 100) == NULL);
    g_assert_true(reqlist_find_conflict(&list, 0, 101) == &a);
    g_assert_true(reqlist_find_conflict(&list, 199, 200) == &a);
    g_assert_true(reqlist_find_conflict(&list, 200, 100) == NULL);
    g_assert_true(reqlist_find_conflict(&list, 250, 100) == &b);

    coroutine_enter(coroutine_create(waiter_entry, &one));
    coroutine_enter(coroutine_create(waiter_entry, &all));
    coroutine_enter(coroutine_create(waiter_entry, &shrink));
    run_pending();
    g_assert_false(one.done || all.done || shrink.done);

    /* Shrinking a below 180 releases the waiter for [180, 190) only. */
    reqlist_shrink(&a, 70);
    run_pending();
    g_assert_true(shrink.done);
    g_assert_true(one.done);    /* woken to look again, as documented */
    g_assert_false(all.done);

    reqlist_remove(&list, &a);
    run_pending();
    g_assert_false(all.done);   /* b still overlaps */
    reqlist_remove(&list, &b);
    run_pending();
    g_assert_true(all.done);
    g_assert_true(reqlist_is_empty(&list));
}

#define ADD_BEHIND_TEST(path, fn) \
    g_test_add("/block-copy/behind/" path, BehindFixture, NULL, \
               behind_setup, fn, behind_teardown)
#define ADD_SPILL_TEST(path, fn) \
    g_test_add("/block-copy/spill/" path, BehindFixture, NULL, \
               spill_setup, fn, behind_teardown)
#define ADD_TEST(path, fn) \
    g_test_add("/block-copy/" path, Fixture, NULL, fixture_setup, fn, \
               fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bdrv_register(&bdrv_test_disk);
    bdrv_register(&bdrv_test_owner);
    g_test_add_func("/reqlist/wait-shrink-remove", test_reqlist);
    ADD_TEST("copy/full", test_full_copy);
    ADD_TEST("copy/bitmap-disabled", test_bitmap_disabled);
    ADD_TEST("copy/chunk-and-workers", test_chunk_and_workers);
    ADD_TEST("copy/zeroes", test_zeroes);
    ADD_TEST("copy/skip-unallocated", test_skip_unallocated);
    ADD_TEST("copy/reset-unallocated", test_reset_unallocated);
    ADD_TEST("copy/initial-bitmap", test_initial_bitmap);
    ADD_TEST("fail/write", test_write_failure);
    ADD_TEST("fail/read", test_read_failure);
    ADD_TEST("wait/only-overlap", test_sync_waits_only_on_overlap);
    ADD_TEST("wait/failed-peer", test_sync_after_failed_peer);
    ADD_TEST("wait/exactly-once-random", test_exactly_once_random);
    ADD_TEST("wait/timeout", test_sync_timeout);
    ADD_TEST("wait/within-timeout", test_sync_within_timeout);
    ADD_TEST("async/cancel", test_cancel);
    ADD_TEST("async/ratelimit", test_ratelimit);
    ADD_TEST("async/speed-change-kicks", test_speed_change_kicks);
    ADD_TEST("async/limit-holds-nothing", test_limit_holds_nothing);
    ADD_BEHIND_TEST("returns-early", test_behind_returns_early);
    ADD_BEHIND_TEST("bounded", test_behind_bounded);
    ADD_BEHIND_TEST("failure", test_behind_failure);
    ADD_BEHIND_TEST("async-waits", test_behind_async_waits);
    ADD_BEHIND_TEST("free-waits", test_behind_free_waits);
    ADD_BEHIND_TEST("free-in-coroutine", test_behind_free_in_coroutine);
    g_test_add_func("/block-copy/behind/not-with-discard-source",
                    test_behind_not_with_discard);
    g_test_add_func("/block-copy/spill/extents", test_spill_extents);
    ADD_SPILL_TEST("returns-early", test_spill_returns_early);
    ADD_SPILL_TEST("large-task", test_spill_large_task);
    ADD_SPILL_TEST("write-fails", test_spill_write_fails);
    g_test_add_func("/block-copy/spill/options", test_spill_options);
    g_test_add_func("/block-copy/copy/memory-budget", test_memory_budget);
    g_test_add_func("/block-copy/copy/unaligned-end", test_unaligned_end);
    g_test_add_func("/block-copy/real/blkdebug-target",
                    test_blkdebug_target);
    g_test_add_func("/block-copy/real/files", test_files);
    g_test_add_data_func("/block-copy/fleecing/serialises", NULL,
                         test_fleecing_serialises);
    g_test_add_data_func("/block-copy/fleecing/serialises-through-filter",
                         "", test_fleecing_serialises);
    g_test_add_func("/block-copy/create/cluster-size", test_cluster_size);
    if (g_test_perf()) {
        g_test_add_func("/block-copy/perf/write-behind-latency",
                        test_perf_write_behind);
    }
    g_test_add_func("/block-copy/create/discard-source",
                    test_discard_source);
    return g_test_run();
}
