/*
 * Block jobs on top of the job core (block/jobs/job.c).
 *
 * What a block job adds to a job: a rate limit, the io-status of error
 * stops, the backends through which it uses nodes, and the BLOCK_JOB_*
 * events, which the core triggers through JobHooks at the points QEMU
 * emits them (finalization, pending, ready).  Jobs without an id are
 * internal and emit nothing.
 *
 * The rate limit is enforced cooperatively: the job's loop charges the
 * bytes it processed and sleeps (job_sleep_ns, so pause and cancel still
 * work) for as long as ratelimit_delay() says.
 */
#include "block/blockjob.h"
#include "block/block-backend.h"
#include "block/block_int.h"
#include "qapi/qapi-events.h"

static void block_job_event_cancelled(Job *job)
{
    BlockJob *bjob = container_of(job, BlockJob, job);

    if (job_is_internal(job)) {
        return;
    }
    qapi_event_send_block_job_cancelled(job_type(job), job->id,
                                        job->progress_total,
                                        job->progress_current, bjob->speed);
}

static void block_job_event_completed(Job *job)
{
    BlockJob *bjob = container_of(job, BlockJob, job);
    const char *msg = NULL;

    if (job_is_internal(job)) {
        return;
    }
    if (job->ret < 0) {
        msg = error_get_pretty(job->err);
    }
    qapi_event_send_block_job_completed(job_type(job), job->id,
                                        job->progress_total,
                                        job->progress_current, bjob->speed,
                                        msg);
}

static void block_job_event_pending(Job *job)
{
    if (!job_is_internal(job)) {
        qapi_event_send_block_job_pending(job_type(job), job->id);
    }
}

static void block_job_event_ready(Job *job)
{
    BlockJob *bjob = container_of(job, BlockJob, job);

    if (!job_is_internal(job)) {
        qapi_event_send_block_job_ready(job_type(job), job->id,
                                        job->progress_total,
                                        job->progress_current, bjob->speed);
    }
}

static void block_job_user_resume(Job *job)
{
    BlockJob *bjob = container_of(job, BlockJob, job);

    bjob->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
}

static void block_job_release_backend(gpointer data)
{
    BlockBackend *blk = data;

    bdrv_op_unblock(blk_bs(blk));
    blk_unref(blk);
}

void block_job_remove_all_bdrv(BlockJob *job)
{
    g_slist_free_full(g_steal_pointer(&job->backends),
                      block_job_release_backend);
}

/* A drain polls block_job_drained_poll(): tell it to look again. */
static void block_job_idle(Job *job)
{
    bdrv_wake_drainers();
}

static void block_job_free(Job *job)
{
    block_job_remove_all_bdrv(container_of(job, BlockJob, job));
}

static const JobHooks block_job_hooks = {
    .on_finalize_cancelled = block_job_event_cancelled,
    .on_finalize_completed = block_job_event_completed,
    .on_pending = block_job_event_pending,
    .on_ready = block_job_event_ready,
    .on_user_resume = block_job_user_resume,
    .on_idle = block_job_idle,
    .on_free = block_job_free,
};

bool is_block_job(const Job *job)
{
    switch (job_type(job)) {
    case JOB_TYPE_BACKUP:
    case JOB_TYPE_COMMIT:
    case JOB_TYPE_MIRROR:
    case JOB_TYPE_STREAM:
        return true;
    default:
        return false;
    }
}

BlockJob *block_job_get(const char *id)
{
    Job *job = job_get(id);

    if (job && is_block_job(job)) {
        return container_of(job, BlockJob, job);
    }
    return NULL;
}

static bool block_job_check_speed(int64_t speed, Error **errp)
{
    if (speed < 0) {
        error_setg(errp, "Parameter 'speed' expects a non-negative value");
        return false;
    }
    return true;
}

void *block_job_create(const char *job_id, const BlockJobDriver *driver,
                       JobTxn *txn, int64_t speed, int flags,
                       JobCompletionFunc *cb, void *opaque, Error **errp)
{
    BlockJob *bjob;

    g_assert(driver->job_driver.instance_size >= sizeof(BlockJob));
    if (!block_job_check_speed(speed, errp)) {
        return NULL;
    }
    bjob = job_create(job_id, &driver->job_driver, txn, flags, cb, opaque,
                      errp);
    if (!bjob) {
        return NULL;
    }
    g_assert(is_block_job(&bjob->job));
    bjob->job.hooks = &block_job_hooks;
    bjob->speed = speed;
    ratelimit_set_speed(&bjob->limit, speed);
    bjob->iostatus = BLOCK_DEVICE_IO_STATUS_OK;
    return bjob;
}

/*
 * A drained node below one of the job's backends pauses the job at its
 * next pause point; the drain waits until it got there (or sleeps, which
 * ends in a pause point).
 */
static void block_job_drained_begin(void *opaque)
{
    job_pause(opaque);
}

