/*
 * The job core: lifecycle, pausing, cancellation and transactions.
 *
 * Status machine.  job_set_status() is the only place that writes
 * job->status; it asserts the move against job_transitions[][] and emits
 * JOB_STATUS_CHANGE for named jobs when the status actually changes.  The
 * QMP verbs ask job_apply_verb(), which consults job_verbs[][].
 *
 *   created -> running -> (paused <-> running) -> [ready <-> standby]
 *           -> waiting -> pending -> concluded -> null
 *   any failure or cancel: -> aborting -> concluded -> null
 *
 * Coroutine.  job_start() creates the coroutine and wakes it through the
 * main loop, so run() begins after the caller (usually a QMP handler)
 * has returned.  job->busy is false exactly while the coroutine is parked
 * in job_do_yield(); job_enter() is the only way to re-enter it, and it
 * does so only when !busy, so a job is never woken twice.  When run()
 * returns, the rest happens in a bottom half (job_exit) on the main loop.
 *
 * Pausing.  job->pause_count counts requests (user, internal, error
 * stops); the job parks at its next pause point while the count is
 * positive.  job->user_paused records that one of them is job-pause's.
 *
 * Transactions.  A JobTxn lists its jobs in creation order.  A job that
 * finishes successfully waits ("waiting") until every member has; then
 * all go "pending" and, unless one needs job-finalize, are finalized:
 * prepare() of all, then commit()/abort() and clean() of each.  When a
 * member fails (or is cancelled), the transaction is "aborting": every
 * member still running is force-cancelled, and once the last one has
 * returned from run(), every member is finalized through abort() in
 * list order.  That is asynchronous (driven by each member's job_exit),
 * so no nested main loop runs inside a bottom half.
 *
 * Lifetime.  The job list owns one reference until dismiss; job_exit and
 * the synchronous waiters take their own while they work.
 */
#include "util/id.h"
#include "block/job.h"
#include "util/main-loop.h"
#include "util/ratelimit.h"
#include "block/jobs/trace.h"
#include "qapi/qapi-events.h"

struct JobTxn {
    GList *jobs;                    /* Job *, in creation order */
    int refcnt;
    bool aborting;                  /* a member failed or was cancelled */
};

/* All jobs, newest first (query-jobs lists them in this order). */
static GList *jobs;

/* job_transitions[from][to]: the legal moves. */
static const bool job_transitions[JOB_STATUS__MAX][JOB_STATUS__MAX] = {
    [JOB_STATUS_UNDEFINED] = {
        [JOB_STATUS_CREATED] = true,
    },
    [JOB_STATUS_CREATED] = {
        [JOB_STATUS_RUNNING] = true,
        [JOB_STATUS_ABORTING] = true,
        [JOB_STATUS_NULL] = true,
    },
    [JOB_STATUS_RUNNING] = {
        [JOB_STATUS_PAUSED] = true,
        [JOB_STATUS_READY] = true,
        [JOB_STATUS_WAITING] = true,
        [JOB_STATUS_ABORTING] = true,
    },
    [JOB_STATUS_PAUSED] = {
        [JOB_STATUS_RUNNING] = true,
    },
    [JOB_STATUS_READY] = {
        [JOB_STATUS_STANDBY] = true,
        [JOB_STATUS_WAITING] = true,
        [JOB_STATUS_ABORTING] = true,
    },
    [JOB_STATUS_STANDBY] = {
        [JOB_STATUS_READY] = true,
    },
    [JOB_STATUS_WAITING] = {
        [JOB_STATUS_PENDING] = true,
        [JOB_STATUS_ABORTING] = true,
    },
    [JOB_STATUS_PENDING] = {
        [JOB_STATUS_ABORTING] = true,
        [JOB_STATUS_CONCLUDED] = true,
    },
    [JOB_STATUS_ABORTING] = {
        [JOB_STATUS_ABORTING] = true,
        [JOB_STATUS_CONCLUDED] = true,
    },
    [JOB_STATUS_CONCLUDED] = {
        [JOB_STATUS_NULL] = true,
    },
    [JOB_STATUS_NULL] = { false },
};

/* The states in which a job is still alive and can be controlled. */
#define JOB_ACTIVE_STATES                                               \
    [JOB_STATUS_CREATED] = true, [JOB_STATUS_RUNNING] = true,           \
    [JOB_STATUS_PAUSED] = true, [JOB_STATUS_READY] = true,              \
    [JOB_STATUS_STANDBY] = true

