/*
 * bdrv_cbw_append() and bdrv_cbw_drop(): the copy-before-write filter as
 * the backup job inserts it above a source that a user writes through.
 *
 * The source and the target are nodes of a tiny in-memory driver; the
 * source's user is a BlockBackend.  After the append, the user's writes
 * must go through the filter (its old data lands on the target, cluster
 * by cluster, as the copy set says); after the drop, the user is back on
 * the source and the filter is gone.  A refused append leaves the graph
 * as it was.  A read of the source the test holds in the driver shows
 * that a guest write waits for a snapshot read of the old data.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/block-backend.h"
#include "block/copy-before-write.h"
#include "block/dirty-bitmap.h"
#include "util/main-loop.h"

enum {
    CLUSTER = 64 * 1024,
    NCLUSTERS = 16,
    DISK_SIZE = NCLUSTERS * CLUSTER,
};

typedef struct MemState {
    uint8_t *data;
    /* The next read waits in @held until the test lets it go on. */
    bool hold_next_read;
    CoQueue held;
} MemState;

static int coroutine_fn mem_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    MemState *s = bs->opaque;

    s->data = g_malloc0(DISK_SIZE);
    co_queue_init(&s->held);
    bs->total_bytes = DISK_SIZE;
    return 0;
}

static void mem_close(BlockDriverState *bs)
{
    MemState *s = bs->opaque;

    g_free(s->data);
}

static int coroutine_fn mem_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    if (s->hold_next_read) {
        s->hold_next_read = false;
        co_queue_wait(&s->held);
    }
    /* The data as it is when the read is let go. */
    iovector_from_buf(qiov, 0, s->data + offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    iovector_to_buf(qiov, 0, s->data + offset, bytes);
    return 0;
}

static const BlockDriver bdrv_test_mem = {
    .format_name = "test-mem",
    .instance_size = sizeof(MemState),
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_preadv = mem_co_preadv,
    .bdrv_co_pwritev = mem_co_pwritev,
};

/* Cluster c of the source holds the byte c + 1 at first. */
static uint8_t old_byte(int cluster)
{
    return cluster + 1;
}

typedef struct Fixture {
    BlockDriverState *src;
    BlockDriverState *tgt;
    BlockBackend *user;         /* the "guest" writing the source */
} Fixture;

static void coroutine_fn open_entry(void *opaque)
{
    Fixture *f = opaque;

    f->src = bdrv_new_open_driver(&bdrv_test_mem, "src", false,
                                  &error_abort);
    f->tgt = bdrv_new_open_driver(&bdrv_test_mem, "tgt", false,
                                  &error_abort);
}

static void fixture_setup(Fixture *f, gconstpointer data)
{
    MemState *src;

    co_run_sync(open_entry, f);
    src = f->src->opaque;
    for (int c = 0; c < NCLUSTERS; c++) {
        memset(src->data + c * CLUSTER, old_byte(c), CLUSTER);
    }
    f->user = blk_new_with_bs(f->src, "user", BLK_PERM_CONSISTENT_READ |
                              BLK_PERM_WRITE, BLK_PERM_ALL, &error_abort);
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    blk_unref(f->user);
    bdrv_unref(f->tgt);
    bdrv_unref(f->src);
}

typedef struct WriteOp {
    BlockBackend *blk;
    int64_t offset;
    int64_t bytes;
    int ret;
} WriteOp;

static void coroutine_fn write_entry(void *opaque)
{
    WriteOp *op = opaque;
    g_autofree uint8_t *buf = g_malloc(op->bytes);

    memset(buf, 0xee, op->bytes);
    op->ret = blk_co_pwrite(op->blk, op->offset, op->bytes, buf, 0);
}

static void user_write(Fixture *f, int64_t offset, int64_t bytes)
{
    WriteOp op = { f->user, offset, bytes, -EINPROGRESS };

    co_run_sync(write_entry, &op);
    g_assert_cmpint(op.ret, ==, 0);
}

