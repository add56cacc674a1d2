/*
 * BlockBackend: the handle through which a user (an NBD export, a job, a
 * test) attaches to a node of the graph.  It holds the node as a root
 * child with the permissions the user asked for, tracks the requests in
 * flight, and checks every request against the node's length before it
 * reaches the graph.
 *
 * The blk_co_* functions are coroutine_fn and return 0 or -errno.  Buffers
 * need no particular alignment (the block layer bounces where O_DIRECT
 * demands it), but blk_memalign() buffers avoid the copy.
 */
#ifndef BLOCK_BLOCK_BACKEND_H
#define BLOCK_BLOCK_BACKEND_H

#include "block/block-common.h"
#include "util/iov.h"

/*
 * How permission errors name a backend that has no name of its own, as
 * QEMU names its anonymous BlockBackends (exports, image creation).
 */
#define BLK_ANONYMOUS_USER "an unnamed block device"

/*
 * Attach to @bs, taking @perm and allowing others @shared_perm.  Fails with
 * a message naming @user (BLK_ANONYMOUS_USER, or "backup job 'j0'") when
 * the permissions conflict with those of the node's other parents.
 */
BlockBackend *blk_new_with_bs(BlockDriverState *bs, const char *user,
                              uint64_t perm, uint64_t shared_perm,
                              Error **errp);

/*
 * A user that issues requests on its own initiative (a job) holds them off
 * itself while the node below is drained: drained_begin asks it to stop
 * at its next chance, drained_poll says whether it still may issue one,
 * drained_end lets it go on.  Without drain ops, requests arriving while
 * the node is drained wait in the backend (NBD exports).
 */
typedef struct BlockBackendDrainOps {
    void (*drained_begin)(void *opaque);
    void (*drained_end)(void *opaque);
    bool (*drained_poll)(void *opaque);
} BlockBackendDrainOps;

void blk_set_drain_ops(BlockBackend *blk, const BlockBackendDrainOps *ops,
                       void *opaque);

/* Wait for this backend's requests to finish, then detach and free. */
void blk_unref(BlockBackend *blk);

BlockDriverState *blk_bs(BlockBackend *blk);
int64_t blk_getlength(BlockBackend *blk);
/* Smallest I/O size the node handles without read-modify-write. */
uint32_t blk_get_request_alignment(BlockBackend *blk);

/*
 * Read into or write from @qiov, which holds exactly @bytes; a write only
 * reads the memory @qiov describes.
 */
int coroutine_fn blk_co_preadv(BlockBackend *blk, int64_t offset,
                               int64_t bytes, IOVector *qiov,
                               BdrvRequestFlags flags);
int coroutine_fn blk_co_pwritev(BlockBackend *blk, int64_t offset,
                                int64_t bytes, IOVector *qiov,
                                BdrvRequestFlags flags);
/* The same for one contiguous buffer. */
int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset,
                              int64_t bytes, void *buf,
                              BdrvRequestFlags flags);
int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset,
                               int64_t bytes, const void *buf,
                               BdrvRequestFlags flags);
/* @flags: BDRV_REQ_MAY_UNMAP, BDRV_REQ_NO_FALLBACK, BDRV_REQ_FUA. */
int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset,
                                      int64_t bytes, BdrvRequestFlags flags);
int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset,
                                 int64_t bytes);
int coroutine_fn blk_co_flush(BlockBackend *blk);

/*
 * Describe [@offset, @offset + @bytes): returns BDRV_BLOCK_* bits (>= 0)
 * valid for the first *@pnum bytes (1 <= *@pnum <= @bytes), or -errno.
 * @depth (if not NULL) receives the allocation depth: 1 allocated in the
 * node itself, 2 in its backing node and so on, 0 nowhere in the chain.
 */
int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset,
                                     int64_t bytes, int64_t *pnum,
                                     int *depth);

/* Wait (iterating the main loop) until no request of @blk is in flight. */
void blk_drain(BlockBackend *blk);

#endif /* BLOCK_BLOCK_BACKEND_H */