/* job_verbs[verb][status]: which commands each status accepts. */
static const bool job_verbs[JOB_VERB__MAX][JOB_STATUS__MAX] = {
    [JOB_VERB_CANCEL] = {
        JOB_ACTIVE_STATES,
        [JOB_STATUS_WAITING] = true,
        [JOB_STATUS_PENDING] = true,
    },
    [JOB_VERB_PAUSE] = { JOB_ACTIVE_STATES },
    [JOB_VERB_RESUME] = { JOB_ACTIVE_STATES },
    [JOB_VERB_SET_SPEED] = { JOB_ACTIVE_STATES },
    [JOB_VERB_COMPLETE] = {
        [JOB_STATUS_READY] = true,
        [JOB_STATUS_STANDBY] = true,
    },
    [JOB_VERB_FINALIZE] = {
        [JOB_STATUS_PENDING] = true,
    },
    [JOB_VERB_DISMISS] = {
        [JOB_STATUS_CONCLUDED] = true,
    },
};

bool job_transition_allowed(JobStatus from, JobStatus to)
{
    g_assert(from < JOB_STATUS__MAX && to < JOB_STATUS__MAX);
    return job_transitions[from][to];
}

bool job_verb_allowed(JobVerb verb, JobStatus status)
{
    g_assert(verb < JOB_VERB__MAX && status < JOB_STATUS__MAX);
    return job_verbs[verb][status];
}

static void job_set_status(Job *job, JobStatus to)
{
    JobStatus from = job->status;

    g_assert(job_transition_allowed(from, to));
    trace_job_set_status(job, job->id, JobStatus_str(from),
                         JobStatus_str(to));
    job->status = to;
    if (!job_is_internal(job) && from != to) {
        qapi_event_send_job_status_change(job->id, to);
    }
}

bool job_apply_verb(Job *job, JobVerb verb, Error **errp)
{
    if (job_verb_allowed(verb, job->status)) {
        return true;
    }
    error_setg(errp, "Job '%s' in state '%s' cannot accept command verb "
               "'%s'", job->id, JobStatus_str(job->status),
               JobVerb_str(verb));
    return false;
}

/* Queries */

JobType job_type(const Job *job)
{
    return job->driver->job_type;
}

const char *job_type_str(const Job *job)
{
    return JobType_str(job_type(job));
}

bool job_is_internal(const Job *job)
{
    return job->id == NULL;
}

bool job_is_cancelled(const Job *job)
{
    return job->cancelled && job->force_cancel;
}

bool job_cancel_requested(const Job *job)
{
    return job->cancelled;
}

bool job_is_completed(const Job *job)
{
    switch (job->status) {
    case JOB_STATUS_WAITING:
    case JOB_STATUS_PENDING:
    case JOB_STATUS_ABORTING:
    case JOB_STATUS_CONCLUDED:
    case JOB_STATUS_NULL:
        return true;
    default:
        return false;
    }
}

bool job_is_ready(const Job *job)
{
    return job->status == JOB_STATUS_READY ||
           job->status == JOB_STATUS_STANDBY;
}

bool job_user_paused(const Job *job)
{
    return job->user_paused;
}

static bool job_started(const Job *job)
{
    return job->co != NULL;
}

Job *job_get(const char *id)
{
    for (GList *l = jobs; l; l = l->next) {
        Job *job = l->data;

        if (job->id && strcmp(job->id, id) == 0) {
            return job;
        }
    }
    return NULL;
}

Job *job_next(Job *job)
{
    GList *l;

    if (!job) {
        return jobs ? jobs->data : NULL;
    }
    l = g_list_find(jobs, job);
    g_assert(l);
    return l->next ? l->next->data : NULL;
}

/* Progress */

void job_progress_update(Job *job, uint64_t done)
{
    job->progress_current += done;
    trace_job_progress_update(job, done, job->progress_current,
                              job->progress_total);
}

void job_progress_set_remaining(Job *job, uint64_t remaining)
{
    job->progress_total = job->progress_current + remaining;
    trace_job_progress_set_remaining(job, remaining, job->progress_current,
                                     job->progress_total);
}

void job_progress_increase_remaining(Job *job, uint64_t delta)
{
    job->progress_total += delta;
}

/* Transactions */

JobTxn *job_txn_new(void)
{
    JobTxn *txn = g_new0(JobTxn, 1);

    txn->refcnt = 1;
    return txn;
}

static void job_txn_ref(JobTxn *txn)
{
    txn->refcnt++;
}

