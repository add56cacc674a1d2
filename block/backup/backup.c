/*
 * The backup job: copy a disk, as it was when the job started, to a
 * target, while the disk stays in use.
 *
 * At creation a copy-before-write filter goes above the source
 * (bdrv_cbw_append): from then on a guest write first copies the
 * clusters it is about to overwrite, so the target receives the point in
 * time.  The filter's block-copy state holds the copy bitmap; the job
 * copies what is still set in it with one background call
 * (block_copy_async) over the whole disk, and so each cluster is copied
 * exactly once, by whoever comes first.
 *
 * The copy set per sync mode (QEMU's): full, everything; top,
 * everything, while a scan clears what the source's own layer does not
 * allocate (until it is done, every copy asks first); bitmap, the frozen
 * sync bitmap; none, everything but nothing in the background: the
 * filter alone copies, and the job runs until cancelled.
 *
 * The background call stops for a pause (in-flight copies finish, then
 * the job parks; a new call resumes from the bitmap), for an error (the
 * error policy decides: report fails the job, stop pauses it, ignore
 * retries) and for a cancel.  The filter keeps copying meanwhile.
 *
 * Beyond QEMU: the target is flushed before the job succeeds, so that a
 * reported success is a durable backup; and with on-cbw-error
 * break-snapshot, a copy before a guest write that failed fails the job
 * (the filter let the write through, so the target would be
 * inconsistent).
 *
 * At finalization commit/abort apply bitmap-mode to the sync bitmap
 * (bdrv_dirty_bitmap_end_job: "always" hands over what was not copied)
 * and clean releases the nodes and drops the filter, so that its node
 * name is gone and the target free once the job is finalized, dismissed
 * or not.
 */
#include "block/backup.h"
#include "block/block_int.h"
#include "block/block-backend.h"
#include "block/block-copy.h"
#include "block/copy-before-write.h"
#include "block/backup/trace.h"

/* How often a sync=none job checks that the snapshot still holds. */
#define BACKUP_SNAPSHOT_POLL_NS     (1000 * 1000 * 1000)

typedef struct BackupBlockJob {
    BlockJob common;

    /* Set at creation and never changed. */
    BlockDriverState *cbw;          /* the filter above the source */
    BlockDriverState *target;
    BlockCopyState *bcs;            /* the filter's; not ours to free */
    BdrvDirtyBitmap *sync_bitmap;   /* frozen with a successor, or NULL */
    MirrorSyncMode sync;
    BitmapSyncMode bitmap_mode;
    BlockdevOnError on_source_error;
    BlockdevOnError on_target_error;
    int max_workers;
    int64_t max_chunk;
    int64_t len;

    /* The job's coroutine, and the call's callback (main loop). */
    BlockCopyCallState *bg_call;    /* the background call, or NULL */
    /* The coroutine waits, busy, for the call to end (see wait_call). */
    bool waiting_for_call;
} BackupBlockJob;

static BackupBlockJob *to_backup(Job *job)
{
    return container_of(job, BackupBlockJob, common.job);
}

static void backup_progress(void *opaque, uint64_t bytes)
{
    BackupBlockJob *s = opaque;

    job_progress_update(&s->common.job, bytes);
}

static void backup_call_done(void *opaque)
{
    BackupBlockJob *s = opaque;

    if (s->waiting_for_call) {
        s->waiting_for_call = false;
        coroutine_wake(s->common.job.co);
    } else {
        job_enter(&s->common.job);
    }
}

/*
 * Stop the background call and wait until its copies in flight are done.
 * The job stays busy meanwhile, so a drain waits for them too, and no
 * job_enter() can mistake the wake-up for something else.
 */
static void coroutine_fn backup_stop_call(BackupBlockJob *s)
{
    if (!s->bg_call || block_copy_call_finished(s->bg_call)) {
        return;
    }
    block_copy_call_cancel(s->bg_call);
    while (!block_copy_call_finished(s->bg_call)) {
        s->waiting_for_call = true;
        coroutine_yield();
    }
}

