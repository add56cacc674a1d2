/*
 * The nbd driver's connection: connecting to the server, driving libnbd's
 * state machine from the main loop, and reconnecting.
 *
 * Event loop.  libnbd's asynchronous API leaves the waiting to us: it
 * tells which way the socket must become ready (nbd_aio_get_direction)
 * and is told when it is (nbd_aio_notify_read/write).  While connected,
 * one GSource watches the socket for that direction and drives the state
 * machine for every request in flight; libnbd calls the requests'
 * completion callbacks from inside the notify calls, and those wake the
 * request coroutines (block/nbd.c).  Issuing a request may leave bytes to
 * send, so requests call nbd_client_update_watch() after queueing.  The
 * handshake is driven by the connecting coroutine itself with
 * co_wait_fd(), before the watch exists.
 *
 * Connecting.  The socket is connected here (so that a refused
 * connection reads as QEMU's "Failed to connect to 'ADDR': REASON"),
 * secured with TLS if the node has tls-creds (block/nbd-tls.c), and
 * handed to libnbd for the handshake.
 *
 * Reconnecting.  When the connection breaks, libnbd fails the requests in
 * flight; the handle is dropped (generation++ tells their coroutines the
 * connection they used is gone) and a coroutine tries to connect again,
 * with pauses growing from RECONNECT_FIRST_PAUSE_MS to
 * RECONNECT_MAX_PAUSE_MS, until it succeeds or the node is closed.
 * Requests meanwhile wait in reconnect_waiters for up to reconnect-delay
 * seconds and are then sent again; after that, and at once with a delay
 * of 0, they fail with -EIO until the connection is back.  A new
 * connection must offer an export of the same size.
 */
#include "block/nbd-client.h"
#include "util/aio.h"
#include "util/main-loop.h"

#include <glib-unix.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>

enum {
    RECONNECT_FIRST_PAUSE_MS = 250,
    RECONNECT_MAX_PAUSE_MS = 8000,
    /* Closing: how long TLS relays may take to say goodbye. */
    NBD_TLS_CLOSE_GRACE_MS = 1000,
};

/* --- the socket watch --- */

struct NbdFdSource {
    GSource source;
    NbdClient *client;
    gpointer tag;
    GIOCondition cond;          /* what we watch for now */
};

static GIOCondition nbd_wanted_condition(struct nbd_handle *nbd)
{
    unsigned dir = nbd_aio_get_direction(nbd);

    return (dir & LIBNBD_AIO_DIRECTION_READ ? G_IO_IN : 0) |
           (dir & LIBNBD_AIO_DIRECTION_WRITE ? G_IO_OUT : 0);
}

static bool nbd_handle_alive(struct nbd_handle *nbd)
{
    return !nbd_aio_is_dead(nbd) && !nbd_aio_is_closed(nbd);
}

static gboolean nbd_fd_source_dispatch(GSource *source, GSourceFunc cb,
                                       gpointer data)
{
    NbdFdSource *fs = (NbdFdSource *)source;
    NbdClient *s = fs->client;
    GIOCondition revents = g_source_query_unix_fd(source, fs->tag);

    (void)cb;
    (void)data;
    /* HUP and ERR go to the read side, which then sees the end. */
    if (revents & (G_IO_IN | G_IO_HUP | G_IO_ERR)) {
        nbd_aio_notify_read(s->nbd);
    }
    if ((revents & G_IO_OUT) && nbd_handle_alive(s->nbd)) {
        nbd_aio_notify_write(s->nbd);
    }
    if (!nbd_handle_alive(s->nbd)) {
        nbd_client_connection_lost(s);  /* destroys this source */
        return G_SOURCE_REMOVE;
    }
    nbd_client_update_watch(s);
    return G_SOURCE_CONTINUE;
}

static GSourceFuncs nbd_fd_source_funcs = {
    .dispatch = nbd_fd_source_dispatch,
};

static void nbd_watch_start(NbdClient *s)
{
    GSource *source = g_source_new(&nbd_fd_source_funcs,
                                   sizeof(NbdFdSource));
    NbdFdSource *fs = (NbdFdSource *)source;

    fs->client = s;
    fs->cond = nbd_wanted_condition(s->nbd);
    fs->tag = g_source_add_unix_fd(source, nbd_aio_get_fd(s->nbd), fs->cond);
    g_source_set_name(source, "nbd-client");
    g_source_attach(source, NULL);
    s->fd_source = fs;
}

