/*
 * The job core (block/jobs/job.c): status and verb tables checked against an
 * independent model written from QEMU's documented tables, then the
 * lifecycle driven through a tiny in-test job driver: pause/resume,
 * cancel (running, paused, never started), complete, manual finalize and
 * dismiss, transactions where one member fails, and the rate limit
 * arithmetic.
 *
 * The test driver's run() loops in 1 ms sleeps until its script says to
 * return, so there is always a timer to wake the main loop, and every
 * callback is appended to a log that the tests compare.
 */
#undef NDEBUG
#include "block/job.h"
#include "block/blockjob.h"
#include "util/main-loop.h"

/* The model: QEMU's tables, as text, independent of the code. */
static const struct {
    JobStatus from;
    const char *to;         /* space-separated targets */
} model_transitions[] = {
    { JOB_STATUS_UNDEFINED, "created" },
    { JOB_STATUS_CREATED,   "running aborting null" },
    { JOB_STATUS_RUNNING,   "paused ready waiting aborting" },
    { JOB_STATUS_PAUSED,    "running" },
    { JOB_STATUS_READY,     "standby waiting aborting" },
    { JOB_STATUS_STANDBY,   "ready" },
    { JOB_STATUS_WAITING,   "pending aborting" },
    { JOB_STATUS_PENDING,   "aborting concluded" },
    { JOB_STATUS_ABORTING,  "aborting concluded" },
    { JOB_STATUS_CONCLUDED, "null" },
    { JOB_STATUS_NULL,      "" },
};

static const struct {
    JobVerb verb;
    const char *states;     /* space-separated states that accept it */
} model_verbs[] = {
    { JOB_VERB_CANCEL,
      "created running paused ready standby waiting pending" },
    { JOB_VERB_PAUSE,     "created running paused ready standby" },
    { JOB_VERB_RESUME,    "created running paused ready standby" },
    { JOB_VERB_SET_SPEED, "created running paused ready standby" },
    { JOB_VERB_COMPLETE,  "ready standby" },
    { JOB_VERB_FINALIZE,  "pending" },
    { JOB_VERB_DISMISS,   "concluded" },
};

static bool word_in(const char *list, const char *word)
{
    g_auto(GStrv) words = g_strsplit(list, " ", -1);

    return g_strv_contains((const char * const *)words, word);
}

static void test_transition_table(void)
{
    g_assert_cmpint(G_N_ELEMENTS(model_transitions), ==, JOB_STATUS__MAX);
    for (unsigned i = 0; i < G_N_ELEMENTS(model_transitions); i++) {
        JobStatus from = model_transitions[i].from;

        for (JobStatus to = 0; to < JOB_STATUS__MAX; to++) {
            bool want = word_in(model_transitions[i].to, JobStatus_str(to));

            if (job_transition_allowed(from, to) != want) {
                g_error("%s -> %s: table says %d", JobStatus_str(from),
                        JobStatus_str(to), !want);
            }
        }
    }
}

static void test_verb_table(void)
{
    g_assert_cmpint(G_N_ELEMENTS(model_verbs), ==, JOB_VERB__MAX);
    for (unsigned i = 0; i < G_N_ELEMENTS(model_verbs); i++) {
        JobVerb verb = model_verbs[i].verb;

        for (JobStatus s = 0; s < JOB_STATUS__MAX; s++) {
            bool want = word_in(model_verbs[i].states, JobStatus_str(s));

            if (job_verb_allowed(verb, s) != want) {
                g_error("%s in %s: table says %d", JobVerb_str(verb),
                        JobStatus_str(s), !want);
            }
        }
    }
}

/* The in-test driver */

typedef struct TestJob {
    BlockJob common;
    GString *log;               /* callbacks in order, space-separated */
    int iterations;             /* loops done in run() */
    int fail_after;             /* return -EIO after this many, or -1 */
    int finish_after;           /* return 0 after this many, or -1 */
    bool go_ready;              /* become ready at once, wait for complete */
    bool completed;             /* job-complete was called */
    int cb_ret;
} TestJob;

static GString *global_log;
static int last_cb_ret;

