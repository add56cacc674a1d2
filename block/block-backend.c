/*
 * BlockBackend: a user's handle on a node (see block-backend.h).
 *
 * The backend owns the root edge into the graph, checks each request's
 * range against the node's current length (an NBD client must never make
 * the graph see an out-of-range request), and counts its own requests so
 * that a user going away can wait for exactly its own I/O.
 */
#include "block/block-backend.h"
#include "block/block_int.h"
#include "util/main-loop.h"

struct BlockBackend {
    char *user;             /* "NBD export 'e0'", for messages */
    BdrvChild *root;
    unsigned in_flight;
    CoQueue drain_waiters;
};

static char *blk_root_get_parent_desc(BdrvChild *child)
{
    BlockBackend *blk = child->opaque;

    return g_strdup(blk->user);
}

static const BdrvChildClass child_root = {
    .get_parent_desc = blk_root_get_parent_desc,
};

BlockBackend *blk_new_with_bs(BlockDriverState *bs, const char *user,
                              uint64_t perm, uint64_t shared_perm,
                              Error **errp)
{
    BlockBackend *blk = g_new0(BlockBackend, 1);

    blk->user = g_strdup(user);
    co_queue_init(&blk->drain_waiters);
    blk->root = bdrv_attach_child(bs, "root", BDRV_CHILD_DATA, &child_root,
                                  blk, NULL, perm, shared_perm, errp);
    if (!blk->root) {
        g_free(blk->user);
        g_free(blk);
        return NULL;
    }
    return blk;
}

void blk_drain(BlockBackend *blk)
{
    while (blk->in_flight > 0) {
        if (in_coroutine()) {
            co_queue_wait(&blk->drain_waiters);
        } else {
            main_loop_wait(true);
        }
    }
}

void blk_unref(BlockBackend *blk)
{
    if (!blk) {
        return;
    }
    blk_drain(blk);
    bdrv_detach_child(blk->root);
    g_free(blk->user);
    g_free(blk);
}

BlockDriverState *blk_bs(BlockBackend *blk)
{
    return blk->root->bs;
}

int64_t blk_getlength(BlockBackend *blk)
{
    return bdrv_getlength(blk_bs(blk));
}

uint32_t blk_get_request_alignment(BlockBackend *blk)
{
    return blk_bs(blk)->bl.request_alignment;
}

static void blk_inc_in_flight(BlockBackend *blk)
{
    blk->in_flight++;
}

static void blk_dec_in_flight(BlockBackend *blk)
{
    if (--blk->in_flight == 0) {
        co_queue_restart_all(&blk->drain_waiters);
    }
}

/*
 * Check a request's range and count it in flight; every successful call
 * is paired with blk_request_end().
 */
static int blk_request_begin(BlockBackend *blk, int64_t offset,
                             int64_t bytes)
{
    int64_t len = blk_getlength(blk);

    if (offset < 0 || bytes < 0 || offset > len || bytes > len - offset) {
        return -EIO;
    }
    blk_inc_in_flight(blk);
    return 0;
}

int coroutine_fn blk_co_pread(BlockBackend *blk, int64_t offset,
                              int64_t bytes, void *buf,
                              BdrvRequestFlags flags)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pread(blk->root, offset, bytes, buf, flags);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_pwrite(BlockBackend *blk, int64_t offset,
                               int64_t bytes, const void *buf,
                               BdrvRequestFlags flags)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pwrite(blk->root, offset, bytes, buf, flags);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_pwrite_zeroes(BlockBackend *blk, int64_t offset,
                                      int64_t bytes, BdrvRequestFlags flags)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pwrite_zeroes(blk->root, offset, bytes, flags);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_pdiscard(BlockBackend *blk, int64_t offset,
                                 int64_t bytes)
{
    int ret = blk_request_begin(blk, offset, bytes);

    if (ret == 0) {
        ret = bdrv_co_pdiscard(blk->root, offset, bytes);
        blk_dec_in_flight(blk);
    }
    return ret;
}

int coroutine_fn blk_co_flush(BlockBackend *blk)
{
    int ret;

    blk_inc_in_flight(blk);
    ret = bdrv_co_flush(blk_bs(blk));
    blk_dec_in_flight(blk);
    return ret;
}

int coroutine_fn blk_co_block_status(BlockBackend *blk, int64_t offset,
                                     int64_t bytes, int64_t *pnum,
                                     int *depth)
{
    int ret = blk_request_begin(blk, offset, bytes);
    int layer;

    if (ret == 0) {
        ret = bdrv_co_block_status_above(blk_bs(blk), NULL, offset, bytes,
                                         pnum, &layer);
        blk_dec_in_flight(blk);
    }
    if (ret >= 0 && layer != 1) {
        ret &= ~BDRV_BLOCK_ALLOCATED;   /* allocated in a backing node */
    }
    if (ret >= 0 && depth) {
        *depth = layer;
    }
    return ret;
}
