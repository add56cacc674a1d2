/*
 * The fuzzers' in-memory protocol driver (see fuzz-mem.h).
 *
 * bdrv_open has no way to receive a buffer, so fuzz_mem_open_node() parks
 * it in a static for the open callback to pick up; the harnesses are
 * single-threaded.
 */
#include "fuzz-mem.h"

typedef struct FuzzMemState {
    uint8_t *data;
    size_t max_size;
} FuzzMemState;

static struct {
    const void *data;
    size_t size;
    size_t max_size;
} pending;

static int coroutine_fn fuzz_mem_open(BlockDriverState *bs,
                                      BlockdevOptions *options, Error **errp)
{
    FuzzMemState *s = bs->opaque;

    s->max_size = MAX(pending.max_size, pending.size);
    s->data = g_malloc0(s->max_size);
    memcpy(s->data, pending.data, pending.size);
    bs->total_bytes = pending.size;
    return 0;
}

static void fuzz_mem_close(BlockDriverState *bs)
{
    FuzzMemState *s = bs->opaque;

    g_free(s->data);
}

static int coroutine_fn fuzz_mem_preadv(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        IOVector *qiov,
                                        BdrvRequestFlags flags)
{
    FuzzMemState *s = bs->opaque;

    /* Growing writes may leave the node longer than it was opened. */
    iovector_from_buf(qiov, 0, s->data + offset, bytes);
    return 0;
}

/* @qiov NULL writes zeroes. */
static int coroutine_fn fuzz_mem_pwritev(BlockDriverState *bs,
                                         int64_t offset, int64_t bytes,
                                         IOVector *qiov,
                                         BdrvRequestFlags flags)
{
    FuzzMemState *s = bs->opaque;

    if ((uint64_t)(offset + bytes) > s->max_size) {
        return -ENOSPC;
    }
    if (qiov) {
        iovector_to_buf(qiov, 0, s->data + offset, bytes);
    } else {
        memset(s->data + offset, 0, bytes);
    }
    return 0;
}

static int coroutine_fn fuzz_mem_pwrite_zeroes(BlockDriverState *bs,
                                               int64_t offset, int64_t bytes,
                                               BdrvRequestFlags flags)
{
    return fuzz_mem_pwritev(bs, offset, bytes, NULL, flags);
}

static int coroutine_fn fuzz_mem_pdiscard(BlockDriverState *bs,
                                          int64_t offset, int64_t bytes)
{
    return fuzz_mem_pwritev(bs, offset, bytes, NULL, 0);
}

static int coroutine_fn fuzz_mem_block_status(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes,
                                              int64_t *pnum, int64_t *map,
                                              BlockDriverState **file)
{
    int64_t chunk = 64 * 1024;
    int64_t end = MIN(ALIGN_DOWN(offset, chunk) + chunk, offset + bytes);

    *pnum = end - offset;
    return BDRV_BLOCK_ALLOCATED |
           ((offset / chunk) % 2 ? BDRV_BLOCK_ZERO : BDRV_BLOCK_DATA);
}

static const BlockDriver fuzz_mem_driver = {
    .format_name = "fuzz-mem",
    .instance_size = sizeof(FuzzMemState),
    .has_variable_length = true,
    .bdrv_open = fuzz_mem_open,
    .bdrv_close = fuzz_mem_close,
    .bdrv_co_preadv = fuzz_mem_preadv,
    .bdrv_co_pwritev = fuzz_mem_pwritev,
    .bdrv_co_pwrite_zeroes = fuzz_mem_pwrite_zeroes,
    .bdrv_co_pdiscard = fuzz_mem_pdiscard,
    .bdrv_co_block_status = fuzz_mem_block_status,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
};

BlockDriverState *coroutine_fn fuzz_mem_open_node(const char *name,
                                                  const void *data,
                                                  size_t size,
                                                  size_t max_size)
{
    BlockDriverState *bs;

    pending.data = data;
    pending.size = size;
    pending.max_size = max_size;
    bs = bdrv_new_open_driver(&fuzz_mem_driver, name, true, &error_abort);
    pending.data = NULL;
    return bs;
}
