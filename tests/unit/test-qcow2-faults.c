/*
 * qcow2 under faults that real runs hit only rarely, made deterministic:
 * a crash at an exact point, and a file that cannot grow (ENOSPC).
 *
 * The image lives on a tiny in-test memory driver that can take a "crash
 * image": a copy of its contents at the moment a chosen write lands, as a
 * SIGKILL right after that write would leave the file (every completed
 * write is in the page cache, nothing later is).  The crash image is then
 * opened as qcow2 again and its guest data checked.  The driver can also
 * refuse writes past a size limit with -ENOSPC, as a full file system
 * does.
 *
 * /qcow2/crash/freed-cluster-reuse: a cluster freed by write-zeroes (or
 * discard) must not receive another guest offset's data before the L2
 * update that unlinked it is on disk.  The allocating write that reuses
 * it writes its data first and links it afterwards, so a crash in
 * between would show that data at the old guest offset.
 *
 * /qcow2/crash/freed-cluster-release: deferred frees are released by a
 * flush, and without flushes once enough of them are pending, so that
 * the image does not grow meanwhile.
 *
 * /qcow2/enospc/...: an allocating write that fails because the new L2
 * table or refcount block cannot be written leaves nothing behind: later
 * flushes succeed, and the clusters it allocated are free again.
 *
 * /qcow2/cow/one-vector: the memory driver also counts the bytes it
 * writes straight from a buffer the test names, so the shape of an
 * allocating write shows: the copy-on-write head, the guest's own memory
 * and the tail in one vectored write.
 */
#undef NDEBUG
#include "block/qcow2/qcow2.h"
#include "block/block-backend.h"
#include "qapi/qapi-types.h"

enum {
    CLUSTER = 512,
    GUEST_SIZE = 1024 * 1024,
    OLD_BYTE = 0xaa,            /* guest data at offset 0 */
    NEW_BYTE = 0xbb,            /* guest data written at another offset */
    OTHER_OFFSET = 16 * CLUSTER,    /* in the same L2 table as offset 0 */
};

/* --- the memory driver --- */

/*
 * Contents of the next memory node opened, and the crash image taken
 * when a write whose first byte is crash_trigger lands.  One test at a
 * time, so globals are enough.
 */
static GByteArray *next_contents;
static int crash_trigger = -1;
static GByteArray *crash_image;
static int64_t size_limit = INT64_MAX;
/* Bytes the driver wrote straight from [watch_start, watch_end). */
static const uint8_t *watch_start, *watch_end;
static size_t watched_bytes;

typedef struct MemState {
    GByteArray *data;
} MemState;

static int coroutine_fn mem_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    MemState *s = bs->opaque;

    s->data = next_contents ? g_steal_pointer(&next_contents)
                            : g_byte_array_new();
    bs->total_bytes = s->data->len;
    return 0;
}

static void mem_close(BlockDriverState *bs)
{
    MemState *s = bs->opaque;

    g_byte_array_unref(s->data);
}

static int coroutine_fn mem_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    g_assert(offset + bytes <= s->data->len);
    iovector_from_buf(qiov, 0, s->data->data + offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    if (offset + bytes > size_limit) {
        return -ENOSPC;
    }
    if (offset + bytes > s->data->len) {
        guint old = s->data->len;

        g_byte_array_set_size(s->data, offset + bytes);
        memset(s->data->data + old, 0, s->data->len - old);
    }
    iovector_to_buf(qiov, 0, s->data->data + offset, bytes);
    for (int i = 0; i < qiov->niov; i++) {
        const uint8_t *base = qiov->iov[i].iov_base;

        if (base >= watch_start && base < watch_end) {
            watched_bytes += qiov->iov[i].iov_len;
        }
    }
    if (!crash_image && bytes && s->data->data[offset] == crash_trigger) {
        crash_image = g_byte_array_sized_new(s->data->len);
        g_byte_array_append(crash_image, s->data->data, s->data->len);
    }
    return 0;
}