void job_txn_unref(JobTxn *txn)
{
    if (txn && --txn->refcnt == 0) {
        g_assert(txn->jobs == NULL);
        g_free(txn);
    }
}

static void job_txn_add_job(JobTxn *txn, Job *job)
{
    g_assert(!job->txn);
    job->txn = txn;
    txn->jobs = g_list_append(txn->jobs, job);
    job_txn_ref(txn);
}

static void job_txn_del_job(Job *job)
{
    JobTxn *txn = job->txn;

    if (txn) {
        txn->jobs = g_list_remove(txn->jobs, job);
        job->txn = NULL;
        job_txn_unref(txn);
    }
}

/* Creation and lifetime */

void *job_create(const char *job_id, const JobDriver *driver, JobTxn *txn,
                 int flags, JobCompletionFunc *cb, void *opaque,
                 Error **errp)
{
    Job *job;

    g_assert(driver->instance_size >= sizeof(Job));
    g_assert(driver->run);
    if (job_id) {
        if (flags & JOB_INTERNAL) {
            error_setg(errp, "Cannot specify job ID for internal job");
            return NULL;
        }
        if (!id_wellformed(job_id)) {
            error_setg(errp, "Invalid job ID '%s'", job_id);
            return NULL;
        }
        if (job_get(job_id)) {
            error_setg(errp, "Job ID '%s' already in use", job_id);
            return NULL;
        }
    } else if (!(flags & JOB_INTERNAL)) {
        error_setg(errp, "An explicit job ID is required");
        return NULL;
    }

    job = g_malloc0(driver->instance_size);
    job->id = g_strdup(job_id);
    job->driver = driver;
    job->auto_finalize = !(flags & JOB_MANUAL_FINALIZE);
    job->auto_dismiss = !(flags & JOB_MANUAL_DISMISS);
    job->cb = cb;
    job->opaque = opaque;
    job->refcnt = 1;
    /* Created jobs count as paused until job_start(). */
    job->pause_count = 1;
    job->paused = true;
    job->status = JOB_STATUS_UNDEFINED;
    job_set_status(job, JOB_STATUS_CREATED);

    jobs = g_list_prepend(jobs, job);
    if (txn) {
        job_txn_add_job(txn, job);
    } else {
        txn = job_txn_new();
        job_txn_add_job(txn, job);
        job_txn_unref(txn);
    }
    return job;
}

void job_ref(Job *job)
{
    job->refcnt++;
}

void job_unref(Job *job)
{
    g_assert(job->refcnt > 0);
    if (--job->refcnt > 0) {
        return;
    }
    g_assert(job->status == JOB_STATUS_NULL);
    g_assert(!job->txn);
    g_assert(!job->sleep_timer);
    if (job->hooks && job->hooks->on_free) {
        job->hooks->on_free(job);
    }
    if (job->driver->free) {
        job->driver->free(job);
    }
    error_free(job->err);
    g_free(job->id);
    g_free(job);
}

/* Dismiss: the job leaves the list and its id becomes free again. */
static void job_do_dismiss(Job *job)
{
    job->busy = false;
    job->paused = false;
    job->deferred_to_main_loop = true;
    job_txn_del_job(job);
    job_set_status(job, JOB_STATUS_NULL);
    jobs = g_list_remove(jobs, job);
    job_unref(job);
}

void job_early_fail(Job *job)
{
    g_assert(job->status == JOB_STATUS_CREATED);
    job_do_dismiss(job);
}

/* Waking and parking the coroutine */

static gboolean job_sleep_timer_cb(gpointer opaque)
{
    Job *job = opaque;

    job->sleep_timer = 0;
    job_enter(job);
    return G_SOURCE_REMOVE;
}

static void job_enter_cond(Job *job, bool only_if_no_timer)
{
    if (!job_started(job) || job->deferred_to_main_loop || job->busy) {
        return;
    }
    if (job->sleep_timer) {
        if (only_if_no_timer) {
            return;
        }
        g_source_remove(job->sleep_timer);
        job->sleep_timer = 0;
    }
    job->busy = true;
    coroutine_wake(job->co);
}

void job_enter(Job *job)
{
    job_enter_cond(job, false);
}

/* Whoever waits for the job to stop being busy (a drain) looks again. */
static void job_notify_idle(Job *job)
{
    if (job->hooks && job->hooks->on_idle) {
        job->hooks->on_idle(job);
    }
}

