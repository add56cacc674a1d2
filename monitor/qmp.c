/*
 * QMP sessions: JSON stream in, responses and events out, and the
 * dispatcher coroutine.
 *
 * Input.  Bytes read from the socket go into @inbuf and are fed to an
 * incremental json-c tokener.  A session parses at most one request
 * ahead: once a complete value is found it is queued for the dispatcher
 * and the session stops reading (its socket watch is removed) until the
 * response has been queued, so a client that floods us only fills the
 * kernel socket buffer.  A value larger than MONITOR_MAX_VALUE bytes or
 * nested deeper than QAPI_JSON_MAX_DEPTH, and any syntax error, gets one
 * "JSON parse error, ..." reply; the input is then discarded up to the
 * next newline without being kept, and parsing starts afresh.
 *
 * Dispatch.  One coroutine executes all requests of all sessions in
 * arrival order, like QEMU's qmp_dispatcher_co; handlers may yield.
 * Before qmp_capabilities a session uses qmp_cap_negotiation_commands,
 * which holds only qmp_capabilities, and a CommandNotFound answer there is
 * rewritten to QEMU's "Expecting capabilities negotiation" message.
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
#include "monitor-internal.h"

#include <glib-unix.h>

#define MONITOR_MAX_VALUE   (16 * 1024 * 1024)
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
    bool busy;                  /* a request is queued or running */
    guint in_watch;
    guint out_watch;
    json_tokener *tok;
    size_t value_bytes;         /* bytes of the value being parsed */
    bool skipping;              /* discarding input up to a newline */
    GByteArray *inbuf;          /* read but not yet parsed */
    GString *outbuf;            /* not yet written */
    size_t out_pos;             /* written part of @outbuf */
};

typedef struct QMPRequest {
    MonitorQMP *mon;            /* holds a reference */
    json_object *req;
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

void monitor_qmp_set_negotiated(MonitorQMP *mon)
{
    mon->negotiated = true;
}

static void monitor_qmp_unref(MonitorQMP *mon)
{
    if (--mon->refcnt) {
        return;
    }
    assert(mon->fd < 0);
    json_tokener_free(mon->tok);
    g_byte_array_free(mon->inbuf, true);
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

static void monitor_qmp_send_error(MonitorQMP *mon, const char *fmt, ...)
    G_GNUC_PRINTF(2, 3);

static void monitor_qmp_send_error(MonitorQMP *mon, const char *fmt, ...)
{
    g_autofree char *msg = NULL;
    Error *err = NULL;
    va_list ap;

    va_start(ap, fmt);
    msg = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    error_setg(&err, "%s", msg);
    monitor_qmp_send(mon, qmp_error_response(err, NULL, false));
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
                        req, false);
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

static void monitor_qmp_reset_parser(MonitorQMP *mon)
{
    json_tokener_reset(mon->tok);
    mon->value_bytes = 0;
}

/* Parse buffered input until a request is queued or input runs out */
static void monitor_qmp_parse(MonitorQMP *mon)
{
    while (!mon->busy && mon->fd >= 0 && mon->inbuf->len) {
        guint8 *buf = mon->inbuf->data;
        size_t len = mon->inbuf->len;
        size_t feed, used;
        json_object *obj;
        enum json_tokener_error jerr;

        if (mon->skipping) {
            guint8 *nl = memchr(buf, '\n', len);

            if (!nl) {
                g_byte_array_set_size(mon->inbuf, 0);
                return;
            }
            g_byte_array_remove_range(mon->inbuf, 0, nl - buf + 1);
            mon->skipping = false;
            continue;
        }
        if (!mon->value_bytes) {
            /* Whitespace between values does not count toward the limit */
            size_t ws = 0;

            while (ws < len && strchr(" \t\r\n", buf[ws]) && buf[ws]) {
                ws++;
            }
            if (ws) {
                g_byte_array_remove_range(mon->inbuf, 0, ws);
                continue;
            }
        }
        feed = MIN(len, MONITOR_MAX_VALUE - mon->value_bytes + 1);
        obj = json_tokener_parse_ex(mon->tok, (const char *)buf, feed);
        jerr = json_tokener_get_error(mon->tok);
        used = json_tokener_get_parse_end(mon->tok);
        if (jerr == json_tokener_continue) {
            used = feed;
        }
        mon->value_bytes += used;
        if (jerr == json_tokener_success) {
            g_byte_array_remove_range(mon->inbuf, 0, used);
            monitor_qmp_reset_parser(mon);
            monitor_qmp_enqueue(mon, obj);
            return;
        }
        if (jerr != json_tokener_continue) {
            monitor_qmp_send_error(mon, "JSON parse error, %s",
                                   json_tokener_error_desc(jerr));
        } else if (mon->value_bytes > MONITOR_MAX_VALUE) {
            monitor_qmp_send_error(mon, "JSON parse error, input exceeds "
                                   "%d bytes", MONITOR_MAX_VALUE);
        } else {
            g_byte_array_remove_range(mon->inbuf, 0, used);
            continue;
        }
        g_byte_array_remove_range(mon->inbuf, 0, MIN(used, len));
        monitor_qmp_reset_parser(mon);
        mon->skipping = true;
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
    g_byte_array_append(mon->inbuf, buf, n);
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
    json_object *version = json_object_new_object();
    json_object *triple = json_object_new_object();
    int major = 0, minor = 0, micro = 0;

    sscanf(BLOCKD_VERSION_STRING, "%d.%d.%d", &major, &minor, &micro);
    json_object_object_add(triple, "micro", json_object_new_int(micro));
    json_object_object_add(triple, "minor", json_object_new_int(minor));
    json_object_object_add(triple, "major", json_object_new_int(major));
    json_object_object_add(version, "qemu", triple);
    json_object_object_add(version, "package",
        json_object_new_string("blockd " BLOCKD_VERSION_STRING));
    json_object_object_add(qmp, "version", version);
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
    mon->tok = json_tokener_new_ex(QAPI_JSON_MAX_DEPTH);
    mon->inbuf = g_byte_array_new();
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
