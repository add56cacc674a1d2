/*
 * block-copy: the engine that copies clusters from a source node to a
 * target node, shared by the copy-before-write filter (a guest write
 * copies the clusters it is about to overwrite) and the backup job (the
 * background copy of everything else), so that every cluster is copied
 * exactly once, by whoever comes first.  block/block-copy.c;
 * docs/devel/block-copy.rst explains the model.
 *
 * State: a copy bitmap (set: still to copy) of cluster granularity, the
 * list of ranges being copied right now (block/reqlist.h), a memory
 * budget for the bounce buffers of all tasks, and a rate limit for the
 * background copy.
 *
 * A *call* copies what is still set in a range: it takes the dirty runs
 * one by one (clearing their bits and registering them in flight before
 * it yields), splits them into tasks of at most one chunk, runs up to
 * max_workers tasks at a time, and waits for copies of the range that
 * others have in flight.  A failed task sets its bits again, so nothing
 * is lost: someone copies it later.
 *
 * Main loop and its coroutines only.
 */
#ifndef BLOCK_BLOCK_COPY_H
#define BLOCK_BLOCK_COPY_H

#include "block/block-common.h"
#include "util/coroutine.h"

typedef struct BlockCopyState BlockCopyState;
typedef struct BlockCopyCallState BlockCopyCallState;

/* The smallest copy unit, whatever the target (QEMU's). */
#define BLOCK_COPY_MIN_CLUSTER_SIZE     (64 * 1024)
/* Bounce-buffer budget of one state, shared by all its tasks. */
#define BLOCK_COPY_MEMORY_BUDGET        (128 * 1024 * 1024)
/* Default number of tasks one call runs at a time. */
#define BLOCK_COPY_MAX_WORKERS          64
/* Where the write-behind spill file goes by default. */
#define BLOCK_COPY_SPILL_DIR            "/var/tmp"

typedef struct BlockCopyOptions {
    /*
     * Try copy offload (bdrv_co_copy_range(): copy_file_range() between
     * file nodes) first; after its first failure, read and write for good.
     */
    bool use_copy_range;
    /*
     * Write compressed clusters (one cluster per task, no offload; zero
     * runs stay write-zeroes).  block_copy_state_new() refuses it for a
     * target that cannot take compressed writes ("Compression is not
     * supported for this drive TARGET").
     */
    bool compress;
    /* Raise the cluster size to at least this (a power of two; 0: none). */
    int64_t min_cluster_size;
    /* Discard each copied range on the source (push from fleecing). */
    bool discard_source;
    /*
     * Write-behind for synchronous calls, a blockd extension (0: off).
     * block_copy() may return as soon as the old data of a task is read
     * into memory, so that the guest write it protects can go on while
     * the target write finishes later.  Up to this many bytes of such
     * buffers at a time; when they are all taken, block_copy() waits for
     * the target write as usual.  Not with discard_source (the source
     * range must not be discarded after the guest wrote it).
     *
     * A write behind cannot be undone or retried when it fails (the
     * source already holds new data): the point-in-time copy is broken.
     * See block_copy_set_failure_callback() and block_copy_state_failed().
     */
    uint64_t write_behind_bytes;
    /*
     * The spill level of write-behind, a blockd extension (0: none).
     * When write_behind_bytes are all taken, a task going behind writes
     * its old data to an unnamed file in write_behind_spill_dir (NULL:
     * BLOCK_COPY_SPILL_DIR) holding up to this many bytes, frees its
     * buffer, and block_copy() returns; the target write reads the data
     * back later, through write-behind memory, a piece at a time.  When
     * the spill is full too, or writing it fails, block_copy() waits for
     * the target write.  At least one cluster, and so must
     * write_behind_bytes be.  The file disappears with the state, or
     * with the process.
     */
    uint64_t write_behind_spill_bytes;
    const char *write_behind_spill_dir;
} BlockCopyOptions;

/*
 * block_copy_state_new:
 * @source, @target: edges of the node that owns the state (the
 *   copy-before-write filter), taken with the permissions a copy needs
 * @bitmap: the initial copy set, rounded out to clusters (NULL: all)
 * @opts: NULL for all defaults
 *
 * Cluster size = max(BLOCK_COPY_MIN_CLUSTER_SIZE, @opts->min_cluster_size,
 * the target's cluster size), with QEMU's rules and messages when the
 * target cannot tell it.  The copy bitmap is an anonymous, disabled
 * bitmap on the owner node (@source's parent), which must already have
 * the source's length.  Errors carry no prefix: copy-before-write adds
 * QEMU's "Cannot create block-copy-state: ".
 */
BlockCopyState *block_copy_state_new(BdrvChild *source, BdrvChild *target,
                                     const BdrvDirtyBitmap *bitmap,
                                     const BlockCopyOptions *opts,
                                     Error **errp);
/*
 * No call may be running but those a timed-out block_copy() gave up on:
 * waits for them, and for writes behind.
 */
