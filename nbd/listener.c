/*
 * NBD server: listening sockets, nbd-server-start/-stop, connection limit.
 *
 * One NBDServer exists while the server runs.  It listens on a UNIX
 * socket, on every address a TCP host name resolves to (IPv4 and IPv6
 * alike; IPv6 sockets are v6-only so both families can share a port), or
 * on a listening socket inherited as a file descriptor.  Each listening
 * socket is a GLib fd source on the main loop; its callback accepts until
 * the backlog is empty.
 *
 * max-connections counts clients from accept until their socket is
 * closed, handshake included.  At the limit the server stops accepting:
 * further clients wait in the kernel's backlog, as with QEMU, and are
 * served in order as soon as a slot frees up.
 *
 * With tls-creds every client must start TLS before anything else (see
 * server-handshake.c); the server keeps a reference on the credentials,
 * so object-del does not pull them from under it, and looks the
 * tls-authz object up by id for each client.
 *
 * Stopping closes the listening sockets, unlinks the UNIX socket file we
 * created, disconnects every client (handshake included), and removes
 * every NBD export, waiting until they are gone.  The NBDServer itself
 * lives on until its last client has been freed, since clients count
 * themselves in it; a new server can start meanwhile.
 */
#include "nbd/nbd-internal.h"
#include "util/main-loop.h"
#include "qapi/qapi-commands.h"

#include <glib-unix.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

typedef struct NBDListener {
    int fd;
    guint source;
} NBDListener;

/* The running server, or NULL.  Main loop only. */
static NBDServer *nbd_server;

bool nbd_server_is_running(void)
{
    return nbd_server != NULL;
}

void nbd_server_unref(NBDServer *server)
{
    g_assert(server->refcount > 0);
    if (--server->refcount > 0) {
        return;
    }
    g_assert(!server->clients);
    if (server->tls_creds) {
        object_unref(&server->tls_creds->parent);
    }
    g_free(server->tls_authz);
    g_array_unref(server->listeners);
    g_free(server->unix_path);
    g_free(server);
}

static bool nbd_server_accepting(NBDServer *server);

static gboolean nbd_listener_accept(gint fd, GIOCondition cond,
                                    gpointer opaque)
{
    NBDServer *server = opaque;

    (void)cond;
    for (;;) {
        int one = 1;
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (cfd < 0) {
            if (errno == EINTR || errno == ECONNABORTED) {
                continue;
            }
            /* EAGAIN: backlog empty.  Others (EMFILE): retry later. */
            break;
        }
        /* Replies are written whole; do not let Nagle delay them. */
        setsockopt(cfd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
        nbd_client_new(server, cfd);
        if (!nbd_server_accepting(server)) {
            break;
        }
    }
    return G_SOURCE_CONTINUE;
}

static bool nbd_server_accepting(NBDServer *server)
{
    return !server->max_connections ||
           server->nclients < server->max_connections;
}

void nbd_server_update_accepting(NBDServer *server)
{
    bool accepting = nbd_server_accepting(server);

    for (guint i = 0; i < server->listeners->len; i++) {
        NBDListener *l = &g_array_index(server->listeners, NBDListener, i);

        if (accepting && !l->source) {
            l->source = g_unix_fd_add(l->fd, G_IO_IN, nbd_listener_accept,
                                      server);
        } else if (!accepting && l->source) {
            g_source_remove(l->source);
            l->source = 0;
        }
    }
}

bool nbd_server_add_client(int fd, Error **errp)
{
    if (!nbd_server) {
        error_setg(errp, "NBD server not running");
        close(fd);
        return false;
    }
    fd_set_nonblocking(fd);
    nbd_client_new(nbd_server, fd);
    return true;
}

static void nbd_server_add_listener(NBDServer *server, int fd)
{
    NBDListener l = {
        .fd = fd,
        .source = g_unix_fd_add(fd, G_IO_IN, nbd_listener_accept, server),
    };

    g_array_append_val(server->listeners, l);
}

static bool nbd_listen_unix(NBDServer *server, const char *path,
                            Error **errp)
{
    struct sockaddr_un sun = { .sun_family = AF_UNIX };
    struct stat st;
    int fd;

    if (strlen(path) >= sizeof(sun.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return false;
    }
    memcpy(sun.sun_path, path, strlen(path) + 1);

    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return false;
    }
    /* A stale socket from an earlier run is replaced; other files not. */
    if (lstat(path, &st) == 0 && S_ISSOCK(st.st_mode)) {
        unlink(path);
    }
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return false;
    }
    if (listen(fd, SOMAXCONN) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        unlink(path);
        close(fd);
        return false;
    }
    server->unix_path = g_strdup(path);
    nbd_server_add_listener(server, fd);
    return true;
}