static void log_event(TestJob *t, const char *what)
{
    g_string_append_printf(t->log, "%s%s", t->log->len ? " " : "", what);
    g_string_append_printf(global_log, "%s%s:%s",
                           global_log->len ? " " : "",
                           t->common.job.id ? t->common.job.id : "-", what);
}

static int coroutine_fn test_job_run(Job *job, Error **errp)
{
    TestJob *t = container_of(job, TestJob, common.job);

    log_event(t, "run");
    if (t->go_ready) {
        job_transition_to_ready(job);
    }
    job_progress_set_remaining(job, 100);
    while (!job_is_cancelled(job)) {
        if (t->fail_after >= 0 && t->iterations >= t->fail_after) {
            error_setg(errp, "test job failed on purpose");
            return -EIO;
        }
        if (t->finish_after >= 0 && t->iterations >= t->finish_after) {
            break;
        }
        if (t->go_ready && t->completed) {
            break;
        }
        t->iterations++;
        job_progress_update(job, 1);
        job_sleep_ns(job, 1000 * 1000);
    }
    return 0;
}

static void test_job_complete(Job *job, Error **errp)
{
    TestJob *t = container_of(job, TestJob, common.job);

    log_event(t, "complete");
    t->completed = true;
}

static int test_job_prepare(Job *job)
{
    log_event(container_of(job, TestJob, common.job), "prepare");
    return 0;
}

static void test_job_commit(Job *job)
{
    log_event(container_of(job, TestJob, common.job), "commit");
}

static void test_job_abort(Job *job)
{
    log_event(container_of(job, TestJob, common.job), "abort");
}

static void test_job_clean(Job *job)
{
    log_event(container_of(job, TestJob, common.job), "clean");
}

static const BlockJobDriver test_job_driver = {
    .job_driver = {
        .instance_size = sizeof(TestJob),
        .job_type = JOB_TYPE_BACKUP,
        .run = test_job_run,
        .complete = test_job_complete,
        .prepare = test_job_prepare,
        .commit = test_job_commit,
        .abort = test_job_abort,
        .clean = test_job_clean,
    },
};

static void test_job_cb(void *opaque, int ret)
{
    TestJob *t = opaque;

    t->cb_ret = ret;
    last_cb_ret = ret;
    log_event(t, "cb");
}

/*
 * The log outlives the job (which may be freed at dismiss): tests own it
 * through @log.
 */
static TestJob *new_job(const char *id, JobTxn *txn, int flags,
                        GString *log)
{
    TestJob *t = block_job_create(id, &test_job_driver, txn, 0, flags,
                                  NULL, NULL, &error_abort);

    t->log = log;
    t->fail_after = -1;
    t->finish_after = -1;
    t->cb_ret = 1;
    t->common.job.cb = test_job_cb;
    t->common.job.opaque = t;
    return t;
}

static void run_until(bool (*cond)(Job *job), Job *job)
{
    for (int i = 0; !cond(job); i++) {
        g_assert_cmpint(i, <, 100000);
        main_loop_wait(true);
    }
}

static JobStatus wanted_status;

static bool status_is_wanted(Job *job)
{
    return job->status == wanted_status;
}

static void run_until_status(Job *job, JobStatus status)
{
    wanted_status = status;
    run_until(status_is_wanted, job);
}

static bool job_gone(Job *job)
{
    return job_get("j0") == NULL;
}

static void assert_error(Error **errp, const char *msg)
{
    g_assert_nonnull(*errp);
    g_assert_cmpstr(error_get_pretty(*errp), ==, msg);
    error_free(*errp);
    *errp = NULL;
}

static void test_success_auto(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_DEFAULT, log);

    g_assert_cmpint(t->common.job.status, ==, JOB_STATUS_CREATED);
    t->finish_after = 3;
    job_start(&t->common.job);
    g_assert_cmpint(t->common.job.status, ==, JOB_STATUS_RUNNING);
    run_until(job_gone, NULL);
    g_assert_cmpstr(log->str, ==, "run prepare commit clean cb");
}