void block_copy_state_free(BlockCopyState *s);

int64_t block_copy_cluster_size(BlockCopyState *s);
/* The copy bitmap: set bits are clusters still to copy. */
BdrvDirtyBitmap *block_copy_dirty_bitmap(BlockCopyState *s);
/* Bytes still to copy: set in the copy bitmap, or in flight. */
uint64_t block_copy_remaining_bytes(BlockCopyState *s);

/*
 * Progress: @cb is called with the number of bytes of every task that
 * completes successfully (copied, written as zeroes, or skipped because
 * unallocated under sync=top), from whichever call ran it.
 */
typedef void BlockCopyProgressFunc(void *opaque, uint64_t bytes);
void block_copy_set_progress_callback(BlockCopyState *s,
                                      BlockCopyProgressFunc *cb,
                                      void *opaque);

/*
 * Write-behind (BlockCopyOptions.write_behind_bytes): @cb is called once,
 * with the -errno, when the first write behind fails.  Its clusters were
 * reported copied but are not on the target, and never will be.
 */
typedef void BlockCopyFailureFunc(void *opaque, int ret);
void block_copy_set_failure_callback(BlockCopyState *s,
                                     BlockCopyFailureFunc *cb,
                                     void *opaque);
/* Has a write behind failed (the copy is broken for good)? */
bool block_copy_state_failed(BlockCopyState *s);
/*
 * Wait until no write behind overlaps [@offset, @offset + @bytes): for
 * readers of the target (snapshot reads of clusters block_copy()
 * reported copied).  Returns at once without write-behind.
 */
void coroutine_fn block_copy_wait_behind_writes(BlockCopyState *s,
                                                int64_t offset,
                                                int64_t bytes);

/* Background rate limit in bytes per second (0: none). */
void block_copy_set_speed(BlockCopyState *s, uint64_t speed);

/*
 * sync=top: while @skip is set, every task first asks whether its range
 * is allocated in the source's own layer and drops what is not.
 * block_copy_reset_unallocated() clears the bits of the unallocated run
 * at @offset (the background scan); it returns 1 if the run at @offset
 * is allocated, 0 if it was cleared, -errno on error, with its length in
 * *@count.
 */
void block_copy_set_skip_unallocated(BlockCopyState *s, bool skip);
int coroutine_fn block_copy_reset_unallocated(BlockCopyState *s,
                                              int64_t offset,
                                              int64_t *count);

/*
 * block_copy:
 * Synchronous call (copy-before-write): copy what is still set in
 * [@offset, @offset + @bytes) (cluster-aligned), waiting for overlapping
 * copies others have in flight and for nothing else.  No rate limit.
 * @timeout_ns: give up waiting after that long (0: never) with
 * -ETIMEDOUT; the copy itself goes on in the background, counted in
 * the owner node's in_flight (so drains of the owner wait for it), and
 * block_copy_state_free() waits for it.
 * Returns 0 or the first task's -errno; *@error_is_read tells whether it
 * came from reading the source.  With write-behind, 0 may mean "read
 * into memory, the target write follows" (see BlockCopyOptions).
 */
int coroutine_fn block_copy(BlockCopyState *s, int64_t offset,
                            int64_t bytes, uint64_t timeout_ns,
                            bool *error_is_read);

/*
 * block_copy_async:
 * Background call (the backup job): copy what is set in
 * [@offset, @offset + @bytes) with up to @max_workers tasks at a time,
 * each at most @max_chunk bytes (0: no limit beyond the chunk size),
 * honouring the rate limit.  @cb runs (in the main loop) when the call
 * ends: it finished, failed (it stops starting tasks, waits for those in
 * flight and keeps the first error), or was cancelled.  The caller frees
 * the call with block_copy_call_free() after that.
 */
typedef void BlockCopyAsyncCallbackFunc(void *opaque);
BlockCopyCallState *block_copy_async(BlockCopyState *s, int64_t offset,
                                     int64_t bytes, int max_workers,
                                     int64_t max_chunk,
                                     BlockCopyAsyncCallbackFunc *cb,
                                     void *opaque);
void block_copy_call_free(BlockCopyCallState *call);

bool block_copy_call_finished(BlockCopyCallState *call);
bool block_copy_call_succeeded(BlockCopyCallState *call);
bool block_copy_call_failed(BlockCopyCallState *call);
bool block_copy_call_cancelled(BlockCopyCallState *call);
/* The call's result (0 or -errno), and whether it came from a read. */
int block_copy_call_status(BlockCopyCallState *call, bool *error_is_read);

/*
 * Stop the call from starting tasks; those in flight finish, and then
 * the callback runs.  Idempotent.
 */
void block_copy_call_cancel(BlockCopyCallState *call);
/* Wake a call sleeping on the rate limit (the speed changed). */
void block_copy_kick(BlockCopyCallState *call);

#endif /* BLOCK_BLOCK_COPY_H */
