/*
 * Jobs: long-running background operations (image creation, and later
 * backup, mirror, commit, ...) with a QMP-visible lifecycle.
 *
 * A job runs its driver's run() function in a coroutine.  Its status
 * follows the state machine of QEMU's jobs (docs/devel/jobs.rst); every
 * transition is checked against a status x status table, and every QMP
 * verb against a verb x status table, so that an impossible move is an
 * assertion failure and a refused command gets QEMU's message.
 *
 * Jobs complete in transactions (JobTxn): a job alone is a transaction
 * of one.  No member is finalized before all have finished; if one fails
 * or is cancelled, the others are force-cancelled and every member is
 * finalized through abort().
 *
 * Everything here runs on the main thread; nothing is locked.  Functions
 * marked coroutine_fn may only be called from the job's own coroutine.
 */
#ifndef BLOCK_JOB_H
#define BLOCK_JOB_H

#include "util/coroutine.h"
#include "util/error.h"
#include "qapi/qapi-types.h"

typedef struct Job Job;
typedef struct JobTxn JobTxn;
typedef struct JobDriver JobDriver;

typedef enum JobCreateFlags {
    JOB_DEFAULT = 0x0,
    /* No id, no events, invisible to QMP. */
    JOB_INTERNAL = 0x1,
    /* Stop in "pending" until job-finalize (auto-finalize=false). */
    JOB_MANUAL_FINALIZE = 0x2,
    /* Stay "concluded" until job-dismiss (auto-dismiss=false). */
    JOB_MANUAL_DISMISS = 0x4,
} JobCreateFlags;

/* Called at finalization with the job's result (0 or -errno). */
typedef void JobCompletionFunc(void *opaque, int ret);

struct JobDriver {
    /* Size of the job structure (embedding Job first). */
    size_t instance_size;
    JobType job_type;

    /*
     * The job's work.  Returns 0 or -errno (setting *errp, else the
     * message is strerror()).  It should call job_pause_point() or
     * job_sleep_ns() regularly and return soon once job_is_cancelled().
     */
    int coroutine_fn (*run)(Job *job, Error **errp);

    /* Optional: the job is about to park at a pause point / leaves it. */
    void coroutine_fn (*pause)(Job *job);
    void coroutine_fn (*resume)(Job *job);
    /* Optional: job-resume was accepted (before the job is woken). */
    void (*user_resume)(Job *job);

    /* Optional: job-complete on a ready job (mirror's pivot). */
    void (*complete)(Job *job, Error **errp);

    /*
     * Optional: a cancel request.  Returns whether it is to be treated
     * as a forced one (a driver without the callback always forces).
     */
    bool (*cancel)(Job *job, bool force);

    /*
     * Finalization, once every job of the transaction has finished:
     * prepare() (may still fail the transaction), then commit() on
     * success or abort() on failure, then clean() always.
     */
    int (*prepare)(Job *job);
    void (*commit)(Job *job);
    void (*abort)(Job *job);
    void (*clean)(Job *job);

    /* Optional: release driver state when the last reference goes. */
    void (*free)(Job *job);
};

/*
 * Hooks for a job "class" layered on top of Job (BlockJob uses them for
 * the BLOCK_JOB_* events).  Every hook is optional.
 */
typedef struct JobHooks {
    void (*on_finalize_cancelled)(Job *job);
    void (*on_finalize_completed)(Job *job);
    void (*on_pending)(Job *job);
    void (*on_ready)(Job *job);
    void (*on_user_resume)(Job *job);
    /* The coroutine parked or ended: the job is no longer busy. */
    void (*on_idle)(Job *job);
    void (*on_free)(Job *job);
} JobHooks;

struct Job {
    /* Set at creation and never changed. */
    char *id;                       /* NULL for internal jobs */
    const JobDriver *driver;
    const JobHooks *hooks;          /* may be NULL */
    bool auto_finalize;
    bool auto_dismiss;
    JobCompletionFunc *cb;
    void *opaque;

    /* Main loop only (the job core is single-threaded). */
    int refcnt;
    JobStatus status;
    Coroutine *co;                  /* NULL until job_start() */
    /* Pause requests: the user's, internal ones and error stops. */
    int pause_count;
    bool user_paused;               /* one of them is job-pause's */
    bool paused;                    /* parked at a pause point */
    bool busy;                      /* the coroutine is not parked */
    bool cancelled;                 /* a cancel was requested */
    bool force_cancel;              /* ... and it was a forced one */
    bool deferred_to_main_loop;     /* run() returned */
    guint sleep_timer;              /* GLib source id while sleeping */
    int ret;                        /* run()'s result, then the job's */
    Error *err;                     /* set iff the job failed */
    uint64_t progress_current;
    uint64_t progress_total;

    JobTxn *txn;
};