static int nbd_listen_one_inet(const struct addrinfo *ai, int *err)
{
    int one = 1;
    int fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);

    if (fd < 0) {
        *err = errno;
        return -1;
    }
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (ai->ai_family == AF_INET6) {
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
    }
    if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 ||
        listen(fd, SOMAXCONN) < 0) {
        *err = errno;
        close(fd);
        return -1;
    }
    return fd;
}

static bool nbd_listen_inet(NBDServer *server, const char *host,
                            const char *port, Error **errp)
{
    struct addrinfo hints = {
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
        .ai_flags = AI_PASSIVE,
    };
    struct addrinfo *res = NULL;
    int err = 0;
    int rc;

    if (host && !*host) {
        host = NULL;        /* "" means every local address */
    }
    rc = getaddrinfo(host, port, &hints, &res);
    if (rc != 0) {
        error_setg(errp, "address resolution failed for %s:%s: %s",
                   host ? host : "", port, gai_strerror(rc));
        return false;
    }
    for (struct addrinfo *ai = res; ai; ai = ai->ai_next) {
        int fd = nbd_listen_one_inet(ai, &err);

        if (fd >= 0) {
            nbd_server_add_listener(server, fd);
        }
    }
    freeaddrinfo(res);

    if (server->listeners->len == 0) {
        error_setg_errno(errp, err, "Failed to bind socket");
        return false;
    }
    return true;
}

/* A listening socket passed in by number. */
static bool nbd_listen_fd(NBDServer *server, const char *str, Error **errp)
{
    int type = 0, listening = 0;
    socklen_t len = sizeof(type);
    char *end;
    long fd;

    errno = 0;
    fd = strtol(str, &end, 10);
    if (!*str || *end || errno || fd < 0 || fd > INT_MAX) {
        error_setg(errp, "File descriptor named '%s' has not been found",
                   str);
        return false;
    }
    if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 ||
        type != SOCK_STREAM) {
        error_setg(errp, "File descriptor %ld is not a stream socket", fd);
        return false;
    }
    len = sizeof(listening);
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) < 0 ||
        !listening) {
        error_setg(errp, "File descriptor %ld is not a listening socket",
                   fd);
        return false;
    }
    fd_set_nonblocking(fd);
    nbd_server_add_listener(server, fd);
    return true;
}

static void nbd_server_close_listeners(NBDServer *server)
{
    for (guint i = 0; i < server->listeners->len; i++) {
        NBDListener *l = &g_array_index(server->listeners, NBDListener, i);

        if (l->source) {
            g_source_remove(l->source);
        }
        close(l->fd);
    }
    g_array_set_size(server->listeners, 0);
    if (server->unix_path) {
        unlink(server->unix_path);
        g_free(server->unix_path);
        server->unix_path = NULL;
    }
}

/*
 * Start listening on @addr, which is described by its kind and strings
 * so that both SocketAddress and SocketAddressLegacy map onto it.
 */
static bool nbd_server_start_common(SocketAddressType type,
                                    const char *path, const char *host,
                                    const char *port, const char *fd_str,
                                    const char *tls_creds,
                                    const char *tls_authz,
                                    uint32_t max_connections, Error **errp)
{
    QCryptoTLSCreds *creds = NULL;
    NBDServer *server;
    bool ok;

    if (nbd_server) {
        error_setg(errp, "NBD server already running");
        return false;
    }
    /* As in QEMU 7.2, tls-authz without tls-creds is accepted (unused). */
    if (tls_creds) {
        creds = qcrypto_tls_creds_find(tls_creds,
                                       QCRYPTO_TLS_CREDS_ENDPOINT_SERVER,
                                       errp);
        if (!creds) {
            return false;
        }
    }

    server = g_new0(NBDServer, 1);
    if (creds) {
        server->tls_creds = creds;
        object_ref(&creds->parent);
        server->tls_authz = g_strdup(tls_authz);
    }
    server->refcount = 1;
    server->max_connections = max_connections;
    server->handshake_max_seconds = NBD_DEFAULT_HANDSHAKE_MAX_SECONDS;
    server->listeners = g_array_new(FALSE, FALSE, sizeof(NBDListener));

    switch (type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        ok = nbd_listen_unix(server, path, errp);
        break;
    case SOCKET_ADDRESS_TYPE_INET:
        ok = nbd_listen_inet(server, host, port, errp);
        break;
    case SOCKET_ADDRESS_TYPE_FD:
        ok = nbd_listen_fd(server, fd_str, errp);
        break;
    default:
        error_setg(errp, "This address type is not supported by the NBD "
                   "server");
        ok = false;
        break;
    }
    if (!ok) {
        nbd_server_close_listeners(server);
        nbd_server_unref(server);
        return false;
    }
    nbd_server = server;
    return true;
}

