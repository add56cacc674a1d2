/*
 * QMP sessions: JSON stream in, responses and events out, and the
 * dispatcher coroutine.
 *
 * Input.  Each read of at most MONITOR_READ_SIZE bytes is fed to the
 * session's JSON streamer (util/json-parser.c), which reports every
 * complete value and every error, in order, into @pending.  Errors are
 * answered at once, in their turn; a request goes to the dispatcher, and
 * the session stops reading (its socket watch is removed) until both the
 * request has been answered and @pending is empty, so a client that
 * floods us only fills the kernel socket buffer, and we hold at most one
 * read's worth of parsed requests.  The streamer bounds what one value
 * may cost and resynchronises after errors the way QEMU does (after a
 * size or depth limit error, at the next newline).
 *
 * Dispatch.  One coroutine executes all requests of all sessions in
 * arrival order, like QEMU's qmp_dispatcher_co; handlers may yield.
 * Before qmp_capabilities a session uses qmp_cap_negotiation_commands,
 * which holds only qmp_capabilities, and a CommandNotFound answer there is
 * rewritten to QEMU's "Expecting capabilities negotiation" message.
 * "exec-oob" is understood once the session enabled the "oob" capability;
 * no command is marked allow-oob (as in qemu-storage-daemon 7.2), so
 * qmp_dispatch() refuses each one, and it is answered in its turn.
 *
 * Output.  Responses and events are serialized into @outbuf and written
 * without blocking; a G_IO_OUT watch drains the rest.  A client that lets
 * more than MONITOR_MAX_OUTPUT bytes pile up is disconnected.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "util/coroutine.h"
#include "util/main-loop.h"
#include "qapi/qmp-event.h"
#include "qapi/qmp-dispatch.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-output-visitor.h"
#include "util/json-parser.h"
#include "monitor-internal.h"

#include <glib-unix.h>

#define MONITOR_MAX_OUTPUT  (16 * 1024 * 1024)
#define MONITOR_READ_SIZE   65536

struct MonitorQMP {
    /* Set at creation, never changed */
    Chardev *chr;
    bool pretty;

    /* Main loop only */
    int fd;                     /* -1 once closed */
    int refcnt;
    bool negotiated;            /* qmp_capabilities succeeded */
    bool oob;                   /* ... with the "oob" capability */
    bool busy;                  /* a request is queued or running */
    guint in_watch;
    guint out_watch;
    JsonStreamer *parser;
    GQueue pending;             /* QMPRequest: parsed, not yet handled */
    GString *outbuf;            /* not yet written */
    size_t out_pos;             /* written part of @outbuf */
};

typedef struct QMPRequest {
    MonitorQMP *mon;            /* holds a reference (dispatcher queue) */
    json_object *req;
    Error *err;                 /* a parse error instead of @req */
} QMPRequest;

QmpCommandList qmp_commands;
QmpCommandList qmp_cap_negotiation_commands;

static GPtrArray *sessions;     /* MonitorQMP *, open connections */
static GQueue requests = G_QUEUE_INIT;
static Coroutine *dispatcher_co;
static bool dispatcher_sleeping;
static bool dispatcher_woken;
static MonitorQMP *cur_mon;

static void monitor_qmp_resume(MonitorQMP *mon);
static void monitor_qmp_close(MonitorQMP *mon);

MonitorQMP *monitor_cur(void)
{
    return cur_mon;
}

bool monitor_qmp_negotiated(MonitorQMP *mon)
{
    return mon->negotiated;
}

void monitor_qmp_set_negotiated(MonitorQMP *mon, bool oob)
{
    mon->negotiated = true;
    mon->oob = oob;
}

static void monitor_qmp_unref(MonitorQMP *mon)
{
    QMPRequest *qreq;

    if (--mon->refcnt) {
        return;
    }
    assert(mon->fd < 0);
    json_streamer_free(mon->parser);
    while ((qreq = g_queue_pop_head(&mon->pending))) {
        json_object_put(qreq->req);
        error_free(qreq->err);
        g_free(qreq);
    }
    g_string_free(mon->outbuf, true);
    g_free(mon);
}

/* --- output --- */

static gboolean monitor_qmp_writable(gint fd, GIOCondition cond,
                                     gpointer opaque);

/* Write what we can; returns false if the connection failed */
static bool monitor_qmp_flush(MonitorQMP *mon)
{
    while (mon->out_pos < mon->outbuf->len) {
        ssize_t n = write(mon->fd, mon->outbuf->str + mon->out_pos,
                          mon->outbuf->len - mon->out_pos);

        if (n < 0 && errno == EINTR) {
            continue;
        }
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            break;
        }
        if (n <= 0) {
            return false;
        }
        mon->out_pos += n;
    }
    if (mon->out_pos == mon->outbuf->len) {
        g_string_truncate(mon->outbuf, 0);
        mon->out_pos = 0;
        if (mon->out_watch) {
            g_source_remove(mon->out_watch);
            mon->out_watch = 0;
        }
    } else if (!mon->out_watch) {
        mon->out_watch = g_unix_fd_add(mon->fd, G_IO_OUT,
                                       monitor_qmp_writable, mon);
    }
    return true;
}