/* JobDriver.pause: a paused job copies nothing in the background. */
static void coroutine_fn backup_pause(Job *job)
{
    backup_stop_call(to_backup(job));
}

static void backup_set_speed(BlockJob *job, int64_t speed)
{
    BackupBlockJob *s = container_of(job, BackupBlockJob, common);

    block_copy_set_speed(s->bcs, speed);
    if (s->bg_call) {
        block_copy_kick(s->bg_call);
    }
}

/*
 * Decide about a failed call or flush: returns true to go on (after a
 * pause for stop), false to fail the job with @ret.
 */
static bool backup_error_continues(BackupBlockJob *s, int ret, bool is_read)
{
    BlockErrorAction action =
        block_job_error_policy(is_read ? s->on_source_error
                                       : s->on_target_error, -ret);

    block_job_error_action(&s->common, action, is_read, -ret);
    return action != BLOCK_ERROR_ACTION_REPORT;
}

/*
 * One background call over the whole disk, to its end.  Returns 0 when
 * it copied everything it found, 1 when it stopped early (pause, or the
 * job is cancelled), -errno when it failed.
 */
static int coroutine_fn backup_run_call(BackupBlockJob *s, bool *error_is_read)
{
    Job *job = &s->common.job;
    int ret;

    s->bg_call = block_copy_async(s->bcs, 0, s->len, s->max_workers,
                                  s->max_chunk, backup_call_done, s);
    while (!block_copy_call_finished(s->bg_call)) {
        if (job_is_cancelled(job)) {
            backup_stop_call(s);
            break;
        }
        /* Woken by the callback, a cancel, or a pause (which stops it). */
        job_yield(job);
    }
    if (block_copy_call_succeeded(s->bg_call)) {
        ret = 0;
    } else if (block_copy_call_cancelled(s->bg_call)) {
        ret = 1;
    } else {
        ret = block_copy_call_status(s->bg_call, error_is_read);
    }
    block_copy_call_free(g_steal_pointer(&s->bg_call));
    return ret;
}

static int coroutine_fn backup_check_snapshot(BackupBlockJob *s,
                                              Error **errp)
{
    if (bdrv_cbw_snapshot_broken(s->cbw)) {
        /* break-snapshot, or a write behind the guest's that failed */
        error_setg(errp, "A copy before a guest write failed: the target "
                   "does not hold the point in time");
        return -EIO;
    }
    return 0;
}

/* sync=top: clear what the source's own layer does not allocate. */
static int coroutine_fn backup_scan_unallocated(BackupBlockJob *s)
{
    Job *job = &s->common.job;
    int64_t offset = 0;

    while (offset < s->len) {
        int64_t count;
        int ret;

        job_pause_point(job);
        if (job_is_cancelled(job)) {
            return -ECANCELED;
        }
        ret = block_copy_reset_unallocated(s->bcs, offset, &count);
        if (ret < 0) {
            return ret;
        }
        offset += count;
    }
    return 0;
}

/*
 * sync=none: the filter does all the work until the job is cancelled.
 * Nothing tells the job that the snapshot broke, so it looks now and
 * then.
 */
static int coroutine_fn backup_run_none(BackupBlockJob *s, Error **errp)
{
    Job *job = &s->common.job;
    int ret = 0;

    while (!job_is_cancelled(job) && ret == 0) {
        job_sleep_ns(job, BACKUP_SNAPSHOT_POLL_NS);
        ret = backup_check_snapshot(s, errp);
    }
    return ret;
}

static int coroutine_fn backup_flush_target(BackupBlockJob *s)
{
    Job *job = &s->common.job;
    int ret;

    for (;;) {
        ret = bdrv_co_flush(s->target);
        if (ret == 0 || !backup_error_continues(s, ret, false)) {
            return ret;
        }
        job_pause_point(job);
        if (job_is_cancelled(job)) {
            return -ECANCELED;
        }
        if (s->on_target_error == BLOCKDEV_ON_ERROR_IGNORE) {
            return 0;
        }
    }
}