/* Park until job_enter(), or until @deadline_ns (-1: no deadline). */
static void coroutine_fn job_do_yield(Job *job, int64_t deadline_ns)
{
    g_assert(job->busy);
    if (deadline_ns >= 0) {
        int64_t delta = MAX(deadline_ns - clock_now_ns(), 0);

        job->sleep_timer = g_timeout_add(DIV_ROUND_UP(delta, 1000000),
                                         job_sleep_timer_cb, job);
    }
    job->busy = false;
    job_notify_idle(job);
    coroutine_yield();
    /* job_enter_cond() set busy before waking us. */
    g_assert(job->busy);
}

static bool job_should_pause(const Job *job)
{
    return job->pause_count > 0;
}

void coroutine_fn job_pause_point(Job *job)
{
    JobStatus before;

    g_assert(job->co == coroutine_self());
    if (!job_should_pause(job) || job_is_cancelled(job)) {
        return;
    }
    if (job->driver->pause) {
        job->driver->pause(job);
    }
    before = job->status;
    if (before == JOB_STATUS_RUNNING) {
        job_set_status(job, JOB_STATUS_PAUSED);
    } else if (before == JOB_STATUS_READY) {
        job_set_status(job, JOB_STATUS_STANDBY);
    }
    job->paused = true;
    job_do_yield(job, -1);
    job->paused = false;
    job_set_status(job, before);
    if (job->driver->resume) {
        job->driver->resume(job);
    }
}

void coroutine_fn job_sleep_ns(Job *job, int64_t ns)
{
    g_assert(job->busy);
    if (job_is_cancelled(job)) {
        return;
    }
    if (!job_should_pause(job)) {
        job_do_yield(job, clock_now_ns() + ns);
    }
    job_pause_point(job);
}

void coroutine_fn job_yield(Job *job)
{
    g_assert(job->busy);
    if (job_is_cancelled(job)) {
        return;
    }
    if (!job_should_pause(job)) {
        job_do_yield(job, -1);
    }
    job_pause_point(job);
}

void job_pause(Job *job)
{
    job->pause_count++;
    if (!job->paused) {
        job_enter(job);
    }
}

void job_resume(Job *job)
{
    g_assert(job->pause_count > 0);
    if (--job->pause_count > 0) {
        return;
    }
    /* A sleeping job wakes at its deadline; do not cut the sleep short. */
    job_enter_cond(job, true);
}

void job_transition_to_ready(Job *job)
{
    job_set_status(job, JOB_STATUS_READY);
    if (job->hooks && job->hooks->on_ready) {
        job->hooks->on_ready(job);
    }
}

/* Running and completing */

static void job_exit(void *opaque);

static void coroutine_fn job_co_entry(void *opaque)
{
    Job *job = opaque;

    /* A job paused before it started does no work until resumed. */
    job_pause_point(job);
    job->ret = job->driver->run(job, &job->err);
    job->deferred_to_main_loop = true;
    job->busy = true;
    bh_schedule(job_exit, job);
}

void job_start(Job *job)
{
    g_assert(job->status == JOB_STATUS_CREATED && !job_started(job));
    job->co = coroutine_create(job_co_entry, job);
    job->pause_count--;
    job->busy = true;
    job->paused = false;
    job_set_status(job, JOB_STATUS_RUNNING);
    coroutine_wake(job->co);
}

/* Turn the result into the final one: a cancelled job failed. */
static void job_update_rc(Job *job)
{
    if (!job->ret && job_is_cancelled(job)) {
        job->ret = -ECANCELED;
    }
    if (job->ret) {
        if (!job->err) {
            error_setg(&job->err, "%s", g_strerror(-job->ret));
        }
        job_set_status(job, JOB_STATUS_ABORTING);
    }
}

static void job_conclude(Job *job)
{
    job_set_status(job, JOB_STATUS_CONCLUDED);
    if (job->auto_dismiss || !job_started(job)) {
        job_do_dismiss(job);
    }
}

static void job_finalize_single(Job *job)
{
    g_assert(job_is_completed(job));
    if (!job->ret) {
        if (job->driver->commit) {
            job->driver->commit(job);
        }
    } else if (job->driver->abort) {
        job->driver->abort(job);
    }
    if (job->driver->clean) {
        job->driver->clean(job);
    }
    if (job->cb) {
        job->cb(job->opaque, job->ret);
    }
    /* Jobs that never ran report nothing beyond their status. */
    if (job_started(job) && job->hooks) {
        if (job_is_cancelled(job)) {
            if (job->hooks->on_finalize_cancelled) {
                job->hooks->on_finalize_cancelled(job);
            }
        } else if (job->hooks->on_finalize_completed) {
            job->hooks->on_finalize_completed(job);
        }
    }
    job_txn_del_job(job);
    job_conclude(job);
}