static void test_manual_finalize_dismiss(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL,
                         JOB_MANUAL_FINALIZE | JOB_MANUAL_DISMISS, log);
    Job *job = &t->common.job;
    Error *err = NULL;

    t->finish_after = 2;
    job_start(job);
    job_dismiss(&job, &err);
    assert_error(&err, "Job 'j0' in state 'running' cannot accept command "
                 "verb 'dismiss'");
    run_until_status(job, JOB_STATUS_PENDING);
    g_assert_cmpstr(log->str, ==, "run");
    job_complete(job, &err);
    assert_error(&err, "Job 'j0' in state 'pending' cannot accept command "
                 "verb 'complete'");
    job_finalize(job, &error_abort);
    g_assert_cmpint(job->status, ==, JOB_STATUS_CONCLUDED);
    g_assert_cmpstr(log->str, ==, "run prepare commit clean cb");
    g_assert_cmpint(job->progress_current, ==, 2);
    g_assert_cmpint(job->progress_total, ==, 100);
    job_finalize(job, &err);
    assert_error(&err, "Job 'j0' in state 'concluded' cannot accept command "
                 "verb 'finalize'");
    job_dismiss(&job, &error_abort);
    g_assert_null(job);
    g_assert_null(job_get("j0"));
}

static void test_pause_resume(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_MANUAL_DISMISS, log);
    Job *job = &t->common.job;
    Error *err = NULL;
    int before;

    job_user_resume(job, &err);
    assert_error(&err, "Can't resume a job that was not paused");
    job_start(job);
    run_until_status(job, JOB_STATUS_RUNNING);
    job_user_pause(job, &error_abort);
    job_user_pause(job, &err);
    assert_error(&err, "Job is already paused");
    run_until_status(job, JOB_STATUS_PAUSED);
    g_assert_true(job->paused);
    g_assert_false(job->busy);
    before = t->iterations;
    for (int i = 0; i < 20; i++) {
        main_loop_wait(false);
    }
    g_assert_cmpint(t->iterations, ==, before);
    job_user_resume(job, &error_abort);
    run_until_status(job, JOB_STATUS_RUNNING);
    t->finish_after = t->iterations + 2;
    run_until_status(job, JOB_STATUS_CONCLUDED);
    g_assert_cmpint(t->cb_ret, ==, 0);
    job_dismiss(&job, &error_abort);
}

static void test_cancel_running(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_MANUAL_DISMISS, log);
    Job *job = &t->common.job;

    job_start(job);
    run_until_status(job, JOB_STATUS_RUNNING);
    job_user_cancel(job, true, &error_abort);
    run_until_status(job, JOB_STATUS_CONCLUDED);
    g_assert_cmpstr(log->str, ==, "run abort clean cb");
    g_assert_cmpint(t->cb_ret, ==, -ECANCELED);
    g_assert_cmpstr(error_get_pretty(job->err), ==, "Operation canceled");
    job_dismiss(&job, &error_abort);
}

static void test_cancel_paused(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_DEFAULT, log);
    Job *job = &t->common.job;

    job_start(job);
    job_user_pause(job, &error_abort);
    run_until_status(job, JOB_STATUS_PAUSED);
    g_assert_true(job_user_paused(job));
    job_cancel_sync(job, true);
    run_until(job_gone, NULL);
    g_assert_cmpint(last_cb_ret, ==, -ECANCELED);
    g_assert_cmpstr(log->str, ==, "run abort clean cb");
}

static void test_cancel_created(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_MANUAL_DISMISS, log);

    /* Never started: gone at once even without auto-dismiss, never ran. */
    job_user_cancel(&t->common.job, true, &error_abort);
    g_assert_null(job_get("j0"));
    g_assert_cmpstr(log->str, ==, "abort clean cb");
}

static void test_complete_ready(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_DEFAULT, log);
    Job *job = &t->common.job;
    Error *err = NULL;

    job_complete(job, &err);
    assert_error(&err, "Job 'j0' in state 'created' cannot accept command "
                 "verb 'complete'");
    t->go_ready = true;
    job_start(job);
    run_until_status(job, JOB_STATUS_READY);
    job_user_pause(job, &error_abort);
    run_until_status(job, JOB_STATUS_STANDBY);
    job_user_resume(job, &error_abort);
    run_until_status(job, JOB_STATUS_READY);
    g_assert_cmpint(job_complete_sync(job, &error_abort), ==, 0);
    run_until(job_gone, NULL);
    g_assert_cmpstr(log->str, ==, "run complete prepare commit clean cb");
}

