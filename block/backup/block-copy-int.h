/*
 * block-copy's private structures, shared by block-copy.c (the engine)
 * and block-copy-behind.c (write-behind).  Nothing else includes this.
 */
#ifndef BLOCK_BLOCK_COPY_INT_H
#define BLOCK_BLOCK_COPY_INT_H

#include "block/block-copy.h"
#include "block/block_int.h"
#include "block/reqlist.h"
#include "util/ratelimit.h"

typedef struct BlockCopyTask {
    BlockReq req;                   /* the range, in s->reqs */
    BlockCopyState *s;
    BlockCopyCallState *call;       /* the call that created it; NULL
                                     * once the write is behind */
    bool zeroes;                    /* the source reads zeroes there */
    int64_t behind_bytes;           /* write-behind budget it holds */
} BlockCopyTask;

struct BlockCopyCallState {
    /* Set at creation and never changed. */
    BlockCopyState *s;
    int64_t offset;                 /* cluster-aligned */
    int64_t bytes;                  /* cluster-aligned or up to s->len */
    int max_workers;
    int64_t max_task_bytes;         /* chunk size, capped by max_chunk */
    bool ignore_ratelimit;          /* synchronous calls */
    bool write_behind;              /* its tasks may write behind */
    BlockCopyAsyncCallbackFunc *cb;
    void *opaque;

    /* Set by whoever starts the call's coroutine, before it runs. */
    Coroutine *co;                  /* the coroutine running the call */

    /* Changed by the call's coroutine and its tasks. */
    GList link;                     /* in s->calls while running */
    int tasks_in_flight;
    CoQueue task_ended;             /* the call waits here for a task */
    bool finished;
    int ret;                        /* the first task error */
    bool error_is_read;

    /* Changed from outside the call (cancel, kick, timeout). */
    bool cancelled;
    guint sleep_timer;              /* sleeping on the rate limit */

    /* Synchronous calls with a timeout (block_copy()). */
    Coroutine *waiter;              /* block_copy()'s caller */
    guint timeout_timer;
    bool abandoned;                 /* timed out: the call frees itself */
};

struct BlockCopyState {
    /* Set at creation and never changed. */
    BdrvChild *source;
    BdrvChild *target;
    BlockDriverState *owner;        /* holds the copy bitmap */
    BdrvDirtyBitmap *copy_bitmap;   /* set: still to copy */
    int64_t len;                    /* bytes to copy (the source's) */
    int64_t cluster_size;
    int64_t chunk_size;             /* the largest task */
    bool discard_source;
    bool write_behind;              /* write_behind_bytes > 0 */
    bool use_copy_range;            /* until an offload fails */
    BdrvRequestFlags write_flags;   /* for every target write */

    /* Main loop and its coroutines. */
    BlockReqList reqs;              /* tasks in flight */
    BlockReqList behind_reqs;       /* tasks whose write is behind */
    uint64_t in_flight_bytes;       /* bytes of the tasks of both lists */
    int64_t behind_free;            /* left of write_behind_bytes */
    int behind_ret;                 /* first failed write behind, or 0 */
    BlockCopyFailureFunc *failure_cb;
    void *failure_opaque;
    int64_t mem_free;               /* left of BLOCK_COPY_MEMORY_BUDGET */
    CoQueue mem_waiters;            /* tasks waiting for bounce memory */
    GPtrArray *spare_buffers;       /* chunk_size bounce buffers, unused */
    RateLimit rate_limit;           /* for calls that honour it */
    bool skip_unallocated;
    GQueue calls;                   /* BlockCopyCallState *, running */
    BlockCopyProgressFunc *progress_cb;
    void *progress_opaque;
};

/*
 * Work that outlives the call that started it (writes behind, timed-out
 * synchronous calls) counts in the owner's in_flight, so that drains of
 * the owner wait for it (block-copy.c).
 */
void block_copy_owner_inc_in_flight(BlockCopyState *s);
void block_copy_owner_dec_in_flight(BlockCopyState *s);

/* block-copy-behind.c */
/*
 * @task has read its old data into a buffer of @mem bytes: if its call
 * and the budget allow, let the call go on without it.
 */
void block_copy_task_try_behind(BlockCopyTask *task, int64_t mem);
/* A task whose write was behind ended with @ret. */
void block_copy_behind_end(BlockCopyTask *task, int ret);

#endif /* BLOCK_BLOCK_COPY_INT_H */