static int coroutine_fn mem_co_pdiscard(BlockDriverState *bs, int64_t offset,
                                        int64_t bytes)
{
    return 0;
}

static int coroutine_fn mem_co_flush(BlockDriverState *bs)
{
    return 0;
}

static const BlockDriver bdrv_test_mem = {
    .format_name = "test-mem",
    .instance_size = sizeof(MemState),
    .has_variable_length = true,
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_preadv = mem_co_preadv,
    .bdrv_co_pwritev = mem_co_pwritev,
    .bdrv_co_pdiscard = mem_co_pdiscard,
    .bdrv_co_flush = mem_co_flush,
};

/* --- qcow2 on top of it --- */

typedef struct Image {
    BlockDriverState *mem;
    BlockDriverState *qcow2;
    BlockBackend *blk;
} Image;

static BlockdevRef *node_ref(const char *node_name)
{
    BlockdevRef *ref = g_new0(BlockdevRef, 1);

    ref->type = QTYPE_QSTRING;
    ref->u.reference = g_strdup(node_name);
    return ref;
}

static void coroutine_fn create_qcow2(int64_t cluster_size, int64_t size)
{
    g_autoptr(BlockdevCreateOptions) opts = g_new0(BlockdevCreateOptions, 1);

    opts->driver = BLOCKDEV_DRIVER_QCOW2;
    opts->u.qcow2.file = node_ref("mem");
    opts->u.qcow2.size = size;
    opts->u.qcow2.has_cluster_size = true;
    opts->u.qcow2.cluster_size = cluster_size;
    g_assert_cmpint(qcow2_co_create(opts, &error_abort), ==, 0);
}

/*
 * Open a memory node with @contents (NULL: empty, then create a qcow2
 * image of @cluster_size and @size on it) and a qcow2 node over it.
 */
static void coroutine_fn image_open(Image *img, GByteArray *contents,
                                    int64_t cluster_size, int64_t size)
{
    g_autoptr(BlockdevOptions) opts = g_new0(BlockdevOptions, 1);

    next_contents = contents;
    img->mem = bdrv_new_open_driver(&bdrv_test_mem, "mem", true,
                                    &error_abort);
    if (!contents) {
        create_qcow2(cluster_size, size);
    }
    opts->driver = BLOCKDEV_DRIVER_QCOW2;
    opts->node_name = g_strdup("qcow2");
    opts->has_discard = true;
    opts->discard = BLOCKDEV_DISCARD_OPTIONS_UNMAP;
    opts->u.qcow2.file = node_ref("mem");
    img->qcow2 = bdrv_open_blockdev(opts, false, &error_abort);
    img->blk = blk_new_with_bs(img->qcow2, "test",
                               BLK_PERM_CONSISTENT_READ | BLK_PERM_WRITE,
                               BLK_PERM_ALL, &error_abort);
}

static void image_close(Image *img)
{
    blk_unref(img->blk);
    bdrv_unref(img->qcow2);
    bdrv_unref(img->mem);
}

static int64_t file_length(Image *img)
{
    return bdrv_getlength(img->mem);
}

static void coroutine_fn fill(Image *img, int64_t offset, int64_t bytes,
                              int byte)
{
    g_autofree uint8_t *buf = g_malloc(bytes);

    memset(buf, byte, bytes);
    g_assert_cmpint(blk_co_pwrite(img->blk, offset, bytes, buf, 0), ==, 0);
}

/* --- tests --- */

