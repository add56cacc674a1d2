/*
 * The block I/O API (io.c): how a parent -- a node's driver or a
 * BlockBackend -- sends requests down an edge.  Coroutine context.
 */
#ifndef BLOCK_BLOCK_INT_IO_H
#define BLOCK_BLOCK_INT_IO_H

#include "block/block_int-driver.h"

/*
 * io.c: entry points used by parents (nodes or backends).
 *
 * bdrv_co_preadv/bdrv_co_pwritev: read [@offset, @offset + @bytes) of
 * @child's node into @qiov, or write it from @qiov, which holds exactly
 * @bytes.  Any offset, length and memory will do: the core aligns the
 * request for the driver, bouncing only what it must.  A write only
 * reads the memory @qiov describes.
 */
int coroutine_fn bdrv_co_preadv(BdrvChild *child, int64_t offset,
                                int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pwritev(BdrvChild *child, int64_t offset,
                                 int64_t bytes, IOVector *qiov,
                                 BdrvRequestFlags flags);
/*
 * bdrv_supports_compressed_writes:
 * Whether writes to @bs may carry BDRV_REQ_WRITE_COMPRESSED: its driver
 * handles the flag and, for a filter, so does the node below it (a
 * filter can only pass compressed writes on).
 */
bool bdrv_supports_compressed_writes(BlockDriverState *bs);
/* The same for one contiguous buffer. */
int coroutine_fn bdrv_co_pread(BdrvChild *child, int64_t offset,
                               int64_t bytes, void *buf,
                               BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pwrite(BdrvChild *child, int64_t offset,
                                int64_t bytes, const void *buf,
                                BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pwrite_zeroes(BdrvChild *child, int64_t offset,
                                       int64_t bytes, BdrvRequestFlags flags);
int coroutine_fn bdrv_co_pdiscard(BdrvChild *child, int64_t offset,
                                  int64_t bytes);
int coroutine_fn bdrv_co_flush(BlockDriverState *bs);
/*
 * bdrv_co_copy_range:
 * Copy [@src_offset, +@bytes) of @src's node to @dst's node at
 * @dst_offset by offload (copy_file_range() between two files), tracked
 * as a read of the source and a write of the destination at every layer.
 * @flags: BDRV_REQ_SERIALISING for the writes.  -ENOTSUP when some layer
 * cannot offload, or the range is not aligned for both: the caller then
 * reads and writes.  bdrv_co_copy_range_from/_to are the steps drivers
 * call on their children.
 */
int coroutine_fn bdrv_co_copy_range(BdrvChild *src, int64_t src_offset,
                                    BdrvChild *dst, int64_t dst_offset,
                                    int64_t bytes, BdrvRequestFlags flags);
int coroutine_fn bdrv_co_copy_range_from(BdrvChild *src, int64_t src_offset,
                                         BdrvChild *dst, int64_t dst_offset,
                                         int64_t bytes,
                                         BdrvRequestFlags flags);
int coroutine_fn bdrv_co_copy_range_to(BdrvChild *src, int64_t src_offset,
                                       BdrvChild *dst, int64_t dst_offset,
                                       int64_t bytes, BdrvRequestFlags flags);
/*
 * What [@offset, +@bytes) of @bs reads as, over its whole backing chain:
 * BDRV_BLOCK_* for the first *@pnum bytes, BDRV_BLOCK_ALLOCATED only if
 * @bs itself allocates them; *@depth as bdrv_co_block_status_above() says.
 */
int coroutine_fn bdrv_co_block_status(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, int64_t *pnum,
                                      int *depth);
/*
 * bdrv_co_block_status_above:
 * Walk the backing chain from @bs down to, not including, @base (NULL:
 * the whole chain) for the first layer that allocates [@offset, +@bytes).
 * Returns its BDRV_BLOCK_* status for the first *@pnum bytes, and in
 * *@depth that layer's place in the chain (1: @bs itself), or 0 if no
 * layer above @base allocates them ("allocated above @base" is
 * *@depth > 0).  qemu:allocation-depth reports *@depth.
 */
int coroutine_fn bdrv_co_block_status_above(BlockDriverState *bs,
                                            BlockDriverState *base,
                                            int64_t offset, int64_t bytes,
                                            int64_t *pnum, int *depth);

/*
 * bdrv_debug_event:
 * Tell @bs that @event happened, for fault injection in tests: a
 * blkdebug node reacts by activating the error rules or changing to the
 * state that its options tie to @event.  Nodes of other drivers ignore
 * events, so the calls cost one test when no blkdebug node is present.
 * Format drivers raise events on the child that holds their metadata
 * and data, through BLKDBG_EVENT(); the core raises the pwritev* events
 * on the node written and the flush_* events on the primary child of
 * the node flushed.  The event itself never fails: a rule it activates
 * makes the following requests on the blkdebug node fail.
 */
void bdrv_debug_event(BlockDriverState *bs, BlkdebugEvent event);
#define BLKDBG_EVENT(child, evt) \
    do { \
        if (child) { \
            bdrv_debug_event((child)->bs, (evt)); \
        } \
    } while (0)

#endif /* BLOCK_BLOCK_INT_IO_H */
