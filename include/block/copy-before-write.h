/*
 * The copy-before-write filter (block/copy-before-write.c), as the
 * backup job uses it: inserted above the source at job start, dropped at
 * finalize.  blockdev-add opens the same driver for fleecing.
 *
 * Main loop only.
 */
#ifndef BLOCK_COPY_BEFORE_WRITE_H
#define BLOCK_COPY_BEFORE_WRITE_H

#include "block/block-copy.h"
#include "qapi/qapi-types.h"
#include "util/iov.h"

typedef struct BdrvCbwOptions {
    const char *filter_node_name;   /* NULL: generated */
    const BdrvDirtyBitmap *bitmap;  /* initial copy set (NULL: all) */
    bool compress;                  /* BlockCopyOptions.compress (backup) */
    bool discard_source;
    bool use_copy_range;            /* the backup job's x-perf */
    int64_t min_cluster_size;       /* 0: none */
    OnCbwError on_cbw_error;
    uint32_t cbw_timeout;           /* seconds, 0: none */
    /* BlockCopyOptions.write_behind_bytes (a blockd extension; 0: off) */
    uint64_t write_behind_bytes;
    /* BlockCopyOptions.write_behind_spill_* (a blockd extension) */
    uint64_t write_behind_spill_bytes;          /* 0: none */
    const char *write_behind_spill_dir;         /* NULL: the default */
} BdrvCbwOptions;

/*
 * bdrv_cbw_append:
 * Open a copy-before-write filter with @source as its file and @target
 * as its target, and move every parent of @source onto it, as one graph
 * change (permission conflicts get QEMU's messages and leave the graph
 * as it was).  Returns the filter and, in *@bcs, its block-copy state,
 * which the caller may drive (block_copy_async) but not free.
 */
BlockDriverState *bdrv_cbw_append(BlockDriverState *source,
                                  BlockDriverState *target,
                                  const BdrvCbwOptions *opts,
                                  BlockCopyState **bcs, Error **errp);
/* Drop the filter from the graph and close it. */
void bdrv_cbw_drop(BlockDriverState *filter);

/*
 * Has a copy before a guest write failed under on-cbw-error=break-snapshot
 * (or timed out), or a write behind failed?  Then the point-in-time view
 * is gone: snapshot reads fail, and a backup job that depends on the
 * filter fails too.
 */
bool bdrv_cbw_snapshot_broken(BlockDriverState *filter);

/*
 * The snapshot API, for the snapshot-access driver (coroutine context).
 * @filter is a copy-before-write node; the calls see its file as it was
 * when the filter opened, for the clusters of the initial copy set.
 *
 * bdrv_cbw_snapshot_preadv: read the point in time; -EACCES if any of the
 * range is outside what may be read (never in the copy set, or discarded
 * through the snapshot) or the snapshot is broken.
 * bdrv_cbw_snapshot_block_status: the status of the point in time, as
 * bdrv_co_block_status() reports it, always with BDRV_BLOCK_ALLOCATED;
 * the same -EACCES cases.
 * bdrv_cbw_snapshot_pdiscard: the reader no longer needs the whole
 * clusters in the range: they become unreadable, guest writes stop
 * copying them and their copies on the target are discarded.
 */
bool bdrv_is_cbw(BlockDriverState *bs);
int coroutine_fn bdrv_cbw_snapshot_preadv(BlockDriverState *filter,
                                          int64_t offset, int64_t bytes,
                                          IOVector *qiov);
int coroutine_fn bdrv_cbw_snapshot_block_status(BlockDriverState *filter,
                                                int64_t offset,
                                                int64_t bytes,
                                                int64_t *pnum);
int coroutine_fn bdrv_cbw_snapshot_pdiscard(BlockDriverState *filter,
                                            int64_t offset, int64_t bytes);

#endif /* BLOCK_COPY_BEFORE_WRITE_H */