/*
 * job_create:
 * @job_id: the id, or NULL for an internal job (@flags has JOB_INTERNAL)
 * @txn: transaction to join, or NULL for a transaction of its own
 * @flags: JobCreateFlags
 * @cb: called at finalization (may be NULL)
 *
 * Allocate driver->instance_size bytes, check the id (QEMU's "Invalid
 * job ID" / "Job ID '...' already in use"), and enter "created" (which
 * emits JOB_STATUS_CHANGE).  The job holds one reference, owned by the
 * job list until the job is dismissed.  Returns NULL on error.
 */
void *job_create(const char *job_id, const JobDriver *driver, JobTxn *txn,
                 int flags, JobCompletionFunc *cb, void *opaque,
                 Error **errp);

/* Start a created job: it goes "running" and run() begins soon. */
void job_start(Job *job);

/*
 * job_early_fail: a job that was created but will not be started (its
 * creator failed afterwards) goes away at once ("null").
 */
void job_early_fail(Job *job);

void job_ref(Job *job);
void job_unref(Job *job);

/* Lookup among all jobs (internal ones have no id); NULL if none. */
Job *job_get(const char *id);
/* Iterate over all jobs, newest first: job_next(NULL) is the first. */
Job *job_next(Job *job);

JobType job_type(const Job *job);
const char *job_type_str(const Job *job);
bool job_is_internal(const Job *job);

/* A forced cancel was requested: run() should return now. */
bool job_is_cancelled(const Job *job);
/* Any cancel (soft or forced) was requested. */
bool job_cancel_requested(const Job *job);
/* run() has returned and the result has been processed. */
bool job_is_completed(const Job *job);
/* "ready" or "standby". */
bool job_is_ready(const Job *job);
bool job_user_paused(const Job *job);

/* Progress counters (in units of the job's choosing). */
void job_progress_update(Job *job, uint64_t done);
void job_progress_set_remaining(Job *job, uint64_t remaining);
void job_progress_increase_remaining(Job *job, uint64_t delta);

/*
 * Coroutine side.
 *
 * job_pause_point: if a pause was requested (and no forced cancel), park
 * here: running -> paused (ready -> standby) until resumed or cancelled.
 *
 * job_sleep_ns: sleep for @ns nanoseconds, ending early on cancel, and
 * pause in the meantime if asked to.
 *
 * job_yield: park until job_enter() (for jobs waiting on an event).
 */
void coroutine_fn job_pause_point(Job *job);
void coroutine_fn job_sleep_ns(Job *job, int64_t ns);
void coroutine_fn job_yield(Job *job);

/* Wake the job if it is parked (sleeping, yielded or paused). */
void job_enter(Job *job);

/* Enter "ready" (mirror, after the bulk copy) and say so. */
void job_transition_to_ready(Job *job);

/* Internal pause requests (counted); the job stops at a pause point. */
void job_pause(Job *job);
void job_resume(Job *job);

/*
 * job_apply_verb: is @verb allowed in the job's current status?  Fails
 * with "Job 'ID' in state 'S' cannot accept command verb 'V'".
 */
bool job_apply_verb(Job *job, JobVerb verb, Error **errp);

/* The QMP verbs; each checks the verb table and QEMU's other rules. */
void job_user_pause(Job *job, Error **errp);
void job_user_resume(Job *job, Error **errp);
void job_user_cancel(Job *job, bool force, Error **errp);
void job_complete(Job *job, Error **errp);
void job_finalize(Job *job, Error **errp);
/* On success *jobptr is set to NULL: the job may be gone. */
void job_dismiss(Job **jobptr, Error **errp);

/*
 * job_cancel: request cancellation.  A concluded job is dismissed; a job
 * that never started completes at once; a finished job that waits for
 * its transaction aborts the transaction.
 */
void job_cancel(Job *job, bool force);

/*
 * job_finish_sync: run @finish (if any), then iterate the main loop until
 * the job has completed.  Returns its result (-ECANCELED if cancelled).
 * Not for coroutine context.
 */
int job_finish_sync(Job *job, void (*finish)(Job *job, Error **errp),
                    Error **errp);
int job_cancel_sync(Job *job, bool force);
/* Complete a ready job and wait for it. */
int job_complete_sync(Job *job, Error **errp);

/*
 * job_cancel_sync_all: force-cancel every job, wait until each is
 * finalized and dismiss it.  Used at shutdown, before nodes are closed.
 */
void job_cancel_sync_all(void);

/* Transactions. */
JobTxn *job_txn_new(void);
void job_txn_unref(JobTxn *txn);

/* QMP query helper: the JobInfo of a job with an id. */
JobInfo *job_query_single(Job *job);

/*
 * Debug/test access to the tables: is the move @from -> @to legal, and
 * is @verb allowed in @status?
 */
bool job_transition_allowed(JobStatus from, JobStatus to);
bool job_verb_allowed(JobVerb verb, JobStatus status);

#endif /* BLOCK_JOB_H */
