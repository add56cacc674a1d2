/*
 * The I/O core (block/io.c): alignment, bouncing, splitting, RMW
 * serialisation and flag emulation, checked against a plain byte array.
 *
 * A tiny in-test driver stores data in memory, asserts the driver
 * contract on every call (aligned offsets, lengths and vector elements,
 * no request above max_transfer, only declared flags) and goes through
 * the main loop in every request, so that concurrent requests interleave.
 * It also counts the bytes it transferred straight from or to a memory
 * range the test names, to show what the core did not bounce.  A second
 * table of the same driver declares BDRV_REQ_WRITE_COMPRESSED, to see
 * that flag pass the core unchanged.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/block-backend.h"
#include "util/main-loop.h"

enum {
    DISK_SIZE = 64 * 1024,
    ALIGN = 512,
    MAX_TRANSFER = 4096,
};

typedef struct MemState {
    uint8_t *data;
    BdrvRequestFlags last_write_flags;
    unsigned flushes;
    unsigned zero_calls;
    const uint8_t *watch_start, *watch_end;     /* memory the test owns */
    size_t watched_bytes;   /* bytes the driver moved in that range */
    /*
     * While @logging, the driver calls in order: r/w as a read/write
     * starts, R/W as it ends.
     */
    bool logging;
    char log[32];
    size_t log_len;
} MemState;

static void mem_log(MemState *s, char event)
{
    if (s->logging) {
        g_assert_cmpuint(s->log_len, <, sizeof(s->log) - 1);
        s->log[s->log_len++] = event;
    }
}

static void check_contract(BlockDriverState *bs, int64_t offset,
                           int64_t bytes, const IOVector *qiov)
{
    g_assert_cmpint(offset % ALIGN, ==, 0);
    g_assert_cmpint(bytes % ALIGN, ==, 0);
    g_assert_cmpint(bytes, >, 0);
    g_assert_cmpint(bytes, <=, MAX_TRANSFER);
    g_assert_cmpint(offset + bytes, <=, bs->total_bytes);
    g_assert_cmpuint(qiov->size, ==, bytes);
    for (int i = 0; i < qiov->niov; i++) {
        g_assert_cmpuint((uintptr_t)qiov->iov[i].iov_base % ALIGN, ==, 0);
        g_assert_cmpuint(qiov->iov[i].iov_len % ALIGN, ==, 0);
    }
}

static void count_watched(MemState *s, const IOVector *qiov)
{
    for (int i = 0; i < qiov->niov; i++) {
        const uint8_t *base = qiov->iov[i].iov_base;

        if (base >= s->watch_start && base < s->watch_end) {
            s->watched_bytes += qiov->iov[i].iov_len;
        }
    }
}

/* Let the main loop run, so other requests can overtake this one. */
static void coroutine_fn mem_yield_once(void)
{
    coroutine_wake(coroutine_self());
    coroutine_yield();
}