/*
 * Once every member of an aborting transaction has returned from run(),
 * finalize them all through abort().  Members that had finished well
 * are failed as cancelled.
 */
static void job_txn_abort_finish(JobTxn *txn)
{
    for (GList *l = txn->jobs; l; l = l->next) {
        if (!job_is_completed(l->data)) {
            return;
        }
    }
    job_txn_ref(txn);
    for (GList *l = txn->jobs; l; l = l->next) {
        Job *job = l->data;

        job_ref(job);
        if (job->status != JOB_STATUS_ABORTING) {
            job->cancelled = true;
            job->force_cancel = true;
            job_update_rc(job);
        }
    }
    while (txn->jobs) {
        Job *job = txn->jobs->data;

        job_finalize_single(job);
        job_unref(job);
    }
    job_txn_unref(txn);
}

static void job_cancel_async(Job *job, bool force);

static void job_completed_txn_abort(Job *job)
{
    JobTxn *txn = job->txn;

    if (!txn->aborting) {
        txn->aborting = true;
        /* Nothing the others produce matters any more: stop them fast. */
        for (GList *l = txn->jobs; l; l = l->next) {
            Job *other = l->data;

            if (other != job && !job_is_completed(other)) {
                job_cancel_async(other, true);
                job_enter(other);
            }
        }
    }
    job_txn_abort_finish(txn);
}

static int job_prepare(Job *job)
{
    if (job->ret == 0 && job->driver->prepare) {
        job->ret = job->driver->prepare(job);
        job_update_rc(job);
    }
    return job->ret;
}

static void job_do_finalize(Job *job)
{
    JobTxn *txn = job->txn;
    int rc = 0;

    g_assert(job->status == JOB_STATUS_PENDING);
    for (GList *l = txn->jobs; l && !rc; l = l->next) {
        rc = job_prepare(l->data);
    }
    if (rc) {
        job_completed_txn_abort(job);
        return;
    }
    job_txn_ref(txn);
    while (txn->jobs) {
        Job *other = txn->jobs->data;

        job_ref(other);
        job_finalize_single(other);
        job_unref(other);
    }
    job_txn_unref(txn);
}

static void job_completed_txn_success(Job *job)
{
    JobTxn *txn = job->txn;
    bool manual = false;

    job_set_status(job, JOB_STATUS_WAITING);
    for (GList *l = txn->jobs; l; l = l->next) {
        if (!job_is_completed(l->data)) {
            return;
        }
    }
    for (GList *l = txn->jobs; l; l = l->next) {
        Job *other = l->data;

        g_assert(other->ret == 0);
        job_set_status(other, JOB_STATUS_PENDING);
        if (!other->auto_finalize) {
            manual = true;
            if (other->hooks && other->hooks->on_pending) {
                other->hooks->on_pending(other);
            }
        }
    }
    if (!manual) {
        job_do_finalize(job);
    }
}

static void job_completed(Job *job)
{
    g_assert(!job_is_completed(job));
    job_update_rc(job);
    if (job->ret) {
        job_completed_txn_abort(job);
    } else {
        job_completed_txn_success(job);
    }
}

static void job_exit(void *opaque)
{
    Job *job = opaque;

    job_ref(job);
    job->busy = false;
    job_notify_idle(job);
    job_completed(job);
    job_unref(job);
}

/* Cancelling */

static void job_cancel_async(Job *job, bool force)
{
    if (job->driver->cancel) {
        force = job->driver->cancel(job, force);
    } else {
        force = true;
    }
    if (job->user_paused) {
        if (job->hooks && job->hooks->on_user_resume) {
            job->hooks->on_user_resume(job);
        }
        if (job->driver->user_resume) {
            job->driver->user_resume(job);
        }
        job->user_paused = false;
        g_assert(job->pause_count > 0);
        job->pause_count--;
    }
    /* A soft cancel of a job that has already finished is a no-op. */
    if (force || !job->deferred_to_main_loop) {
        job->cancelled = true;
        job->force_cancel |= force;
    }
}