static gboolean monitor_qmp_writable(gint fd, GIOCondition cond,
                                     gpointer opaque)
{
    MonitorQMP *mon = opaque;

    if (!monitor_qmp_flush(mon)) {
        mon->out_watch = 0;
        monitor_qmp_close(mon);
        return G_SOURCE_REMOVE;
    }
    return mon->out_watch ? G_SOURCE_CONTINUE : G_SOURCE_REMOVE;
}

/* Queue @obj (reference stolen) for sending, as one line */
static void monitor_qmp_send(MonitorQMP *mon, json_object *obj)
{
    g_autoptr(GString) text = NULL;

    if (mon->fd < 0) {
        json_object_put(obj);
        return;
    }
    text = qapi_json_to_gstring(obj, mon->pretty);
    json_object_put(obj);
    if (mon->outbuf->len - mon->out_pos + text->len > MONITOR_MAX_OUTPUT) {
        /* The client does not read what we send; give up on it */
        monitor_qmp_close(mon);
        return;
    }
    g_string_append_len(mon->outbuf, text->str, text->len);
    g_string_append(mon->outbuf, "\r\n");
    if (!mon->out_watch && !monitor_qmp_flush(mon)) {
        monitor_qmp_close(mon);
    }
}

/* --- dispatch --- */

static bool response_is_command_not_found(json_object *resp)
{
    json_object *error, *cls;

    return json_object_object_get_ex(resp, "error", &error) &&
        json_object_object_get_ex(error, "class", &cls) &&
        !strcmp(json_object_get_string(cls),
                ErrorClass_str(ERROR_CLASS_COMMAND_NOT_FOUND));
}

static void coroutine_fn monitor_qmp_dispatch(MonitorQMP *mon,
                                              json_object *req)
{
    bool negotiated = mon->negotiated;
    json_object *resp;

    cur_mon = mon;
    resp = qmp_dispatch(negotiated ? &qmp_commands
                                   : &qmp_cap_negotiation_commands,
                        req, mon->oob);
    cur_mon = NULL;
    if (!negotiated && response_is_command_not_found(resp)) {
        json_object *error;

        json_object_object_get_ex(resp, "error", &error);
        json_object_object_add(error, "desc", json_object_new_string(
            "Expecting capabilities negotiation with 'qmp_capabilities'"));
    }
    monitor_qmp_send(mon, resp);
}

static void coroutine_fn monitor_qmp_dispatcher(void *opaque)
{
    for (;;) {
        QMPRequest *qreq = g_queue_pop_head(&requests);
        MonitorQMP *mon;

        if (!qreq) {
            dispatcher_sleeping = true;
            coroutine_yield();
            continue;
        }
        mon = qreq->mon;
        if (mon->fd >= 0) {
            monitor_qmp_dispatch(mon, qreq->req);
        }
        json_object_put(qreq->req);
        g_free(qreq);
        mon->busy = false;
        if (mon->fd >= 0) {
            monitor_qmp_resume(mon);
        }
        monitor_qmp_unref(mon);
    }
}

static void monitor_qmp_dispatcher_wake(void *opaque)
{
    dispatcher_woken = false;
    if (dispatcher_sleeping) {
        dispatcher_sleeping = false;
        coroutine_enter(dispatcher_co);
    }
}

void monitor_qmp_dispatcher_init(void)
{
    if (dispatcher_co) {
        return;
    }
    dispatcher_co = coroutine_create(monitor_qmp_dispatcher, NULL);
    /* Runs until it finds the queue empty and yields */
    coroutine_enter(dispatcher_co);
}

static void monitor_qmp_enqueue(MonitorQMP *mon, json_object *req)
{
    QMPRequest *qreq = g_new0(QMPRequest, 1);

    assert(dispatcher_co);
    mon->busy = true;
    mon->refcnt++;
    qreq->mon = mon;
    qreq->req = req;
    g_queue_push_tail(&requests, qreq);
    if (dispatcher_sleeping && !dispatcher_woken) {
        /* Enter it from the main loop, never from inside a handler */
        dispatcher_woken = true;
        bh_schedule(monitor_qmp_dispatcher_wake, NULL);
    }
}

/* --- input --- */

/* Streamer callback: a request or a parse error, in input order */
static void monitor_qmp_parsed(void *opaque, json_object *req, Error *err)
{
    MonitorQMP *mon = opaque;
    QMPRequest *qreq = g_new0(QMPRequest, 1);

    qreq->req = req;
    qreq->err = err;
    g_queue_push_tail(&mon->pending, qreq);
}

/* Answer parse errors until a request is queued or none is pending */
static void monitor_qmp_parse(MonitorQMP *mon)
{
    QMPRequest *qreq;

    while (!mon->busy && mon->fd >= 0 &&
           (qreq = g_queue_pop_head(&mon->pending))) {
        if (qreq->err) {
            monitor_qmp_send(mon, qmp_error_response(qreq->err, NULL,
                                                     false));
        } else {
            monitor_qmp_enqueue(mon, qreq->req);
        }
        g_free(qreq);
    }
}

