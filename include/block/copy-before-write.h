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

typedef struct BdrvCbwOptions {
    const char *filter_node_name;   /* NULL: generated */
    const BdrvDirtyBitmap *bitmap;  /* initial copy set (NULL: all) */
    bool discard_source;
    int64_t min_cluster_size;       /* 0: none */
    OnCbwError on_cbw_error;
    uint32_t cbw_timeout;           /* seconds, 0: none */
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
 * (or timed out)?  Then the point-in-time view is gone: snapshot reads
 * fail, and a backup job that depends on the filter fails too.
 */
bool bdrv_cbw_snapshot_broken(BlockDriverState *filter);

#endif /* BLOCK_COPY_BEFORE_WRITE_H */