void job_cancel(Job *job, bool force)
{
    if (job->status == JOB_STATUS_CONCLUDED) {
        job_do_dismiss(job);
        return;
    }
    job_cancel_async(job, force);
    if (!job_started(job)) {
        job_completed(job);
    } else if (job->deferred_to_main_loop) {
        /*
         * run() has returned.  If job_exit has not run yet, it will see
         * the cancel; if the job waits for its transaction, abort it.
         */
        if (job_is_cancelled(job) && job_is_completed(job)) {
            job_completed_txn_abort(job);
        }
    } else {
        job_enter(job);
    }
}

void job_user_cancel(Job *job, bool force, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_CANCEL, errp)) {
        return;
    }
    job_cancel(job, force);
}

/* The other QMP verbs */

void job_user_pause(Job *job, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_PAUSE, errp)) {
        return;
    }
    if (job->user_paused) {
        error_setg(errp, "Job is already paused");
        return;
    }
    job->user_paused = true;
    job_pause(job);
}

void job_user_resume(Job *job, Error **errp)
{
    if (!job->user_paused || job->pause_count <= 0) {
        error_setg(errp, "Can't resume a job that was not paused");
        return;
    }
    if (!job_apply_verb(job, JOB_VERB_RESUME, errp)) {
        return;
    }
    if (job->hooks && job->hooks->on_user_resume) {
        job->hooks->on_user_resume(job);
    }
    if (job->driver->user_resume) {
        job->driver->user_resume(job);
    }
    job->user_paused = false;
    job_resume(job);
}

void job_complete(Job *job, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_COMPLETE, errp)) {
        return;
    }
    if (job_cancel_requested(job) || !job->driver->complete) {
        error_setg(errp, "The active block job '%s' cannot be completed",
                   job->id);
        return;
    }
    job->driver->complete(job, errp);
}

void job_finalize(Job *job, Error **errp)
{
    if (!job_apply_verb(job, JOB_VERB_FINALIZE, errp)) {
        return;
    }
    job_do_finalize(job);
}

void job_dismiss(Job **jobptr, Error **errp)
{
    Job *job = *jobptr;

    if (!job_apply_verb(job, JOB_VERB_DISMISS, errp)) {
        return;
    }
    job_do_dismiss(job);
    *jobptr = NULL;
}

/* Synchronous helpers (main loop, not coroutine context) */

int job_finish_sync(Job *job, void (*finish)(Job *job, Error **errp),
                    Error **errp)
{
    Error *local_err = NULL;
    int ret;

    g_assert(!in_coroutine());
    job_ref(job);
    if (finish) {
        finish(job, &local_err);
    }
    if (local_err) {
        error_propagate(errp, local_err);
        job_unref(job);
        return -EBUSY;
    }
    job_enter(job);
    while (!job_is_completed(job)) {
        main_loop_wait(true);
    }
    ret = (job_cancel_requested(job) && job->ret == 0) ? -ECANCELED
                                                        : job->ret;
    job_unref(job);
    return ret;
}

static void job_cancel_force(Job *job, Error **errp)
{
    job_cancel(job, true);
}

static void job_cancel_soft(Job *job, Error **errp)
{
    job_cancel(job, false);
}

int job_cancel_sync(Job *job, bool force)
{
    return job_finish_sync(job, force ? job_cancel_force : job_cancel_soft,
                           NULL);
}

int job_complete_sync(Job *job, Error **errp)
{
    return job_finish_sync(job, job_complete, errp);
}

void job_cancel_sync_all(void)
{
    Job *job;

    while ((job = job_next(NULL))) {
        job_ref(job);
        if (job->status != JOB_STATUS_CONCLUDED && !job_is_completed(job)) {
            job_cancel_sync(job, true);
        } else if (job->status != JOB_STATUS_CONCLUDED) {
            job_cancel(job, true);
        }
        /* Members of an aborting transaction wait for each other. */
        while (job->status != JOB_STATUS_CONCLUDED &&
               job->status != JOB_STATUS_NULL) {
            main_loop_wait(true);
        }
        if (job->status == JOB_STATUS_CONCLUDED) {
            job_do_dismiss(job);
        }
        job_unref(job);
    }
}

/* QMP */

JobInfo *job_query_single(Job *job)
{
    JobInfo *info = g_new0(JobInfo, 1);

    g_assert(!job_is_internal(job));
    info->id = g_strdup(job->id);
    info->type = job_type(job);
    info->status = job->status;
    info->current_progress = job->progress_current;
    info->total_progress = job->progress_total;
    info->error = job->err ? g_strdup(error_get_pretty(job->err)) : NULL;
    return info;
}
