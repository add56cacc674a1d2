/*
 * The "raw" format driver: the image is the child's bytes, optionally a
 * window [offset, offset + size) of them.
 *
 * Requests are forwarded with the window's offset added.  The window is
 * checked against the child's length at open; the core keeps requests
 * within the node, and so within the window.
 */
#include "block/block_int.h"
#include "qapi/qapi-types.h"

typedef struct BDRVRawState {
    int64_t offset;
    int64_t size;
    bool has_size;
} BDRVRawState;

static int coroutine_fn raw_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    BDRVRawState *s = bs->opaque;
    BlockdevOptionsRaw *opts = &options->u.raw;
    int64_t file_size;

    if (!bdrv_open_child(bs, opts->file, "file",
                         BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY |
                         BDRV_CHILD_FILTERED, errp)) {
        return -EINVAL;
    }
    if (!bdrv_check_size_option("offset", opts->has_offset, opts->offset,
                                errp) ||
        !bdrv_check_size_option("size", opts->has_size, opts->size, errp)) {
        return -EINVAL;
    }
    file_size = bdrv_getlength(bs->file->bs);
    s->offset = opts->has_offset ? opts->offset : 0;
    s->has_size = opts->has_size;
    s->size = opts->has_size ? opts->size : file_size - s->offset;
    if ((uint64_t)s->offset > (uint64_t)file_size) {
        error_setg(errp, "Offset (%" PRIu64 ") cannot be greater than size "
                   "of the containing file (%" PRId64 ")",
                   (uint64_t)s->offset, file_size);
        return -EINVAL;
    }
    if (s->has_size && (uint64_t)(file_size - s->offset) < (uint64_t)s->size) {
        /* QEMU's message, double space included, for exact matching. */
        error_setg(errp, "The sum of offset (%" PRIu64 ") and size (%" PRIu64
                   ") has to be smaller or equal to the  actual size of the "
                   "containing file (%" PRId64 ")", (uint64_t)s->offset,
                   (uint64_t)s->size, file_size);
        return -EINVAL;
    }
    /* A partial sector at the end would be rounded up by some clients. */
    if (s->has_size && !IS_ALIGNED(s->size, 512)) {
        error_setg(errp, "Specified size is not multiple of 512");
        return -EINVAL;
    }
    bs->total_bytes = s->size;
    /*
     * Alignment stays 1: the file node does any read-modify-write itself.
     * Inheriting it would make NBD advertise it as the minimum block
     * size, and clients would then do the RMW on their side, where two
     * clients writing one block race and lose each other's bytes.
     */
    bs->bl.max_transfer = bs->file->bs->bl.max_transfer;
    return 0;
}

static int coroutine_fn raw_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_preadv(bs->file, s->offset + offset, bytes, qiov, flags);
}

static int coroutine_fn raw_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_pwritev(bs->file, s->offset + offset, bytes, qiov, flags);
}

static int coroutine_fn raw_co_pwrite_zeroes(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes,
                                             BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_pwrite_zeroes(bs->file, s->offset + offset, bytes, flags);
}

static int coroutine_fn raw_co_pdiscard(BlockDriverState *bs,
                                        int64_t offset, int64_t bytes)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_pdiscard(bs->file, s->offset + offset, bytes);
}

static int coroutine_fn raw_co_copy_range_from(BlockDriverState *bs,
                                               BdrvChild *src,
                                               int64_t src_offset,
                                               BdrvChild *dst,
                                               int64_t dst_offset,
                                               int64_t bytes,
                                               BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_copy_range_from(bs->file, s->offset + src_offset, dst,
                                   dst_offset, bytes, flags);
}

static int coroutine_fn raw_co_copy_range_to(BlockDriverState *bs,
                                             BdrvChild *src,
                                             int64_t src_offset,
                                             BdrvChild *dst,
                                             int64_t dst_offset,
                                             int64_t bytes,
                                             BdrvRequestFlags flags)
{
    BDRVRawState *s = bs->opaque;

    return bdrv_co_copy_range_to(src, src_offset, bs->file,
                                 s->offset + dst_offset, bytes, flags);
}

static int coroutine_fn raw_co_block_status(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            int64_t *pnum, int64_t *map,
                                            BlockDriverState **file)
{
    BDRVRawState *s = bs->opaque;

    *pnum = bytes;
    *map = s->offset + offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW;
}

static int raw_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    return bdrv_get_info(bs->file->bs, bdi);
}

static const BlockDriver bdrv_raw = {
    .format_name = "raw",
    .can_reopen_read_only = true,
    .instance_size = sizeof(BDRVRawState),
    .bdrv_open = raw_open,
    .bdrv_co_preadv = raw_co_preadv,
    .bdrv_co_pwritev = raw_co_pwritev,
    .bdrv_co_pwrite_zeroes = raw_co_pwrite_zeroes,
    .bdrv_co_pdiscard = raw_co_pdiscard,
    .bdrv_co_copy_range_from = raw_co_copy_range_from,
    .bdrv_co_copy_range_to = raw_co_copy_range_to,
    .bdrv_co_block_status = raw_co_block_status,
    .bdrv_get_info = raw_get_info,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
};

static void __attribute__((constructor)) raw_register(void)
{
    bdrv_register(&bdrv_raw);
}