static void test_duplicate_and_invalid_id(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_DEFAULT, log);
    Error *err = NULL;

    g_assert_null(block_job_create("j0", &test_job_driver, NULL, 0, 0,
                                   NULL, NULL, &err));
    assert_error(&err, "Job ID 'j0' already in use");
    g_assert_null(block_job_create("0x", &test_job_driver, NULL, 0, 0,
                                   NULL, NULL, &err));
    assert_error(&err, "Invalid job ID '0x'");
    g_assert_null(block_job_create("j1", &test_job_driver, NULL, -1, 0,
                                   NULL, NULL, &err));
    assert_error(&err, "Parameter 'speed' expects a non-negative value");
    job_early_fail(&t->common.job);
    g_assert_null(job_get("j0"));
}

static void test_set_speed(void)
{
    g_autoptr(GString) log = g_string_new("");
    TestJob *t = new_job("j0", NULL, JOB_MANUAL_DISMISS, log);
    Job *job = &t->common.job;
    Error *err = NULL;

    g_assert_true(block_job_set_speed(&t->common, 1 << 20, &error_abort));
    g_assert_cmpint(t->common.limit.speed, ==, 1 << 20);
    g_assert_false(block_job_set_speed(&t->common, -5, &err));
    assert_error(&err, "Parameter 'speed' expects a non-negative value");
    t->finish_after = 0;
    job_start(job);
    run_until_status(job, JOB_STATUS_CONCLUDED);
    g_assert_false(block_job_set_speed(&t->common, 0, &err));
    assert_error(&err, "Job 'j0' in state 'concluded' cannot accept command "
                 "verb 'set-speed'");
    job_dismiss(&job, &error_abort);
}

/* Transactions */

static void test_txn_waits_for_all(void)
{
    g_autoptr(GString) la = g_string_new("");
    g_autoptr(GString) lb = g_string_new("");
    JobTxn *txn = job_txn_new();
    TestJob *a = new_job("a", txn, JOB_MANUAL_DISMISS, la);
    TestJob *b = new_job("b", txn, JOB_MANUAL_DISMISS, lb);

    job_txn_unref(txn);
    a->finish_after = 1;
    b->finish_after = 1000000;
    g_string_truncate(global_log, 0);
    job_start(&a->common.job);
    job_start(&b->common.job);
    run_until_status(&a->common.job, JOB_STATUS_WAITING);
    for (int i = 0; i < 10; i++) {
        main_loop_wait(true);
    }
    g_assert_cmpint(a->common.job.status, ==, JOB_STATUS_WAITING);
    b->finish_after = 0;
    run_until_status(&b->common.job, JOB_STATUS_CONCLUDED);
    g_assert_cmpint(a->common.job.status, ==, JOB_STATUS_CONCLUDED);
    g_assert_cmpstr(global_log->str, ==,
                    "a:run b:run a:prepare b:prepare a:commit a:clean a:cb "
                    "b:commit b:clean b:cb");
    job_cancel_sync_all();
    g_assert_null(job_next(NULL));
}

static void test_txn_one_fails(void)
{
    g_autoptr(GString) la = g_string_new("");
    g_autoptr(GString) lb = g_string_new("");
    g_autoptr(GString) lc = g_string_new("");
    JobTxn *txn = job_txn_new();
    TestJob *a = new_job("a", txn, JOB_MANUAL_DISMISS, la);
    TestJob *b = new_job("b", txn, JOB_MANUAL_DISMISS, lb);
    TestJob *c = new_job("c", txn, JOB_MANUAL_DISMISS, lc);

    job_txn_unref(txn);
    a->finish_after = 0;             /* succeeds first, then waits */
    b->fail_after = 5;
    job_start(&a->common.job);
    job_start(&b->common.job);
    job_start(&c->common.job);
    run_until_status(&b->common.job, JOB_STATUS_CONCLUDED);
    for (TestJob *t = a; t; t = t == a ? c : NULL) {
        g_assert_cmpint(t->common.job.status, ==, JOB_STATUS_CONCLUDED);
        g_assert_cmpint(t->cb_ret, ==, -ECANCELED);
        g_assert_true(job_is_cancelled(&t->common.job));
    }
    g_assert_cmpint(b->cb_ret, ==, -EIO);
    g_assert_false(job_is_cancelled(&b->common.job));
    g_assert_cmpstr(error_get_pretty(b->common.job.err), ==,
                    "test job failed on purpose");
    /* Nobody was prepared or committed: everyone aborted. */
    g_assert_cmpstr(la->str, ==, "run abort clean cb");
    g_assert_cmpstr(lb->str, ==, "run abort clean cb");
    g_assert_cmpstr(lc->str, ==, "run abort clean cb");
    job_cancel_sync_all();
    g_assert_null(job_next(NULL));
}