static int coroutine_fn backup_run(Job *job, Error **errp)
{
    BackupBlockJob *s = to_backup(job);
    int ret;

    job_progress_set_remaining(job, block_copy_remaining_bytes(s->bcs));
    if (s->sync == MIRROR_SYNC_MODE_NONE) {
        return backup_run_none(s, errp);
    }
    if (s->sync == MIRROR_SYNC_MODE_TOP) {
        block_copy_set_skip_unallocated(s->bcs, true);
        ret = backup_scan_unallocated(s);
        block_copy_set_skip_unallocated(s->bcs, false);
        if (ret < 0) {
            return ret;
        }
        job_progress_set_remaining(job, block_copy_remaining_bytes(s->bcs));
    }

    for (;;) {
        bool error_is_read = false;

        job_pause_point(job);
        if (job_is_cancelled(job)) {
            return -ECANCELED;
        }
        ret = backup_check_snapshot(s, errp);
        if (ret < 0) {
            return ret;
        }
        ret = backup_run_call(s, &error_is_read);
        if (ret < 0 && !backup_error_continues(s, ret, error_is_read)) {
            return ret;
        }
        /* A failed copy before a guest write leaves its bits set. */
        if (ret == 0 && block_copy_remaining_bytes(s->bcs) == 0) {
            break;
        }
    }

    ret = backup_check_snapshot(s, errp);
    if (ret < 0) {
        return ret;
    }
    trace_backup_flush_target(s, bdrv_get_node_name(s->target));
    return backup_flush_target(s);
}

static void backup_end_bitmap(BackupBlockJob *s, bool success)
{
    const HBitmap *remaining =
        bdrv_dirty_bitmap_bits(block_copy_dirty_bitmap(s->bcs));

    if (s->sync_bitmap) {
        bdrv_dirty_bitmap_end_job(s->sync_bitmap, s->bitmap_mode, success,
                                  remaining);
    }
}

static void backup_commit(Job *job)
{
    backup_end_bitmap(to_backup(job), true);
}

static void backup_abort(Job *job)
{
    backup_end_bitmap(to_backup(job), false);
}

static void backup_clean(Job *job)
{
    BackupBlockJob *s = to_backup(job);

    trace_backup_clean(s, bdrv_get_node_name(s->cbw));
    /*
     * As QEMU: a concluded job kept for inspection holds no node (only
     * its id stays taken).  The backend on the filter goes first, so that
     * dropping the filter does not move it onto the source.
     */
    block_job_remove_all_bdrv(&s->common);
    bdrv_cbw_drop(g_steal_pointer(&s->cbw));
}

static const BlockJobDriver backup_job_driver = {
    .job_driver = {
        .instance_size = sizeof(BackupBlockJob),
        .job_type = JOB_TYPE_BACKUP,
        .run = backup_run,
        .pause = backup_pause,
        .commit = backup_commit,
        .abort = backup_abort,
        .clean = backup_clean,
    },
    .set_speed = backup_set_speed,
};

/* The bitmap the job will hand back at the end, frozen now. */
static bool backup_freeze_bitmap(const BackupJobOptions *opts, Error **errp)
{
    if (!opts->sync_bitmap) {
        return true;
    }
    if (opts->bitmap_mode != BITMAP_SYNC_MODE_NEVER &&
        !bdrv_dirty_bitmap_check(opts->sync_bitmap, BDRV_BITMAP_DEFAULT,
                                 errp)) {
        return false;
    }
    return bdrv_dirty_bitmap_create_successor(opts->sync_bitmap, errp);
}