static void coroutine_fn reuse_entry(void *opaque)
{
    bool discard = GPOINTER_TO_INT(opaque);
    Image img, crashed;
    uint8_t buf[CLUSTER];

    image_open(&img, NULL, CLUSTER, GUEST_SIZE);
    fill(&img, 0, CLUSTER, OLD_BYTE);
    g_assert_cmpint(blk_co_flush(img.blk), ==, 0);

    /* Free the cluster of guest offset 0; no flush. */
    if (discard) {
        g_assert_cmpint(blk_co_pdiscard(img.blk, 0, CLUSTER), ==, 0);
    } else {
        g_assert_cmpint(blk_co_pwrite_zeroes(img.blk, 0, CLUSTER,
                                             BDRV_REQ_MAY_UNMAP), ==, 0);
    }
    /* Allocate a cluster for another offset; crash when its data lands. */
    crash_trigger = NEW_BYTE;
    fill(&img, OTHER_OFFSET, CLUSTER, NEW_BYTE);
    crash_trigger = -1;
    image_close(&img);
    g_assert_nonnull(crash_image);

    image_open(&crashed, g_steal_pointer(&crash_image), 0, 0);
    g_assert_cmpint(blk_co_pread(crashed.blk, 0, CLUSTER, buf, 0), ==, 0);
    /* Old data or zeroes; never the data of OTHER_OFFSET. */
    g_assert_cmpint(buf[0], !=, NEW_BYTE);
    for (int i = 1; i < CLUSTER; i++) {
        g_assert_cmpint(buf[i], ==, buf[0]);
    }
    image_close(&crashed);
}

static void test_reuse_after_zero(void)
{
    co_run_sync(reuse_entry, GINT_TO_POINTER(false));
}

static void test_reuse_after_discard(void)
{
    co_run_sync(reuse_entry, GINT_TO_POINTER(true));
}

static void coroutine_fn release_on_flush_entry(void *opaque)
{
    Image img;
    int64_t len;

    image_open(&img, NULL, CLUSTER, GUEST_SIZE);
    fill(&img, 0, 4 * CLUSTER, OLD_BYTE);
    g_assert_cmpint(blk_co_pdiscard(img.blk, 0, 4 * CLUSTER), ==, 0);
    g_assert_cmpint(blk_co_flush(img.blk), ==, 0);
    /* The flush released the four clusters: they are reused. */
    len = file_length(&img);
    fill(&img, OTHER_OFFSET, 4 * CLUSTER, NEW_BYTE);
    g_assert_cmpint(file_length(&img), ==, len);
    image_close(&img);
}

static void test_release_on_flush(void)
{
    co_run_sync(release_on_flush_entry, NULL);
}

static void coroutine_fn release_when_large_entry(void *opaque)
{
    int64_t cluster = 64 * 1024;
    int64_t freed = QCOW2_DEFERRED_FREE_MAX_BYTES + 16 * cluster;
    int64_t guest = 2 * freed;
    Image img;
    int64_t len;

    image_open(&img, NULL, cluster, guest);
    fill(&img, 0, freed, OLD_BYTE);
    g_assert_cmpint(blk_co_flush(img.blk), ==, 0);
    g_assert_cmpint(blk_co_pdiscard(img.blk, 0, freed), ==, 0);
    /* No flush: the pending frees crossed the limit and were released. */
    len = file_length(&img);
    fill(&img, freed, QCOW2_DEFERRED_FREE_MAX_BYTES / 2, NEW_BYTE);
    g_assert_cmpint(file_length(&img), ==, len);
    image_close(&img);
}

static void test_release_when_large(void)
{
    co_run_sync(release_when_large_entry, NULL);
}

/* --- ENOSPC --- */

/* Refcount of cluster @c of the image (lock not needed: no other I/O). */
static uint64_t coroutine_fn refcount_of(Image *img, int64_t c)
{
    uint64_t refcount;

    g_assert_cmpint(qcow2_get_refcount(img->qcow2, c, &refcount), ==, 0);
    return refcount;
}

/*
 * Write guest cluster after guest cluster until one fails for lack of
 * space (the file may not grow past @limit bytes); then flush, reopen
 * with room to spare and check that what the failed write allocated is
 * free again.
 */
