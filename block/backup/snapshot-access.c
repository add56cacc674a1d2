/*
 * The "snapshot-access" driver: the point-in-time snapshot that a
 * copy-before-write node below it keeps, as a read-only node (to export
 * over NBD for fleecing, or as the source of a push backup).
 *
 * Reads, block status and discard go to the snapshot API of the file
 * child (include/block/copy-before-write.h); writes are refused.  The
 * node takes no permissions on its child: it reads the old data through
 * the filter's own edges, and guest writes through the filter must go on.
 * Like QEMU, the node opens on any file node; its requests then fail with
 * ENOTSUP unless the file is a copy-before-write node.
 */
#include "block/block_int.h"
#include "block/copy-before-write.h"
#include "qapi/qapi-types.h"

static int coroutine_fn snapshot_access_open(BlockDriverState *bs,
                                             BlockdevOptions *options,
                                             Error **errp)
{
    BlockdevOptionsGenericFormat *opts = &options->u.snapshot_access;

    if (!bdrv_open_child(bs, opts->file, "file",
                         BDRV_CHILD_DATA | BDRV_CHILD_PRIMARY, errp)) {
        return -EINVAL;
    }
    bs->total_bytes = bdrv_getlength(bs->file->bs);
    bs->bl.max_transfer = bs->file->bs->bl.max_transfer;
    return 0;
}

/* The copy-before-write node whose snapshot we read, or NULL. */
static BlockDriverState *snapshot_access_filter(BlockDriverState *bs)
{
    return bdrv_is_cbw(bs->file->bs) ? bs->file->bs : NULL;
}

static int coroutine_fn snapshot_access_co_preadv(BlockDriverState *bs,
                                                  int64_t offset,
                                                  int64_t bytes,
                                                  IOVector *qiov,
                                                  BdrvRequestFlags flags)
{
    BlockDriverState *filter = snapshot_access_filter(bs);

    if (!filter || flags) {
        return -ENOTSUP;
    }
    return bdrv_cbw_snapshot_preadv(filter, offset, bytes, qiov);
}

static int coroutine_fn snapshot_access_co_block_status(BlockDriverState *bs,
                                                        int64_t offset,
                                                        int64_t bytes,
                                                        int64_t *pnum,
                                                        int64_t *map,
                                                        BlockDriverState **file)
{
    BlockDriverState *filter = snapshot_access_filter(bs);

    if (!filter) {
        return -ENOTSUP;
    }
    return bdrv_cbw_snapshot_block_status(filter, offset, bytes, pnum);
}

static int coroutine_fn snapshot_access_co_pdiscard(BlockDriverState *bs,
                                                    int64_t offset,
                                                    int64_t bytes)
{
    BlockDriverState *filter = snapshot_access_filter(bs);

    if (!filter) {
        return -ENOTSUP;
    }
    return bdrv_cbw_snapshot_pdiscard(filter, offset, bytes);
}

static int coroutine_fn snapshot_access_co_pwritev(BlockDriverState *bs,
                                                   int64_t offset,
                                                   int64_t bytes,
                                                   IOVector *qiov,
                                                   BdrvRequestFlags flags)
{
    return -ENOTSUP;
}

static int coroutine_fn snapshot_access_co_pwrite_zeroes(BlockDriverState *bs,
                                                         int64_t offset,
                                                         int64_t bytes,
                                                         BdrvRequestFlags flags)
{
    return -ENOTSUP;
}

static void snapshot_access_child_perm(BlockDriverState *bs,
                                       BdrvChild *child,
                                       uint64_t parent_perm,
                                       uint64_t parent_shared,
                                       uint64_t *nperm, uint64_t *nshared)
{
    *nperm = 0;
    *nshared = BLK_PERM_ALL;
}

static const BlockDriver bdrv_snapshot_access = {
    .format_name = "snapshot-access",
    .instance_size = 0,
    .bdrv_open = snapshot_access_open,
    .bdrv_child_perm = snapshot_access_child_perm,
    .bdrv_co_preadv = snapshot_access_co_preadv,
    .bdrv_co_pwritev = snapshot_access_co_pwritev,
    .bdrv_co_pwrite_zeroes = snapshot_access_co_pwrite_zeroes,
    .bdrv_co_pdiscard = snapshot_access_co_pdiscard,
    .bdrv_co_block_status = snapshot_access_co_block_status,
};

static void __attribute__((constructor)) snapshot_access_register(void)
{
    bdrv_register(&bdrv_snapshot_access);
}
