/*
 * The "null-co" protocol driver: a device of a given size that discards
 * writes.  Reads leave the buffer untouched unless read-zeroes=on (as in
 * QEMU, where it exists for benchmarks of the layers above).  Block
 * status says "no data" (a hole), and zero too with read-zeroes=on, as
 * QEMU reports it.
 */
#include "block/block_int.h"
#include "qapi/qapi-types.h"

enum {
    NULL_DEFAULT_SIZE = 1 << 30,
};

#define NULL_MAX_SIZE (INT64_MAX & ~((1LL << 30) - 1))

typedef struct BDRVNullState {
    bool read_zeroes;
} BDRVNullState;

static int coroutine_fn null_open(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp)
{
    BDRVNullState *s = bs->opaque;
    BlockdevOptionsNull *opts = &options->u.null_co;

    if (opts->has_size && opts->size < 0) {
        error_setg(errp, "Parameter 'size' expects a non-negative value");
        return -EINVAL;
    }
    /* QEMU's bound on any node's length: INT64_MAX down to 1 GiB */
    if (opts->has_size && opts->size > NULL_MAX_SIZE) {
        error_setg(errp, "Could not refresh total sector count: %s",
                   strerror(EFBIG));
        return -EFBIG;
    }
    /* QEMU holds the delay in an int64_t */
    if (opts->has_latency_ns && opts->latency_ns > INT64_MAX) {
        error_setg(errp, "latency-ns is invalid");
        return -EINVAL;
    }
    bs->total_bytes = opts->has_size ? opts->size : NULL_DEFAULT_SIZE;
    s->read_zeroes = opts->has_read_zeroes && opts->read_zeroes;
    bs->filename = g_strdup("null-co://");
    return 0;
}

static int coroutine_fn null_co_preadv(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    BDRVNullState *s = bs->opaque;

    (void)offset;
    (void)flags;
    if (s->read_zeroes) {
        iovector_memset(qiov, 0, 0, bytes);
    }
    return 0;
}

static int coroutine_fn null_co_pwritev(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes,
                                        IOVector *qiov,
                                        BdrvRequestFlags flags)
{
    (void)bs;
    (void)offset;
    (void)bytes;
    (void)qiov;
    (void)flags;
    return 0;
}

static int coroutine_fn null_co_pwrite_zeroes(BlockDriverState *bs,
                                              int64_t offset, int64_t bytes,
                                              BdrvRequestFlags flags)
{
    return null_co_pwritev(bs, offset, bytes, NULL, flags);
}

static int coroutine_fn null_co_block_status(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             int64_t *pnum, int64_t *map,
                                             BlockDriverState **file)
{
    BDRVNullState *s = bs->opaque;

    (void)offset;
    (void)map;
    (void)file;
    *pnum = bytes;
    return BDRV_BLOCK_ALLOCATED | (s->read_zeroes ? BDRV_BLOCK_ZERO : 0);
}

static const BlockDriver bdrv_null_co = {
    .format_name = "null-co",
    .can_reopen_read_only = true,
    .instance_size = sizeof(BDRVNullState),
    .bdrv_open = null_open,
    .bdrv_co_preadv = null_co_preadv,
    .bdrv_co_pwritev = null_co_pwritev,
    .bdrv_co_pwrite_zeroes = null_co_pwrite_zeroes,
    .bdrv_co_block_status = null_co_block_status,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
};

static void __attribute__((constructor)) null_register(void)
{
    bdrv_register(&bdrv_null_co);
}