static void coroutine_fn fill_until_full(int64_t limit)
{
    g_autofree uint8_t *buf = g_malloc(CLUSTER);
    GByteArray *contents;
    Image img;
    int64_t offset = 0, first_new;
    int ret;

    image_open(&img, NULL, CLUSTER, GUEST_SIZE);
    size_limit = limit;
    memset(buf, OLD_BYTE, CLUSTER);
    do {
        first_new = DIV_ROUND_UP(file_length(&img), CLUSTER);
        ret = blk_co_pwrite(img.blk, offset, CLUSTER, buf, 0);
        offset += CLUSTER;
    } while (ret == 0 && offset < GUEST_SIZE);
    g_assert_cmpint(ret, ==, -ENOSPC);

    /* Nothing half-allocated is left to fail the flush. */
    g_assert_cmpint(blk_co_flush(img.blk), ==, 0);
    size_limit = INT64_MAX;
    contents = g_byte_array_new();
    g_byte_array_append(contents, ((MemState *)img.mem->opaque)->data->data,
                        file_length(&img));
    image_close(&img);

    image_open(&img, contents, 0, 0);
    for (int64_t c = first_new; c < first_new + 4; c++) {
        g_assert_cmpuint(refcount_of(&img, c), ==, 0);
    }
    image_close(&img);
}

static void coroutine_fn enospc_l2_entry(void *opaque)
{
    /*
     * A fresh image is 4 clusters (header, refcount table and block, L1).
     * Guest cluster 0 gets data cluster 4; its L2 table (cluster 5) does
     * not fit.
     */
    fill_until_full(5 * CLUSTER);
}

static void test_enospc_l2_table(void)
{
    co_run_sync(enospc_l2_entry, NULL);
}

static void coroutine_fn enospc_refblock_entry(void *opaque)
{
    /*
     * The first refcount block covers 256 clusters (16-bit refcounts):
     * the write that needs cluster 256 must create the second block,
     * which would describe itself at cluster 256 and does not fit.
     */
    fill_until_full(256 * CLUSTER);
}

static void test_enospc_refcount_block(void)
{
    co_run_sync(enospc_refblock_entry, NULL);
}

/*
 * A write into the middle of a new 64 KiB cluster: the file gets the
 * guest's buffer itself (not a copy) between the copy-on-write head and
 * tail, and the cluster reads back as zeroes around the data.
 */
static void coroutine_fn cow_entry(void *opaque)
{
    enum { BIG_CLUSTER = 64 * 1024, OFFSET = 4096, BYTES = 8192 };
    g_autofree uint8_t *data = g_malloc(BYTES);
    g_autofree uint8_t *back = g_malloc(BIG_CLUSTER);
    Image img;

    image_open(&img, NULL, BIG_CLUSTER, GUEST_SIZE);
    memset(data, NEW_BYTE, BYTES);
    watched_bytes = 0;
    watch_start = data;
    watch_end = data + BYTES;
    g_assert_cmpint(blk_co_pwrite(img.blk, OFFSET, BYTES, data, 0), ==, 0);
    watch_start = watch_end = NULL;
    g_assert_cmpuint(watched_bytes, ==, BYTES);

    g_assert_cmpint(blk_co_pread(img.blk, 0, BIG_CLUSTER, back, 0), ==, 0);
    for (int i = 0; i < BIG_CLUSTER; i++) {
        bool in_data = i >= OFFSET && i < OFFSET + BYTES;

        g_assert_cmpint(back[i], ==, in_data ? NEW_BYTE : 0);
    }
    image_close(&img);
}

static void test_cow_one_vector(void)
{
    co_run_sync(cow_entry, NULL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qcow2/crash/freed-cluster-reuse/zero",
                    test_reuse_after_zero);
    g_test_add_func("/qcow2/crash/freed-cluster-reuse/discard",
                    test_reuse_after_discard);
    g_test_add_func("/qcow2/crash/freed-cluster-release/flush",
                    test_release_on_flush);
    g_test_add_func("/qcow2/crash/freed-cluster-release/limit",
                    test_release_when_large);
    g_test_add_func("/qcow2/enospc/l2-table", test_enospc_l2_table);
    g_test_add_func("/qcow2/enospc/refcount-block",
                    test_enospc_refcount_block);
    g_test_add_func("/qcow2/cow/one-vector", test_cow_one_vector);
    return g_test_run();
}