static void block_job_drained_end(void *opaque)
{
    job_resume(opaque);
}

static bool block_job_drained_poll(void *opaque)
{
    Job *job = opaque;

    return job->busy;
}

static const BlockBackendDrainOps block_job_drain_ops = {
    .drained_begin = block_job_drained_begin,
    .drained_end = block_job_drained_end,
    .drained_poll = block_job_drained_poll,
};

BlockBackend *block_job_add_bdrv(BlockJob *job, BlockDriverState *bs,
                                 uint64_t perm, uint64_t shared_perm,
                                 Error **errp)
{
    g_autofree char *user = g_strdup_printf("%s job '%s'",
                                            job_type_str(&job->job),
                                            job->job.id ? job->job.id : "");
    g_autofree char *reason = NULL;
    BlockBackend *blk = blk_new_with_bs(bs, user, perm, shared_perm, errp);

    if (blk) {
        blk_set_drain_ops(blk, &block_job_drain_ops, &job->job);
        job->backends = g_slist_prepend(job->backends, blk);
        reason = g_strdup_printf("block device is in use by block job: %s",
                                 job_type_str(&job->job));
        bdrv_op_block(bs, reason);
    }
    return blk;
}

bool block_job_set_speed(BlockJob *job, int64_t speed, Error **errp)
{
    const BlockJobDriver *driver =
        container_of(job->job.driver, BlockJobDriver, job_driver);
    int64_t old_speed = job->speed;

    if (!block_job_check_speed(speed, errp) ||
        !job_apply_verb(&job->job, JOB_VERB_SET_SPEED, errp)) {
        return false;
    }
    job->speed = speed;
    ratelimit_set_speed(&job->limit, speed);
    if (driver->set_speed) {
        driver->set_speed(job, speed);
    }
    if (speed && speed <= old_speed) {
        return true;
    }
    /* Faster now: a job sleeping off the old limit may go on at once. */
    if (job->job.sleep_timer) {
        job_enter(&job->job);
    }
    return true;
}

void block_job_ratelimit_processed_bytes(BlockJob *job, uint64_t n)
{
    ratelimit_account(&job->limit, n);
}

void coroutine_fn block_job_ratelimit_sleep(BlockJob *job)
{
    int64_t delay;

    /* The limit may change while we sleep; ask again each time. */
    do {
        delay = ratelimit_delay(&job->limit, clock_now_ns());
        job_sleep_ns(&job->job, delay);
    } while (delay && !job_is_cancelled(&job->job));
}

BlockErrorAction block_job_error_policy(BlockdevOnError on_err, int error)
{
    switch (on_err) {
    case BLOCKDEV_ON_ERROR_ENOSPC:
    case BLOCKDEV_ON_ERROR_AUTO:
        return error == ENOSPC ? BLOCK_ERROR_ACTION_STOP
                               : BLOCK_ERROR_ACTION_REPORT;
    case BLOCKDEV_ON_ERROR_STOP:
        return BLOCK_ERROR_ACTION_STOP;
    case BLOCKDEV_ON_ERROR_IGNORE:
        return BLOCK_ERROR_ACTION_IGNORE;
    default:
        return BLOCK_ERROR_ACTION_REPORT;
    }
}

void block_job_error_action(BlockJob *job, BlockErrorAction action,
                            bool is_read, int error)
{
    if (!job_is_internal(&job->job)) {
        qapi_event_send_block_job_error(job->job.id,
                                        is_read ? IO_OPERATION_TYPE_READ
                                                : IO_OPERATION_TYPE_WRITE,
                                        action);
    }
    if (action == BLOCK_ERROR_ACTION_STOP) {
        if (!job->job.user_paused) {
            job->job.user_paused = true;
            job_pause(&job->job);
        }
        if (job->iostatus == BLOCK_DEVICE_IO_STATUS_OK) {
            job->iostatus = error == ENOSPC ? BLOCK_DEVICE_IO_STATUS_NOSPACE
                                            : BLOCK_DEVICE_IO_STATUS_FAILED;
        }
    }
}

BlockJobInfo *block_job_query(BlockJob *bjob)
{
    Job *job = &bjob->job;
    BlockJobInfo *info = g_new0(BlockJobInfo, 1);

    g_assert(!job_is_internal(job));
    info->type = g_strdup(job_type_str(job));
    info->device = g_strdup(job->id);
    info->len = job->progress_total;
    info->offset = job->progress_current;
    info->busy = job->busy;
    info->paused = job->pause_count > 0;
    info->speed = bjob->speed;
    info->io_status = bjob->iostatus;
    info->ready = job_is_ready(job);
    info->status = job->status;
    info->auto_finalize = job->auto_finalize;
    info->auto_dismiss = job->auto_dismiss;
    info->error = job->err ? g_strdup(error_get_pretty(job->err)) : NULL;
    return info;
}