static void nbd_watch_stop(NbdClient *s)
{
    if (s->fd_source) {
        g_source_destroy(&s->fd_source->source);
        g_source_unref(&s->fd_source->source);
        s->fd_source = NULL;
    }
}

void nbd_client_update_watch(NbdClient *s)
{
    NbdFdSource *fs = s->fd_source;
    GIOCondition cond;

    if (!fs || !s->nbd) {
        return;
    }
    cond = nbd_wanted_condition(s->nbd);
    /* Changing the poll set costs GLib a wakeup: only when it changes. */
    if (cond != fs->cond) {
        g_source_modify_unix_fd(&fs->source, fs->tag, cond);
        fs->cond = cond;
    }
}

/* --- connecting --- */

static gboolean nbd_sleep_done(gpointer opaque)
{
    NbdClient *s = opaque;

    s->sleep_timer = 0;
    coroutine_enter(s->sleeper);
    return G_SOURCE_REMOVE;
}

/* Sleep @ms milliseconds; nbd_client_close() ends the sleep early. */
static void coroutine_fn nbd_co_sleep_ms(NbdClient *s, guint ms)
{
    s->sleeper = coroutine_self();
    s->sleep_timer = g_timeout_add(ms, nbd_sleep_done, s);
    coroutine_yield();
    s->sleeper = NULL;
}

static int coroutine_fn nbd_client_dial(int fd, const struct sockaddr *addr,
                                       socklen_t len)
{
    int err = 0;
    socklen_t err_len = sizeof(err);

    if (connect(fd, addr, len) == 0) {
        return 0;
    }
    if (errno != EINPROGRESS && errno != EAGAIN) {
        return -errno;
    }
    co_wait_fd(fd, G_IO_OUT);
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &err_len) < 0) {
        return -errno;
    }
    return -err;
}

/* A connected socket, or -1 with @errp set. */
static int coroutine_fn nbd_client_dial_unix(NbdClient *s, Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    int fd, ret;

    if (strlen(s->path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", s->path);
        return -1;
    }
    strcpy(sun.sun_path, s->path);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        ret = -errno;
    } else {
        s->attempt_fd = fd;
        ret = nbd_client_dial(fd, (struct sockaddr *)&sun, sizeof(sun));
        s->attempt_fd = -1;
    }
    if (ret < 0) {
        if (fd >= 0) {
            close(fd);
        }
        error_setg(errp, "Failed to connect to '%s': %s", s->address,
                   strerror(-ret));
        return -1;
    }
    return fd;
}

typedef struct NbdLookup {
    const char *host;
    const char *port;
    struct addrinfo *res;
    int gai_error;
} NbdLookup;

/* On a worker thread: name lookups block. */
static int nbd_lookup_run(void *opaque)
{
    NbdLookup *lookup = opaque;
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_ADDRCONFIG,
    };

    lookup->gai_error = getaddrinfo(lookup->host, lookup->port, &hints,
                                    &lookup->res);
    return 0;
}

/* A connected socket, or -1 with @errp set (a failed name lookup). */
static int coroutine_fn nbd_client_dial_inet(NbdClient *s, Error **errp)
{
    NbdLookup lookup = { .host = s->host, .port = s->port };
    int ret = -ECONNREFUSED;

    thread_pool_co_submit(nbd_lookup_run, &lookup);
    if (lookup.gai_error) {
        error_setg(errp, "address resolution failed for %s: %s",
                   s->address, gai_strerror(lookup.gai_error));
        return -1;
    }
    for (struct addrinfo *ai = lookup.res; ai; ai = ai->ai_next) {
        int fd = socket(ai->ai_family,
                        ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                        ai->ai_protocol);

        if (fd < 0) {
            ret = -errno;
            continue;
        }
        s->attempt_fd = fd;
        ret = nbd_client_dial(fd, ai->ai_addr, ai->ai_addrlen);
        s->attempt_fd = -1;
        if (ret == 0) {
            ret = fd;
            break;
        }
        close(fd);
    }
    freeaddrinfo(lookup.res);
    if (ret < 0) {
        error_setg(errp, "Failed to connect to '%s': %s", s->address,
                   strerror(-ret));
        return -1;
    }
    return ret;
}

/*
 * Why the handshake failed, from libnbd's error of the call that failed
 * (its error is per thread: read it before yielding again).
 */