static void test_txn_cancel_pending(void)
{
    g_autoptr(GString) la = g_string_new("");
    g_autoptr(GString) lb = g_string_new("");
    JobTxn *txn = job_txn_new();
    TestJob *a = new_job("a", txn, JOB_MANUAL_FINALIZE, la);
    TestJob *b = new_job("b", txn, JOB_DEFAULT, lb);

    job_txn_unref(txn);
    a->finish_after = 0;
    b->finish_after = 1;
    job_start(&a->common.job);
    job_start(&b->common.job);
    run_until_status(&b->common.job, JOB_STATUS_PENDING);
    g_assert_cmpint(a->common.job.status, ==, JOB_STATUS_PENDING);
    /* Cancelling one pending member aborts the whole transaction. */
    job_user_cancel(&b->common.job, false, &error_abort);
    g_assert_null(job_get("b"));
    g_assert_null(job_get("a"));
    g_assert_cmpstr(la->str, ==, "run abort clean cb");
    g_assert_cmpstr(lb->str, ==, "run abort clean cb");
}

static void test_cancel_sync_all(void)
{
    g_autoptr(GString) l0 = g_string_new("");
    g_autoptr(GString) l1 = g_string_new("");
    g_autoptr(GString) l2 = g_string_new("");
    TestJob *a = new_job("a", NULL, JOB_MANUAL_DISMISS, l0);
    TestJob *b = new_job("b", NULL, JOB_MANUAL_FINALIZE, l1);
    TestJob *c = new_job(NULL, NULL, JOB_INTERNAL, l2);

    b->finish_after = 0;
    job_start(&a->common.job);
    job_start(&b->common.job);
    job_start(&c->common.job);
    job_user_pause(&a->common.job, &error_abort);
    run_until_status(&b->common.job, JOB_STATUS_PENDING);
    job_cancel_sync_all();
    g_assert_null(job_next(NULL));
    g_assert_cmpstr(l0->str, ==, "run abort clean cb");
    g_assert_cmpstr(l1->str, ==, "run abort clean cb");
    g_assert_cmpstr(l2->str, ==, "run abort clean cb");
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    global_log = g_string_new("");
    g_test_add_func("/job/table/transitions", test_transition_table);
    g_test_add_func("/job/table/verbs", test_verb_table);
    g_test_add_func("/job/lifecycle/success", test_success_auto);
    g_test_add_func("/job/lifecycle/manual-finalize-dismiss",
                    test_manual_finalize_dismiss);
    g_test_add_func("/job/lifecycle/pause-resume", test_pause_resume);
    g_test_add_func("/job/cancel/running", test_cancel_running);
    g_test_add_func("/job/cancel/paused", test_cancel_paused);
    g_test_add_func("/job/cancel/never-started", test_cancel_created);
    g_test_add_func("/job/cancel/sync-all", test_cancel_sync_all);
    g_test_add_func("/job/complete/ready", test_complete_ready);
    g_test_add_func("/job/create/ids", test_duplicate_and_invalid_id);
    g_test_add_func("/job/blockjob/set-speed", test_set_speed);
    g_test_add_func("/job/txn/waits-for-all", test_txn_waits_for_all);
    g_test_add_func("/job/txn/one-fails", test_txn_one_fails);
    g_test_add_func("/job/txn/cancel-pending", test_txn_cancel_pending);
    return g_test_run();
}