/* The target holds the old data of the clusters in @copied, else zeroes. */
static void assert_target(Fixture *f, const bool *copied)
{
    MemState *tgt = f->tgt->opaque;

    for (int c = 0; c < NCLUSTERS; c++) {
        uint8_t want = copied[c] ? old_byte(c) : 0;

        for (int i = 0; i < CLUSTER; i++) {
            if (tgt->data[c * CLUSTER + i] != want) {
                g_error("target cluster %d byte %d: 0x%x, expected 0x%x",
                        c, i, tgt->data[c * CLUSTER + i], want);
            }
        }
    }
}

static void test_append_copies_then_drop(Fixture *f, gconstpointer data)
{
    BdrvCbwOptions opts = { .filter_node_name = "backup-top" };
    bool copied[NCLUSTERS] = { false };
    BlockCopyState *bcs = NULL;
    BlockDriverState *filter;

    filter = bdrv_cbw_append(f->src, f->tgt, &opts, &bcs, &error_abort);
    g_assert_nonnull(filter);
    g_assert_nonnull(bcs);
    g_assert_true(bdrv_find_node("backup-top") == filter);
    g_assert_true(blk_bs(f->user) == filter);
    g_assert_true(bdrv_filtered_bs(filter) == f->src);
    g_assert_cmpint(block_copy_cluster_size(bcs), ==, CLUSTER);

    user_write(f, 3 * CLUSTER + 100, 10);
    user_write(f, 7 * CLUSTER - 1, 2);
    copied[3] = copied[6] = copied[7] = true;
    assert_target(f, copied);
    /* Copied once: a second write leaves the old data alone. */
    user_write(f, 3 * CLUSTER, CLUSTER);
    assert_target(f, copied);
    g_assert_false(bdrv_cbw_snapshot_broken(filter));

    bdrv_cbw_drop(filter);
    g_assert_true(blk_bs(f->user) == f->src);
    g_assert_null(bdrv_find_node("backup-top"));
    /* Without the filter, writes copy nothing. */
    user_write(f, 9 * CLUSTER, 1);
    assert_target(f, copied);
}

static void test_append_with_bitmap(Fixture *f, gconstpointer data)
{
    BdrvDirtyBitmap *bitmap = bdrv_create_dirty_bitmap(f->src, CLUSTER,
                                                       NULL, &error_abort);
    BdrvCbwOptions opts = { .bitmap = bitmap };
    bool copied[NCLUSTERS] = { false };
    BlockCopyState *bcs = NULL;
    BlockDriverState *filter;

    bdrv_disable_dirty_bitmap(bitmap);
    bdrv_set_dirty_bitmap(bitmap, 5 * CLUSTER, 1);
    filter = bdrv_cbw_append(f->src, f->tgt, &opts, &bcs, &error_abort);
    /* A generated node name. */
    g_assert_cmpint(bdrv_get_node_name(filter)[0], ==, '#');
    g_assert_cmpuint(block_copy_remaining_bytes(bcs), ==, CLUSTER);

    user_write(f, 4 * CLUSTER, 2 * CLUSTER);
    copied[5] = true;
    assert_target(f, copied);
    g_assert_cmpuint(block_copy_remaining_bytes(bcs), ==, 0);

    bdrv_cbw_drop(filter);
    bdrv_release_dirty_bitmap(bitmap);
}

/* A target that another user holds without sharing writes is refused. */
static void test_append_refused(Fixture *f, gconstpointer data)
{
    BdrvCbwOptions opts = { .filter_node_name = "backup-top" };
    BlockBackend *reader = blk_new_with_bs(f->tgt, "NBD export 'r'",
                                           BLK_PERM_CONSISTENT_READ,
                                           BLK_PERM_CONSISTENT_READ,
                                           &error_abort);
    BlockCopyState *bcs = NULL;
    Error *err = NULL;

    g_assert_null(bdrv_cbw_append(f->src, f->tgt, &opts, &bcs, &err));
    g_assert_nonnull(err);
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Conflicts with use by NBD export 'r' as 'root', which "
                    "does not allow 'write' on tgt");
    g_clear_pointer(&err, error_free);
    g_assert_null(bcs);
    g_assert_null(bdrv_find_node("backup-top"));
    g_assert_true(blk_bs(f->user) == f->src);
    blk_unref(reader);

    /* A node name in use is refused too, before anything changes. */
    opts.filter_node_name = "src";
    g_assert_null(bdrv_cbw_append(f->src, f->tgt, &opts, &bcs, &err));
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Duplicate nodes with node-name='src'");
    g_clear_pointer(&err, error_free);
    g_assert_true(blk_bs(f->user) == f->src);
}