static void nbd_handshake_error(NbdClient *s, Error **errp)
{
    int err = nbd_get_errno();

    if (err == ENOENT) {
        /* The server has no export of that name. */
        error_setg(errp, "Requested export not available");
    } else if (err == ENOTSUP && !s->tls_creds) {
        /* libnbd's errno for NBD_REP_ERR_TLS_REQD, in QEMU's words */
        error_setg(errp, "TLS negotiation required before option 7 (go)");
    } else if (s->closing) {
        error_setg(errp, "Failed to connect to '%s': the node is being "
                   "closed", s->address);
    } else {
        error_setg(errp, "Failed to connect to '%s': %s", s->address,
                   nbd_get_error() ? nbd_get_error() : "handshake failed");
    }
}

/* Run the handshake on the connected socket @fd, which @nbd takes. */
static bool coroutine_fn nbd_co_handshake(NbdClient *s,
                                          struct nbd_handle *nbd, int fd,
                                          Error **errp)
{
    int ret = nbd_aio_connect_socket(nbd, fd);

    s->attempt_fd = fd;
    while (ret == 0 && nbd_aio_is_connecting(nbd)) {
        GIOCondition want = nbd_wanted_condition(nbd);
        GIOCondition seen = co_wait_fd(fd, want);

        if ((want & G_IO_IN) && (seen & (G_IO_IN | G_IO_HUP | G_IO_ERR))) {
            ret = nbd_aio_notify_read(nbd);
        } else if (want & G_IO_OUT) {
            ret = nbd_aio_notify_write(nbd);
        } else {
            ret = nbd_aio_notify_read(nbd);
        }
    }
    s->attempt_fd = -1;
    if (ret < 0 || !nbd_aio_is_ready(nbd)) {
        nbd_handshake_error(s, errp);
        return false;
    }
    return true;
}

/* A connected, negotiated handle, or NULL with @errp set. */
static struct nbd_handle *coroutine_fn nbd_client_connect_once(NbdClient *s,
                                                               Error **errp)
{
    struct nbd_handle *nbd;
    int fd;

    fd = s->type == SOCKET_ADDRESS_TYPE_UNIX ? nbd_client_dial_unix(s, errp)
                                             : nbd_client_dial_inet(s, errp);
    if (fd >= 0 && s->tls_creds) {
        fd = nbd_client_starttls(s, fd, errp);
    }
    if (fd < 0) {
        return NULL;
    }

    nbd = nbd_create();
    if (!nbd || nbd_set_export_name(nbd, s->export) < 0 ||
        nbd_add_meta_context(nbd, s->meta_context) < 0) {
        error_setg(errp, "Failed to connect to '%s': %s", s->address,
                   nbd_get_error());
        close(fd);
        if (nbd) {
            nbd_close(nbd);
        }
        return NULL;
    }
    if (!nbd_co_handshake(s, nbd, fd, errp)) {
        nbd_close(nbd);
        return NULL;
    }
    return nbd;
}

/* Note what the export offers; reconnections must find the same size. */
static bool nbd_accept_export(NbdClient *s, struct nbd_handle *nbd,
                              bool first, Error **errp)
{
    int64_t size = nbd_get_size(nbd);

    if (size < 0) {
        error_setg(errp, "Failed to get the size of export '%s': %s",
                   s->export, nbd_get_error());
        return false;
    }
    if (!first) {
        if (size != s->size) {
            error_setg(errp, "Export '%s' changed its size from %" PRId64
                       " to %" PRId64, s->export, s->size, size);
            return false;
        }
        return true;
    }
    s->size = size;
    s->can_flush = nbd_can_flush(nbd) > 0;
    s->can_fua = nbd_can_fua(nbd) > 0;
    s->can_trim = nbd_can_trim(nbd) > 0;
    s->can_zero = nbd_can_zero(nbd) > 0;
    s->can_fast_zero = nbd_can_fast_zero(nbd) > 0;
    s->has_meta_context = nbd_can_meta_context(nbd, s->meta_context) > 0;
    return true;
}

static void nbd_connected(NbdClient *s, struct nbd_handle *nbd)
{
    s->nbd = nbd;
    nbd_watch_start(s);
    if (s->delay_timer) {
        g_source_remove(s->delay_timer);
        s->delay_timer = 0;
    }
    s->delay_expired = false;
    co_queue_restart_all(&s->reconnect_waiters);
}