bool nbd_server_start(SocketAddress *addr, const char *tls_creds,
                      const char *tls_authz, uint32_t max_connections,
                      Error **errp)
{
    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        return nbd_server_start_common(addr->type, addr->u.q_unix.path,
                                       NULL, NULL, NULL, tls_creds,
                                       tls_authz, max_connections, errp);
    case SOCKET_ADDRESS_TYPE_INET:
        return nbd_server_start_common(addr->type, NULL,
                                       addr->u.inet.host, addr->u.inet.port,
                                       NULL, tls_creds, tls_authz,
                                       max_connections, errp);
    case SOCKET_ADDRESS_TYPE_FD:
        return nbd_server_start_common(addr->type, NULL, NULL, NULL,
                                       addr->u.fd.str, tls_creds,
                                       tls_authz, max_connections, errp);
    default:
        return nbd_server_start_common(addr->type, NULL, NULL, NULL, NULL,
                                       tls_creds, tls_authz,
                                       max_connections, errp);
    }
}

bool nbd_server_start_options(NbdServerOptions *opts, Error **errp)
{
    return nbd_server_start(opts->addr, opts->tls_creds, opts->tls_authz,
                            opts->has_max_connections
                            ? opts->max_connections
                            : NBD_DEFAULT_MAX_CONNECTIONS,
                            errp);
}

bool nbd_server_stop(Error **errp)
{
    NBDServer *server = nbd_server;

    if (!server) {
        error_setg(errp, "NBD server not running");
        return false;
    }

    /*
     * No new clients or exports, and every client is told to go, also
     * those in the handshake (one may hold an export while replying to
     * NBD_OPT_INFO).  Then wait until the exports are gone.
     */
    nbd_server = NULL;
    nbd_server_close_listeners(server);
    for (GList *l = server->clients; l; l = l->next) {
        nbd_client_kick(l->data);
    }
    blk_exp_close_all_type(BLOCK_EXPORT_TYPE_NBD);
    nbd_server_unref(server);
    return true;
}

void nbd_server_shutdown(void)
{
    if (nbd_server) {
        nbd_server_stop(&error_abort);
    }
}

void qmp_nbd_server_start(SocketAddressLegacy *addr, const char *tls_creds,
                          const char *tls_authz, bool has_max_connections,
                          uint32_t max_connections, Error **errp)
{
    uint32_t max = has_max_connections ? max_connections
                                       : NBD_DEFAULT_MAX_CONNECTIONS;

    switch (addr->type) {
    case SOCKET_ADDRESS_TYPE_UNIX:
        nbd_server_start_common(addr->type, addr->u.q_unix.data->path, NULL,
                                NULL, NULL, tls_creds, tls_authz, max,
                                errp);
        break;
    case SOCKET_ADDRESS_TYPE_INET:
        nbd_server_start_common(addr->type, NULL, addr->u.inet.data->host,
                                addr->u.inet.data->port, NULL, tls_creds,
                                tls_authz, max, errp);
        break;
    case SOCKET_ADDRESS_TYPE_FD:
        nbd_server_start_common(addr->type, NULL, NULL, NULL,
                                addr->u.fd.data->str, tls_creds, tls_authz,
                                max, errp);
        break;
    default:
        nbd_server_start_common(addr->type, NULL, NULL, NULL, NULL,
                                tls_creds, tls_authz, max, errp);
        break;
    }
}

void qmp_nbd_server_stop(Error **errp)
{
    nbd_server_stop(errp);
}