typedef struct SnapshotReadOp {
    BlockDriverState *filter;
    int64_t offset;
    uint8_t buf[4096];
    int ret;
    bool done;
} SnapshotReadOp;

static void coroutine_fn snapshot_read_entry(void *opaque)
{
    SnapshotReadOp *op = opaque;
    IOVector qiov;

    iovector_init_buf(&qiov, op->buf, sizeof(op->buf));
    op->ret = bdrv_cbw_snapshot_preadv(op->filter, op->offset,
                                       sizeof(op->buf), &qiov);
    iovector_destroy(&qiov);
    op->done = true;
}

typedef struct AsyncWrite {
    WriteOp op;
    bool done;
} AsyncWrite;

static void coroutine_fn async_write_entry(void *opaque)
{
    AsyncWrite *w = opaque;

    write_entry(&w->op);
    w->done = true;
}

static void run_main_loop(unsigned iterations)
{
    while (iterations--) {
        main_loop_wait(false);
    }
}

/*
 * A snapshot read of the old data on the source is in flight (held in
 * the source's driver): a guest write of the same cluster copies the
 * old data, and then waits for the read before it writes the source.
 */
static void test_guest_write_waits_for_snapshot_read(Fixture *f,
                                                     gconstpointer data)
{
    BdrvCbwOptions opts = { 0 };
    MemState *src = f->src->opaque;
    MemState *tgt = f->tgt->opaque;
    BlockCopyState *bcs = NULL;
    SnapshotReadOp read = { .offset = 3 * CLUSTER + 4096 };
    AsyncWrite write = { .op = { f->user, 3 * CLUSTER, 512, -EINPROGRESS } };
    BlockDriverState *filter;
    unsigned i;

    filter = bdrv_cbw_append(f->src, f->tgt, &opts, &bcs, &error_abort);
    read.filter = filter;
    src->hold_next_read = true;
    coroutine_enter(coroutine_create(snapshot_read_entry, &read));
    g_assert_false(read.done);
    coroutine_enter(coroutine_create(async_write_entry, &write));

    /* The copy goes through; the write of the source does not. */
    for (i = 0; i < 1000 && tgt->data[3 * CLUSTER] != old_byte(3); i++) {
        run_main_loop(1);
    }
    g_assert_cmpint(tgt->data[3 * CLUSTER], ==, old_byte(3));
    run_main_loop(100);
    g_assert_false(write.done);
    g_assert_cmpint(src->data[3 * CLUSTER], ==, old_byte(3));

    co_queue_restart_all(&src->held);
    for (i = 0; i < 1000 && !(read.done && write.done); i++) {
        run_main_loop(1);
    }
    g_assert_true(read.done && write.done);
    g_assert_cmpint(read.ret, ==, 0);
    g_assert_cmpint(write.op.ret, ==, 0);
    for (i = 0; i < sizeof(read.buf); i++) {
        g_assert_cmpint(read.buf[i], ==, old_byte(3));
    }
    g_assert_cmpint(src->data[3 * CLUSTER], ==, 0xee);
    bdrv_cbw_drop(filter);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add("/cbw/append/copies-then-drop", Fixture, NULL, fixture_setup,
               test_append_copies_then_drop, fixture_teardown);
    g_test_add("/cbw/append/bitmap", Fixture, NULL, fixture_setup,
               test_append_with_bitmap, fixture_teardown);
    g_test_add("/cbw/append/refused", Fixture, NULL, fixture_setup,
               test_append_refused, fixture_teardown);
    g_test_add("/cbw/snapshot/write-waits-for-read", Fixture, NULL,
               fixture_setup, test_guest_write_waits_for_snapshot_read,
               fixture_teardown);
    return g_test_run();
}