bool coroutine_fn nbd_client_connect(NbdClient *s, uint32_t timeout_s,
                                     Error **errp)
{
    gint64 deadline = g_get_monotonic_time() + timeout_s * G_USEC_PER_SEC;
    guint pause_ms = RECONNECT_FIRST_PAUSE_MS;

    s->attempt_fd = -1;
    co_queue_init(&s->reconnect_waiters);
    for (;;) {
        g_autoptr(Error) local_err = NULL;
        struct nbd_handle *nbd = nbd_client_connect_once(s, &local_err);
        gint64 left;

        if (nbd) {
            if (!nbd_accept_export(s, nbd, true, errp)) {
                nbd_close(nbd);
                return false;
            }
            nbd_connected(s, nbd);
            return true;
        }
        left = (deadline - g_get_monotonic_time()) / 1000;
        if (left <= 0) {
            error_propagate(errp, g_steal_pointer(&local_err));
            return false;
        }
        nbd_co_sleep_ms(s, MIN(pause_ms, left));
        pause_ms = MIN(pause_ms * 2, RECONNECT_MAX_PAUSE_MS);
    }
}

/* --- reconnecting --- */

static gboolean nbd_delay_expired(gpointer opaque)
{
    NbdClient *s = opaque;

    s->delay_timer = 0;
    s->delay_expired = true;
    co_queue_restart_all(&s->reconnect_waiters);
    return G_SOURCE_REMOVE;
}

static void coroutine_fn nbd_reconnect_entry(void *opaque)
{
    NbdClient *s = opaque;
    guint pause_ms = RECONNECT_FIRST_PAUSE_MS;

    while (!s->closing) {
        g_autoptr(Error) local_err = NULL;
        struct nbd_handle *nbd = nbd_client_connect_once(s, &local_err);

        if (nbd && !s->closing &&
            nbd_accept_export(s, nbd, false, &local_err)) {
            nbd_connected(s, nbd);
            break;
        }
        if (nbd) {
            nbd_close(nbd);
        }
        if (!s->closing) {
            nbd_co_sleep_ms(s, pause_ms);
            pause_ms = MIN(pause_ms * 2, RECONNECT_MAX_PAUSE_MS);
        }
    }
    s->reconnect_co = NULL;
}

void nbd_client_connection_lost(NbdClient *s)
{
    if (!s->nbd) {
        return;
    }
    nbd_watch_stop(s);
    nbd_close(s->nbd);
    s->nbd = NULL;
    s->generation++;
    if (s->closing) {
        return;     /* its relay forwards the disconnection: see below */
    }
    /* Only the lost connection has a relay yet: reconnecting follows. */
    nbd_client_tls_cut(s);
    s->delay_expired = s->reconnect_delay == 0;
    if (!s->delay_expired) {
        s->delay_timer = timeout_add_seconds(s->reconnect_delay,
                                             nbd_delay_expired, s);
    }
    /* Requests already waiting see the new deadline. */
    co_queue_restart_all(&s->reconnect_waiters);
    s->reconnect_co = coroutine_create(nbd_reconnect_entry, s);
    coroutine_wake(s->reconnect_co);
}

int coroutine_fn nbd_client_wait_connected(NbdClient *s)
{
    while (!s->nbd) {
        if (s->closing || s->delay_expired) {
            return -EIO;
        }
        co_queue_wait(&s->reconnect_waiters);
    }
    return 0;
}

/*
 * Closing: the TLS relays had their chance to end cleanly.  Repeats, for
 * the relay of a reconnection attempt that was still under way.
 */
static gboolean nbd_close_grace_over(gpointer opaque)
{
    nbd_client_tls_cut(opaque);
    return G_SOURCE_CONTINUE;
}

void nbd_client_close(NbdClient *s)
{
    guint cut_timer;

    s->closing = true;
    if (s->delay_timer) {
        g_source_remove(s->delay_timer);
        s->delay_timer = 0;
    }
    if (s->nbd) {
        /* Best effort: tell the server, without waiting for it. */
        nbd_aio_disconnect(s->nbd, 0);
        nbd_client_connection_lost(s);
    }
    /*
     * End a reconnection attempt: cut its socket or its pause short.
     * TLS relays end once they have passed the disconnection on, or are
     * cut after a grace period.
     */
    cut_timer = g_timeout_add(NBD_TLS_CLOSE_GRACE_MS, nbd_close_grace_over, s);
    while (s->reconnect_co || s->tls_relays) {
        if (s->attempt_fd >= 0) {
            shutdown(s->attempt_fd, SHUT_RDWR);
        }
        if (s->sleep_timer) {
            g_source_remove(s->sleep_timer);
            s->sleep_timer = 0;
            coroutine_wake(s->sleeper);
        }
        main_loop_wait(true);
    }
    g_source_remove(cut_timer);
    co_queue_restart_all(&s->reconnect_waiters);
}