static BlockDriverState *backup_insert_filter(const BackupJobOptions *opts,
                                              BlockCopyState **bcs,
                                              Error **errp)
{
    BdrvCbwOptions cbw_opts = {
        .filter_node_name = opts->filter_node_name,
        /* sync=bitmap copies the frozen bitmap; the others start full. */
        .bitmap = opts->sync == MIRROR_SYNC_MODE_BITMAP ? opts->sync_bitmap
                                                        : NULL,
        .compress = opts->compress,
        .discard_source = opts->discard_source,
        .use_copy_range = opts->use_copy_range,
        .min_cluster_size = opts->min_cluster_size,
        .on_cbw_error = opts->on_cbw_error,
        .write_behind_bytes = opts->write_behind_bytes,
        .write_behind_spill_bytes = opts->write_behind_spill_bytes,
        .write_behind_spill_dir = opts->write_behind_spill_dir,
    };

    return bdrv_cbw_append(opts->source, opts->target, &cbw_opts, bcs, errp);
}

/* Undo what backup_job_create() did before it failed. */
static void backup_undo_create(BlockDriverState *cbw,
                               BdrvDirtyBitmap *sync_bitmap)
{
    if (cbw) {
        bdrv_cbw_drop(cbw);
    }
    if (sync_bitmap) {
        bdrv_dirty_bitmap_reclaim(sync_bitmap);
    }
}

BlockJob *backup_job_create(const BackupJobOptions *opts, JobTxn *txn,
                            Error **errp)
{
    int64_t len, cluster_size;
    BlockDriverState *cbw;
    BlockCopyState *bcs;
    BackupBlockJob *s;

    if (!backup_freeze_bitmap(opts, errp)) {
        return NULL;
    }
    len = bdrv_getlength(opts->source);
    if (len != bdrv_getlength(opts->target)) {
        error_setg(errp, "Source and target image have different sizes");
        backup_undo_create(NULL, opts->sync_bitmap);
        return NULL;
    }
    cbw = backup_insert_filter(opts, &bcs, errp);
    if (!cbw) {
        backup_undo_create(NULL, opts->sync_bitmap);
        return NULL;
    }
    cluster_size = block_copy_cluster_size(bcs);
    if (opts->max_chunk && opts->max_chunk < cluster_size) {
        error_setg(errp, "Required max-chunk (%" PRIi64 ") is less than "
                   "backup cluster size (%" PRIi64 ")", opts->max_chunk,
                   cluster_size);
        backup_undo_create(cbw, opts->sync_bitmap);
        return NULL;
    }
    s = block_job_create(opts->job_id, &backup_job_driver, txn, opts->speed,
                         opts->creation_flags, NULL, NULL, errp);
    if (!s) {
        backup_undo_create(cbw, opts->sync_bitmap);
        return NULL;
    }
    /*
     * The job holds no permissions of its own (the filter does); its
     * backends pause it when one of its nodes is drained and mark the
     * nodes busy.
     */
    if (!block_job_add_bdrv(&s->common, cbw, 0, BLK_PERM_ALL, errp) ||
        !block_job_add_bdrv(&s->common, opts->target, 0, BLK_PERM_ALL,
                            errp)) {
        job_early_fail(&s->common.job);
        backup_undo_create(cbw, opts->sync_bitmap);
        return NULL;
    }
    s->cbw = cbw;
    s->target = opts->target;
    s->bcs = bcs;
    s->sync_bitmap = opts->sync_bitmap;
    s->sync = opts->sync;
    s->bitmap_mode = opts->bitmap_mode;
    s->on_source_error = opts->on_source_error;
    s->on_target_error = opts->on_target_error;
    s->max_workers = opts->max_workers;
    s->max_chunk = opts->max_chunk;
    s->len = len;
    block_copy_set_speed(bcs, opts->speed);
    block_copy_set_progress_callback(bcs, backup_progress, s);
    job_progress_set_remaining(&s->common.job, len);
    trace_backup_job_create(s, bdrv_get_node_name(opts->source),
                            bdrv_get_node_name(opts->target),
                            bdrv_get_node_name(cbw), cluster_size);
    return &s->common;
}