static gboolean monitor_qmp_readable(gint fd, GIOCondition cond,
                                     gpointer opaque)
{
    MonitorQMP *mon = opaque;
    guint8 buf[MONITOR_READ_SIZE];
    ssize_t n;

    n = read(fd, buf, sizeof(buf));
    if (n < 0 && (errno == EINTR || errno == EAGAIN)) {
        return G_SOURCE_CONTINUE;
    }
    if (n <= 0) {
        mon->in_watch = 0;
        monitor_qmp_close(mon);
        return G_SOURCE_REMOVE;
    }
    json_streamer_feed(mon->parser, (const char *)buf, n);
    monitor_qmp_parse(mon);
    if (mon->busy || mon->fd < 0) {
        /* Stop reading until the request has been answered */
        mon->in_watch = 0;
        return G_SOURCE_REMOVE;
    }
    return G_SOURCE_CONTINUE;
}

static void monitor_qmp_resume(MonitorQMP *mon)
{
    monitor_qmp_parse(mon);
    if (!mon->busy && mon->fd >= 0 && !mon->in_watch) {
        mon->in_watch = g_unix_fd_add(mon->fd, G_IO_IN | G_IO_HUP,
                                      monitor_qmp_readable, mon);
    }
}

/* --- sessions --- */

static void monitor_qmp_unref_bh(void *opaque)
{
    monitor_qmp_unref(opaque);
}

/*
 * Close the connection.  The connection's reference is dropped from the
 * main loop, so callers up the stack may still look at @mon (fd is -1).
 */
static void monitor_qmp_close(MonitorQMP *mon)
{
    if (mon->fd < 0) {
        return;
    }
    if (mon->in_watch) {
        g_source_remove(mon->in_watch);
        mon->in_watch = 0;
    }
    if (mon->out_watch) {
        g_source_remove(mon->out_watch);
        mon->out_watch = 0;
    }
    close(mon->fd);
    mon->fd = -1;
    g_ptr_array_remove(sessions, mon);
    bh_schedule(monitor_qmp_unref_bh, mon);
}

static json_object *monitor_qmp_greeting(void)
{
    json_object *qmp = json_object_new_object();
    json_object *caps = json_object_new_array();
    json_object *greeting = json_object_new_object();
    json_object *version = NULL;
    g_autoptr(VersionInfo) info = qmp_query_version(&error_abort);
    g_autoptr(Visitor) v = qobject_output_visitor_new(&version);

    visit_type_VersionInfo(v, NULL, &info, &error_abort);
    visit_complete(v, &version);
    json_object_object_add(qmp, "version", version);
    /* Offered like qemu-storage-daemon does; see qmp_capabilities */
    json_object_array_add(caps, json_object_new_string("oob"));
    json_object_object_add(qmp, "capabilities", caps);
    json_object_object_add(greeting, "QMP", qmp);
    return greeting;
}

void monitor_qmp_new(Chardev *chr, int fd)
{
    MonitorQMP *mon = g_new0(MonitorQMP, 1);

    mon->chr = chr;
    mon->pretty = chr->pretty;
    mon->fd = fd;
    mon->refcnt = 1;
    mon->parser = json_streamer_new(monitor_qmp_parsed, mon);
    g_queue_init(&mon->pending);
    mon->outbuf = g_string_new("");
    if (!sessions) {
        sessions = g_ptr_array_new();
    }
    g_ptr_array_add(sessions, mon);
    monitor_qmp_send(mon, monitor_qmp_greeting());
    if (mon->fd >= 0) {
        monitor_qmp_resume(mon);
    }
}

void monitor_qmp_cleanup(void)
{
    while (sessions && sessions->len) {
        monitor_qmp_close(g_ptr_array_index(sessions, 0));
    }
}

/* --- events --- */

void qapi_event_emit(const char *event, json_object *data)
{
    json_object *ts = json_object_new_object();
    gint64 now = g_get_real_time();
    guint i;

    json_object_object_add(ts, "seconds",
                           json_object_new_int64(now / G_USEC_PER_SEC));
    json_object_object_add(ts, "microseconds",
                           json_object_new_int64(now % G_USEC_PER_SEC));
    for (i = 0; sessions && i < sessions->len; i++) {
        MonitorQMP *mon = g_ptr_array_index(sessions, i);
        json_object *msg;

        if (!mon->negotiated) {
            continue;
        }
        msg = json_object_new_object();
        json_object_object_add(msg, "timestamp", json_object_get(ts));
        json_object_object_add(msg, "event", json_object_new_string(event));
        if (data) {
            json_object_object_add(msg, "data", json_object_get(data));
        }
        monitor_qmp_send(mon, msg);
        if (mon->fd < 0) {
            /* Closed and removed from @sessions: the next one moved down */
            i--;
        }
    }
    json_object_put(ts);
    json_object_put(data);
}
