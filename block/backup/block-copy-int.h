/*
 * block-copy's private structures, shared by block-copy.c (the engine),
 * block-copy-behind.c (write-behind) and block-copy-spill.c (its spill
 * file).  Nothing else includes this but tests/unit/test-block-copy.c.
 */
#ifndef BLOCK_BLOCK_COPY_INT_H
#define BLOCK_BLOCK_COPY_INT_H

#include "block/block-copy.h"
#include "block/block_int.h"
#include "block/reqlist.h"
#include "util/ratelimit.h"

typedef struct BlockCopySpill BlockCopySpill;

typedef struct BlockCopyTask {
    BlockReq req;                   /* the range, in s->reqs */
    BlockCopyState *s;
    BlockCopyCallState *call;       /* the call that created it; NULL
                                     * once the write is behind */
    bool zeroes;                    /* the source reads zeroes there */
    int64_t behind_bytes;           /* write-behind budget it holds */
    bool spilled;                   /* its old data is in the spill file */
    int64_t spill_offset;           /* there, if spilled */
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
    BlockCopySpill *spill;          /* NULL: no spill file */
    int64_t spill_piece;            /* read back at most this at once */
    BdrvRequestFlags write_flags;   /* for every target write */

    /* Main loop and its coroutines. */
    BlockReqList reqs;              /* tasks in flight */
    BlockReqList behind_reqs;       /* tasks whose write is behind */
    uint64_t in_flight_bytes;       /* bytes of the tasks of both lists */
    int64_t behind_free;            /* left of write_behind_bytes */
    CoQueue behind_mem_waiters;     /* spilled tasks waiting for it */
    int behind_mem_waiting;         /* how many; others let them first */
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

/* What a bounce buffer of @bytes takes of BLOCK_COPY_MEMORY_BUDGET. */
static inline int64_t block_copy_mem_cost(int64_t bytes)
{
    return MIN(bytes, BLOCK_COPY_MEMORY_BUDGET);
}

/*
 * A bounce buffer of @bytes, charged to the memory budget (waits until
 * the budget has room); NULL if the allocation fails.  Give it back with
 * block_copy_bounce_put(), even if NULL.
 */
void *coroutine_fn block_copy_bounce_get(BlockCopyState *s, int64_t bytes);
void block_copy_bounce_put(BlockCopyState *s, void *buf, int64_t bytes);

/* block-copy-behind.c */
/*
 * @task has read its old data into the bounce buffer @buf: if its call
 * allows, let the call go on without it, keeping @buf while the
 * write-behind memory has room, else parking the data in the spill file
 * (task->spilled: @buf is free, block_copy_behind_write_spilled() writes
 * the target).  Otherwise the task stays in its call.
 */
void coroutine_fn block_copy_task_try_behind(BlockCopyTask *task,
                                             void *buf);
/* The target write of a spilled task, from the spill file. */
int coroutine_fn block_copy_behind_write_spilled(BlockCopyTask *task);
/* A task whose write was behind ended with @ret. */
void block_copy_behind_end(BlockCopyTask *task, int ret);

/* block-copy-spill.c */
/*
 * An unnamed file in @dir for up to @bytes (whole @units) of spilled
 * data; NULL with an error if it cannot be created.
 */
BlockCopySpill *block_copy_spill_new(const char *dir, int64_t bytes,
                                     int64_t unit, Error **errp);
void block_copy_spill_free(BlockCopySpill *spill);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(BlockCopySpill, block_copy_spill_free)
/*
 * Room for @bytes (rounded up to units): its offset in the file, or
 * -ENOSPC when no free extent is that large.
 */
int64_t block_copy_spill_alloc(BlockCopySpill *spill, int64_t bytes);
/* Give back what block_copy_spill_alloc(@bytes) returned at @offset. */
void block_copy_spill_release(BlockCopySpill *spill, int64_t offset,
                              int64_t bytes);
/* Write or read back @bytes at @offset: 0 or -errno. */
int coroutine_fn block_copy_spill_pwrite(BlockCopySpill *spill,
                                         int64_t offset, void *buf,
                                         int64_t bytes);
int coroutine_fn block_copy_spill_pread(BlockCopySpill *spill,
                                        int64_t offset, void *buf,
                                        int64_t bytes);

#endif /* BLOCK_BLOCK_COPY_INT_H */