static int coroutine_fn mem_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    MemState *s = bs->opaque;

    g_assert_null(options);
    s->data = g_malloc0(DISK_SIZE);
    bs->total_bytes = DISK_SIZE;
    bs->bl.request_alignment = ALIGN;
    bs->bl.min_mem_alignment = ALIGN;
    bs->bl.max_transfer = MAX_TRANSFER;
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

    check_contract(bs, offset, bytes, qiov);
    g_assert_cmpint(flags, ==, 0);
    mem_log(s, 'r');
    mem_yield_once();
    mem_log(s, 'R');
    count_watched(s, qiov);
    iovector_from_buf(qiov, 0, s->data + offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    check_contract(bs, offset, bytes, qiov);
    /* Only declared flags; FUA is not declared: emulated. */
    g_assert_cmpint(flags & ~bs->drv->supported_write_flags, ==, 0);
    s->last_write_flags = flags;
    mem_log(s, 'w');
    mem_yield_once();
    mem_log(s, 'W');
    count_watched(s, qiov);
    iovector_to_buf(qiov, 0, s->data + offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwrite_zeroes(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    g_assert_cmpint(offset % ALIGN, ==, 0);
    g_assert_cmpint(bytes % ALIGN, ==, 0);
    g_assert_cmpint(flags & ~BDRV_REQ_MAY_UNMAP, ==, 0);
    s->zero_calls++;
    memset(s->data + offset, 0, bytes);
    return 0;
}

static int coroutine_fn mem_co_flush(BlockDriverState *bs)
{
    MemState *s = bs->opaque;

    s->flushes++;
    return 0;
}

static const BlockDriver bdrv_test_mem = {
    .format_name = "test-mem",
    .instance_size = sizeof(MemState),
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_preadv = mem_co_preadv,
    .bdrv_co_pwritev = mem_co_pwritev,
    .bdrv_co_pwrite_zeroes = mem_co_pwrite_zeroes,
    .bdrv_co_flush = mem_co_flush,
    .supported_zero_flags = BDRV_REQ_MAY_UNMAP,
};

static const BlockDriver bdrv_test_mem_compress = {
    .format_name = "test-mem-compress",
    .instance_size = sizeof(MemState),
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_preadv = mem_co_preadv,
    .bdrv_co_pwritev = mem_co_pwritev,
    .bdrv_co_flush = mem_co_flush,
    .supported_write_flags = BDRV_REQ_WRITE_COMPRESSED,
};

typedef struct Fixture {
    const BlockDriver *drv;
    BlockDriverState *bs;
    BlockBackend *blk;
    uint8_t model[DISK_SIZE];
} Fixture;

static void coroutine_fn open_entry(void *opaque)
{
    Fixture *f = opaque;

    f->bs = bdrv_new_open_driver(f->drv, "mem", false, &error_abort);
}

/* @data: the driver, NULL for bdrv_test_mem. */
static void fixture_setup(Fixture *f, gconstpointer data)
{
    f->drv = data ? data : &bdrv_test_mem;
    co_run_sync(open_entry, f);
    f->blk = blk_new_with_bs(f->bs, "test", BLK_PERM_CONSISTENT_READ |
                             BLK_PERM_WRITE, BLK_PERM_ALL, &error_abort);
    memset(f->model, 0, sizeof(f->model));
}

static void fixture_teardown(Fixture *f, gconstpointer data)
{
    blk_unref(f->blk);
    bdrv_unref(f->bs);
}

static MemState *mem_state(Fixture *f)
{
    return f->bs->opaque;
}

typedef struct IoOp {
    Fixture *f;
    bool write;
    bool zero;
    int64_t offset;
    int64_t bytes;
    uint8_t *buf;
    IOVector *qiov;             /* instead of @buf */
    BdrvRequestFlags flags;
    int ret;
    bool done;
} IoOp;

static void coroutine_fn io_op_entry(void *opaque)
{
    IoOp *op = opaque;

    if (op->zero) {
        op->ret = blk_co_pwrite_zeroes(op->f->blk, op->offset, op->bytes,
                                       op->flags);
    } else if (op->qiov) {
        op->ret = op->write
                  ? blk_co_pwritev(op->f->blk, op->offset, op->bytes,
                                   op->qiov, op->flags)
                  : blk_co_preadv(op->f->blk, op->offset, op->bytes,
                                  op->qiov, op->flags);
    } else if (op->write) {
        op->ret = blk_co_pwrite(op->f->blk, op->offset, op->bytes, op->buf,
                                op->flags);
    } else {
        op->ret = blk_co_pread(op->f->blk, op->offset, op->bytes, op->buf,
                               op->flags);
    }
    op->done = true;
}

static void io_ops_run(IoOp *ops, int count)
{
    for (int i = 0; i < count; i++) {
        coroutine_enter(coroutine_create(io_op_entry, &ops[i]));
    }
    for (int i = 0; i < count; i++) {
        while (!ops[i].done) {
            main_loop_wait(true);
        }
    }
}

static int do_io(Fixture *f, bool write, int64_t offset, int64_t bytes,
                 uint8_t *buf, BdrvRequestFlags flags)
{
    IoOp op = {
        .f = f, .write = write, .offset = offset, .bytes = bytes,
        .buf = buf, .flags = flags,
    };

    io_ops_run(&op, 1);
    return op.ret;
}

static int do_iov(Fixture *f, bool write, int64_t offset, IOVector *qiov)
{
    IoOp op = {
        .f = f, .write = write, .offset = offset, .bytes = qiov->size,
        .qiov = qiov,
    };

    io_ops_run(&op, 1);
    return op.ret;
}

static void check_against_model(Fixture *f)
{
    g_assert_cmpmem(mem_state(f)->data, DISK_SIZE, f->model, DISK_SIZE);
}

/*
 * A vector of 2 to 6 pieces of @mem (1 to 700 bytes each, at odd places,
 * with gaps so they stay separate elements), @bytes long in total.
 */
static void random_vector(GRand *rand, uint8_t *mem, size_t bytes,
                          IOVector *v)
{
    size_t pos = 1;

    iovector_init(v);
    while (v->size < bytes) {
        size_t piece = g_rand_int_range(rand, 1, 700);
        size_t n = MIN(bytes - v->size, piece);

        iovector_add(v, mem + pos, n);
        pos += n + g_rand_int_range(rand, 1, 9);
    }
}

/* Unaligned reads and writes with vectors of small odd pieces. */
static void test_vector_random(Fixture *f, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(4321);
    g_autofree uint8_t *mem = g_malloc(8 * 4096);
    g_autofree uint8_t *flat = g_malloc(4096);

    for (int i = 0; i < 300; i++) {
        int64_t bytes = g_rand_int_range(rand, 1, 3000);
        int64_t offset = g_rand_int_range(rand, 0, DISK_SIZE - bytes);
        IOVector v;

        random_vector(rand, mem, bytes, &v);
        for (int64_t j = 0; j < bytes; j++) {
            flat[j] = g_rand_int(rand);
        }
        iovector_from_buf(&v, 0, flat, bytes);
        g_assert_cmpint(do_iov(f, true, offset, &v), ==, 0);
        memcpy(f->model + offset, flat, bytes);
        iovector_destroy(&v);

        /* Read back through a vector of a different shape. */
        random_vector(rand, mem, bytes, &v);
        iovector_memset(&v, 0, 0xcc, bytes);
        g_assert_cmpint(do_iov(f, false, offset, &v), ==, 0);
        iovector_to_buf(&v, 0, flat, bytes);
        g_assert_cmpmem(flat, bytes, f->model + offset, bytes);
        iovector_destroy(&v);
    }
    check_against_model(f);
}

/*
 * An unaligned request whose middle is aligned memory: only the partial
 * head and tail blocks are bounced, the middle goes to the driver as the
 * caller's own memory.  The vector is [412 bytes at an odd address]
 * [4096 aligned][3584 aligned][100 bytes at an odd address] at guest
 * offset 100, so the aligned elements cover exactly [512, 8192).
 */
static void test_vector_edges_only(Fixture *f, gconstpointer data)
{
    g_autofree uint8_t *edges = g_malloc(1024);
    g_autofree uint8_t *mid = blk_memalign(3 * 4096);
    g_autofree uint8_t *flat = g_malloc(8192);
    MemState *s = mem_state(f);
    IOVector v;

    iovector_init(&v);
    iovector_add(&v, edges + 1, 412);
    iovector_add(&v, mid, 4096);
    iovector_add(&v, mid + 8192, 3584);
    iovector_add(&v, edges + 601, 100);
    g_assert_cmpuint(v.size, ==, 8192);
    s->watch_start = mid;
    s->watch_end = mid + 3 * 4096;

    for (int i = 0; i < 8192; i++) {
        flat[i] = i * 7 + 1;
    }
    iovector_from_buf(&v, 0, flat, 8192);
    g_assert_cmpint(do_iov(f, true, 100, &v), ==, 0);
    memcpy(f->model + 100, flat, 8192);
    check_against_model(f);
    g_assert_cmpuint(s->watched_bytes, ==, 8192 - 512);

    s->watched_bytes = 0;
    iovector_memset(&v, 0, 0, 8192);
    g_assert_cmpint(do_iov(f, false, 100, &v), ==, 0);
    iovector_to_buf(&v, 0, flat, 8192);
    g_assert_cmpmem(flat, 8192, f->model + 100, 8192);
    g_assert_cmpuint(s->watched_bytes, ==, 8192 - 512);
    iovector_destroy(&v);
}

/* A middle the driver cannot take (odd address) is bounced whole. */
static void test_vector_misaligned_middle(Fixture *f, gconstpointer data)
{
    g_autofree uint8_t *mem = blk_memalign(3 * 4096);
    g_autofree uint8_t *flat = g_malloc(4096);
    MemState *s = mem_state(f);
    IOVector v;

    iovector_init(&v);
    iovector_add(&v, mem + 1, 411);
    iovector_add(&v, mem + 4096 + 3, 1024);     /* not aligned */
    iovector_add(&v, mem + 8192, 100);
    s->watch_start = mem;
    s->watch_end = mem + 3 * 4096;
    for (int i = 0; i < 1535; i++) {
        flat[i] = i * 5 + 3;
    }
    iovector_from_buf(&v, 0, flat, 1535);
    g_assert_cmpint(do_iov(f, true, 101, &v), ==, 0);
    memcpy(f->model + 101, flat, 1535);
    check_against_model(f);
    iovector_memset(&v, 0, 0, 1535);
    g_assert_cmpint(do_iov(f, false, 101, &v), ==, 0);
    iovector_to_buf(&v, 0, flat, 1535);
    g_assert_cmpmem(flat, 1535, f->model + 101, 1535);
    g_assert_cmpuint(s->watched_bytes, ==, 0);
    iovector_destroy(&v);
}

/* Unaligned writes of random data, each checked by an unaligned read. */
static void test_unaligned_random(Fixture *f, gconstpointer data)
{
    g_autoptr(GRand) rand = g_rand_new_with_seed(1234);
    /* +1: the buffer itself is deliberately misaligned. */
    g_autofree uint8_t *buf = g_malloc(3 * MAX_TRANSFER + 1);
    g_autofree uint8_t *readback = g_malloc(3 * MAX_TRANSFER + 1);

    for (int i = 0; i < 300; i++) {
        int64_t bytes = g_rand_int_range(rand, 1, 3 * MAX_TRANSFER);
        int64_t offset = g_rand_int_range(rand, 0, DISK_SIZE - bytes);

        for (int64_t j = 0; j < bytes; j++) {
            buf[j + 1] = g_rand_int(rand);
        }
        g_assert_cmpint(do_io(f, true, offset, bytes, buf + 1, 0), ==, 0);
        memcpy(f->model + offset, buf + 1, bytes);
        g_assert_cmpint(do_io(f, false, offset, bytes, readback + 1, 0),
                        ==, 0);
        g_assert_cmpmem(readback + 1, bytes, f->model + offset, bytes);
    }
    check_against_model(f);
}

/*
 * Many small writes into the same aligned block at once: without RMW
 * serialisation, the read-modify-write cycles would overwrite each other.
 */
static void test_concurrent_rmw(Fixture *f, gconstpointer data)
{
    enum { WRITERS = 16, BYTES = 7 };
    IoOp ops[WRITERS];
    uint8_t bufs[WRITERS][BYTES];

    for (int i = 0; i < WRITERS; i++) {
        memset(bufs[i], 0x10 + i, BYTES);
        ops[i] = (IoOp) {
            .f = f, .write = true, .offset = ALIGN + 3 + i * 20,
            .bytes = BYTES, .buf = bufs[i],
        };
        memcpy(f->model + ops[i].offset, bufs[i], BYTES);
    }
    io_ops_run(ops, WRITERS);
    for (int i = 0; i < WRITERS; i++) {
        g_assert_cmpint(ops[i].ret, ==, 0);
    }
    check_against_model(f);
}

/* An aligned write racing with an RMW of the same block is not lost. */
static void test_aligned_vs_rmw(Fixture *f, gconstpointer data)
{
    g_autofree uint8_t *block = blk_memalign(ALIGN);
    uint8_t small[10];
    IoOp ops[2];

    memset(block, 0xaa, ALIGN);
    memset(small, 0xbb, sizeof(small));
    ops[0] = (IoOp) { .f = f, .write = true, .offset = 100,
                      .bytes = sizeof(small), .buf = small };
    ops[1] = (IoOp) { .f = f, .write = true, .offset = 0, .bytes = ALIGN,
                      .buf = block };
    io_ops_run(ops, 2);
    /* The RMW started first, so the aligned write lands last. */
    memset(f->model, 0xaa, ALIGN);
    check_against_model(f);
}

/*
 * Run a read and a write of [@read_offset, +ALIGN) and [0, ALIGN), the
 * one named first started first, and return the driver's call log.
 */
static const char *serialising_run(Fixture *f, bool write_first,
                                   int64_t read_offset,
                                   BdrvRequestFlags write_flags,
                                   uint8_t *read_buf)
{
    g_autofree uint8_t *block = blk_memalign(ALIGN);
    MemState *s = mem_state(f);
    IoOp write = { .f = f, .write = true, .offset = 0, .bytes = ALIGN,
                   .buf = block, .flags = write_flags };
    IoOp read = { .f = f, .offset = read_offset, .bytes = ALIGN,
                  .buf = read_buf };
    IoOp ops[2];

    memset(block, 0xaa, ALIGN);
    ops[0] = write_first ? write : read;
    ops[1] = write_first ? read : write;
    s->log_len = 0;
    memset(s->log, 0, sizeof(s->log));
    s->logging = true;
    io_ops_run(ops, 2);
    s->logging = false;
    g_assert_cmpint(ops[0].ret, ==, 0);
    g_assert_cmpint(ops[1].ret, ==, 0);
    return s->log;
}

/*
 * BDRV_REQ_SERIALISING: the write waits for an overlapping read already
 * in flight, and a later overlapping read waits for the write; requests
 * elsewhere, and plain writes, interleave as usual.
 */
static void test_serialising_write(Fixture *f, gconstpointer data)
{
    uint8_t *buf = blk_memalign(ALIGN);

    g_assert_cmpstr(serialising_run(f, false, 0, BDRV_REQ_SERIALISING, buf),
                    ==, "rRwW");
    g_assert_cmpint(buf[0], ==, 0);     /* the old data */
    g_assert_cmpstr(serialising_run(f, true, 0, BDRV_REQ_SERIALISING, buf),
                    ==, "wWrR");
    g_assert_cmpint(buf[0], ==, 0xaa);

    g_assert_cmpstr(serialising_run(f, false, ALIGN, BDRV_REQ_SERIALISING,
                                    buf), ==, "rwRW");
    g_assert_cmpstr(serialising_run(f, true, ALIGN, BDRV_REQ_SERIALISING,
                                    buf), ==, "wrWR");
    g_assert_cmpstr(serialising_run(f, false, 0, 0, buf), ==, "rwRW");
    g_assert_cmpstr(serialising_run(f, true, 0, 0, buf), ==, "wrWR");
    blk_vfree(buf);
}

static void test_zeroes_unaligned(Fixture *f, gconstpointer data)
{
    g_autofree uint8_t *buf = g_malloc(DISK_SIZE);
    IoOp op = { .f = f, .zero = true, .offset = 100,
                .bytes = 3 * ALIGN + 50, .flags = BDRV_REQ_MAY_UNMAP };

    memset(buf, 0x77, DISK_SIZE);
    g_assert_cmpint(do_io(f, true, 0, DISK_SIZE, buf, 0), ==, 0);
    memset(f->model, 0x77, DISK_SIZE);
    io_ops_run(&op, 1);
    g_assert_cmpint(op.ret, ==, 0);
    memset(f->model + 100, 0, 3 * ALIGN + 50);
    check_against_model(f);
    /* The aligned middle went to the driver's zero call. */
    g_assert_cmpuint(mem_state(f)->zero_calls, ==, 1);
}

static void test_zeroes_no_fallback(Fixture *f, gconstpointer data)
{
    IoOp op = { .f = f, .zero = true, .offset = 1, .bytes = ALIGN,
                .flags = BDRV_REQ_NO_FALLBACK };

    io_ops_run(&op, 1);
    g_assert_cmpint(op.ret, ==, -ENOTSUP);
}

static void test_fua_emulated(Fixture *f, gconstpointer data)
{
    uint8_t buf[ALIGN];

    memset(buf, 1, sizeof(buf));
    g_assert_cmpint(do_io(f, true, 0, ALIGN, buf, 0), ==, 0);
    g_assert_cmpuint(mem_state(f)->flushes, ==, 0);
    g_assert_cmpint(do_io(f, true, 0, ALIGN, buf, BDRV_REQ_FUA), ==, 0);
    g_assert_cmpuint(mem_state(f)->flushes, ==, 1);
}

/* A driver that does not declare compressed writes never sees one. */
static void test_compressed_unsupported(Fixture *f, gconstpointer data)
{
    uint8_t buf[ALIGN];

    memset(buf, 1, sizeof(buf));
    g_assert_cmpint(do_io(f, true, 0, ALIGN, buf, BDRV_REQ_WRITE_COMPRESSED),
                    ==, -ENOTSUP);
    check_against_model(f);
    g_assert_false(bdrv_supports_compressed_writes(f->bs));
}

/*
 * One that declares them gets the flag unchanged, aligned requests only
 * (no read-modify-write); a bounced vector is fine.
 */
static void test_compressed_passed(Fixture *f, gconstpointer data)
{
    g_autofree uint8_t *mem = g_malloc(2 * ALIGN + 1);
    uint8_t *buf = mem + 1;         /* misaligned memory: bounced */

    g_assert_true(bdrv_supports_compressed_writes(f->bs));
    memset(buf, 7, 2 * ALIGN);
    g_assert_cmpint(do_io(f, true, ALIGN, 2 * ALIGN, buf,
                          BDRV_REQ_WRITE_COMPRESSED), ==, 0);
    g_assert_cmpint(mem_state(f)->last_write_flags, ==,
                    BDRV_REQ_WRITE_COMPRESSED);
    memset(f->model + ALIGN, 7, 2 * ALIGN);
    check_against_model(f);

    mem_state(f)->logging = true;
    g_assert_cmpint(do_io(f, true, ALIGN / 2, ALIGN, buf,
                          BDRV_REQ_WRITE_COMPRESSED), ==, -EINVAL);
    g_assert_cmpint(do_io(f, true, 0, ALIGN + 1, buf,
                          BDRV_REQ_WRITE_COMPRESSED), ==, -EINVAL);
    g_assert_cmpuint(mem_state(f)->log_len, ==, 0);
    check_against_model(f);
}

static void test_out_of_range(Fixture *f, gconstpointer data)
{
    uint8_t buf[16];

    g_assert_cmpint(do_io(f, false, DISK_SIZE - 8, 16, buf, 0), ==, -EIO);
    g_assert_cmpint(do_io(f, true, -1, 1, buf, 0), ==, -EIO);
    g_assert_cmpint(do_io(f, true, DISK_SIZE, 1, buf, 0), ==, -EIO);
    g_assert_cmpint(do_io(f, false, DISK_SIZE, 0, buf, 0), ==, 0);
}

static void test_read_only_backend(Fixture *f, gconstpointer data)
{
    BlockBackend *reader = blk_new_with_bs(f->bs, "reader",
                                           BLK_PERM_CONSISTENT_READ,
                                           BLK_PERM_ALL, &error_abort);
    BlockBackend *saved = f->blk;
    uint8_t buf[ALIGN] = { 0 };

    f->blk = reader;
    g_assert_cmpint(do_io(f, true, 0, ALIGN, buf, 0), ==, -EPERM);
    f->blk = saved;
    blk_unref(reader);
}

static void test_perm_conflict(Fixture *f, gconstpointer data)
{
    g_autoptr(Error) err = NULL;
    BlockBackend *exclusive;

    /* f->blk writes; a user that shares nothing cannot join. */
    exclusive = blk_new_with_bs(f->bs, "NBD export 'x'",
                                BLK_PERM_CONSISTENT_READ, 0, &err);
    g_assert_null(exclusive);
    g_assert_cmpstr(error_get_pretty(err), ==,
                    "Permission conflict on node 'mem': permissions "
                    "'consistent read, write' are both required by test "
                    "(uses node 'mem' as 'root' child) and unshared by NBD "
                    "export 'x' (uses node 'mem' as 'root' child).");
}

#define ADD_IO_TEST(path, fn) \
    g_test_add("/block-io/" path, Fixture, NULL, fixture_setup, fn, \
               fixture_teardown)
#define ADD_IO_TEST_DRV(path, drv, fn) \
    g_test_add("/block-io/" path, Fixture, drv, fixture_setup, fn, \
               fixture_teardown)

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    ADD_IO_TEST("unaligned/random", test_unaligned_random);
    ADD_IO_TEST("unaligned/concurrent-rmw", test_concurrent_rmw);
    ADD_IO_TEST("unaligned/aligned-vs-rmw", test_aligned_vs_rmw);
    ADD_IO_TEST("vector/random", test_vector_random);
    ADD_IO_TEST("vector/edges-only", test_vector_edges_only);
    ADD_IO_TEST("vector/misaligned-middle", test_vector_misaligned_middle);
    ADD_IO_TEST("zeroes/unaligned", test_zeroes_unaligned);
    ADD_IO_TEST("zeroes/no-fallback", test_zeroes_no_fallback);
    ADD_IO_TEST("flags/fua-emulated", test_fua_emulated);
    ADD_IO_TEST("flags/serialising", test_serialising_write);
    ADD_IO_TEST("flags/compressed-unsupported", test_compressed_unsupported);
    ADD_IO_TEST_DRV("flags/compressed-passed", &bdrv_test_mem_compress,
                    test_compressed_passed);
    ADD_IO_TEST("range/out-of-range", test_out_of_range);
    ADD_IO_TEST("perm/read-only-backend", test_read_only_backend);
    ADD_IO_TEST("perm/conflict", test_perm_conflict);
    return g_test_run();
}
