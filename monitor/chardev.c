/*
 * Socket character devices (--chardev) and --monitor.
 *
 * blockd only needs what qemu-storage-daemon users pass for QMP:
 * "socket,id=ID,path=PATH,server=on,wait=off" (or host=,port= for TCP).
 * The option is parsed as keyval with the implied key "backend"; the
 * messages for bad options follow QEMU where QEMU's make sense.
 *
 * A listening socket is created at once (as QEMU does), so the socket file
 * exists when the daemon signals readiness.  Connections are accepted from
 * a GLib fd source; without a monitor attached they are closed at once.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "util/keyval.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-input-visitor.h"
#include "monitor/monitor.h"
#include "monitor-internal.h"

#include <fcntl.h>
#include <netdb.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <glib-unix.h>

static GPtrArray *chardevs;     /* Chardev * */

Chardev *chardev_find(const char *id)
{
    guint i;

    for (i = 0; chardevs && i < chardevs->len; i++) {
        Chardev *chr = g_ptr_array_index(chardevs, i);

        if (!strcmp(chr->id, id)) {
            return chr;
        }
    }
    return NULL;
}

static gboolean chardev_accept(gint fd, GIOCondition cond, gpointer opaque)
{
    Chardev *chr = opaque;
    int conn = accept4(fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);

    if (conn < 0) {
        return G_SOURCE_CONTINUE;
    }
    if (!chr->has_monitor) {
        close(conn);
        return G_SOURCE_CONTINUE;
    }
    monitor_qmp_new(chr, conn);
    return G_SOURCE_CONTINUE;
}

static int listen_unix(const char *path, Error **errp)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        error_setg(errp, "UNIX socket path '%s' is too long", path);
        return -1;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        error_setg_errno(errp, errno, "Failed to create socket");
        return -1;
    }
    /* Like QEMU, replace a stale socket left by an earlier run */
    unlink(path);
    if (bind(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        error_setg_errno(errp, errno, "Failed to bind socket to %s", path);
        close(fd);
        return -1;
    }
    if (listen(fd, 16) < 0) {
        error_setg_errno(errp, errno, "Failed to listen on socket");
        close(fd);
        unlink(path);
        return -1;
    }
    return fd;
}

static int listen_inet(const char *host, const char *port, Error **errp)
{
    struct addrinfo hints = {
        .ai_flags = AI_PASSIVE,
        .ai_family = AF_UNSPEC,
        .ai_socktype = SOCK_STREAM,
    };
    struct addrinfo *res, *ai;
    int saved_errno = 0;
    int rc, fd = -1;

    rc = getaddrinfo(*host ? host : NULL, port, &hints, &res);
    if (rc) {
        error_setg(errp, "address resolution failed for %s:%s: %s", host,
                   port, gai_strerror(rc));
        return -1;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;

        fd = socket(ai->ai_family,
                    ai->ai_socktype | SOCK_CLOEXEC | SOCK_NONBLOCK,
                    ai->ai_protocol);
        if (fd < 0) {
            saved_errno = errno;
            continue;
        }
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 &&
            listen(fd, 16) == 0) {
            break;
        }
        saved_errno = errno;
        close(fd);
        fd = -1;
    }
    freeaddrinfo(res);
    if (fd < 0) {
        error_setg_errno(errp, saved_errno, "Failed to bind socket to %s:%s",
                         host, port);
    }
    return fd;
}

static const char *const chardev_keys[] = {
    "backend", "id", "path", "host", "port", "server", "wait", "nodelay",
    "ipv4", "ipv6", "to", "telnet", "websocket", "abstract", "tight", NULL,
};

static const char *opt_str(json_object *opts, const char *key)
{
    json_object *val;

    if (!json_object_object_get_ex(opts, key, &val) ||
        !json_object_is_type(val, json_type_string)) {
        return NULL;
    }
    return json_object_get_string(val);
}

static bool opt_bool(json_object *opts, const char *key, bool def,
                     bool *out, Error **errp)
{
    const char *str = opt_str(opts, key);

    *out = def;
    if (str && !qapi_bool_parse_str(str, out)) {
        error_setg(errp, "Parameter '%s' expects 'on' or 'off'", key);
        return false;
    }
    return true;
}

bool monitor_chardev_add_opts(const char *arg, Error **errp)
{
    json_object *opts = keyval_parse(arg, "backend", NULL, errp);
    const char *id, *backend, *path, *host, *port;
    bool server, wait;
    Chardev *chr;
    int fd;

    if (!opts) {
        return false;
    }
    json_object_object_foreach(opts, key, val) {
        if (!g_strv_contains(chardev_keys, key) ||
            !json_object_is_type(val, json_type_string)) {
            error_setg(errp, "Invalid parameter '%s'", key);
            goto fail;
        }
    }
    id = opt_str(opts, "id");
    backend = opt_str(opts, "backend");
    path = opt_str(opts, "path");
    host = opt_str(opts, "host");
    port = opt_str(opts, "port");
    if (!id) {
        error_setg(errp, "chardev: no id specified");
        goto fail;
    }
    if (!backend) {
        error_setg(errp, "chardev: \"%s\" missing backend", id);
        goto fail;
    }
    if (strcmp(backend, "socket")) {
        error_setg(errp, "'%s' is not a valid char driver name", backend);
        goto fail;
    }
    if (!opt_bool(opts, "server", false, &server, errp) ||
        !opt_bool(opts, "wait", true, &wait, errp)) {
        goto fail;
    }
    if (!server) {
        error_setg(errp, "chardev '%s': only server=on is supported", id);
        goto fail;
    }
    if (chardev_find(id)) {
        error_setg(errp, "Chardev '%s' already exists", id);
        goto fail;
    }
    if (path && (host || port)) {
        error_setg(errp, "chardev '%s': 'path' cannot be combined with "
                   "'host' or 'port'", id);
        goto fail;
    }
    if (path) {
        fd = listen_unix(path, errp);
    } else if (port) {
        fd = listen_inet(host ? host : "", port, errp);
    } else {
        error_setg(errp, "chardev '%s': socket needs 'path' or 'host' and "
                   "'port'", id);
        goto fail;
    }
    if (fd < 0) {
        goto fail;
    }
    chr = g_new0(Chardev, 1);
    chr->id = g_strdup(id);
    chr->unix_path = g_strdup(path);
    chr->listen_fd = fd;
    chr->listen_watch = g_unix_fd_add(fd, G_IO_IN, chardev_accept, chr);
    if (!chardevs) {
        chardevs = g_ptr_array_new();
    }
    g_ptr_array_add(chardevs, chr);
    json_object_put(opts);
    return true;

fail:
    json_object_put(opts);
    return false;
}

bool monitor_add_opts(const char *arg, Error **errp)
{
    g_autoptr(MonitorOptions) opts = NULL;
    g_autoptr(Visitor) v = qmp_option_visitor_new(arg, "chardev", errp);
    Chardev *chr;

    if (!v || !visit_type_MonitorOptions(v, NULL, &opts, errp)) {
        return false;
    }
    if (opts->has_mode && opts->mode != MONITOR_MODE_CONTROL) {
        error_setg(errp, "Only QMP is supported");
        return false;
    }
    chr = chardev_find(opts->chardev);
    if (!chr) {
        error_setg(errp, "chardev \"%s\" not found", opts->chardev);
        return false;
    }
    if (chr->has_monitor) {
        error_setg(errp, "chardev '%s' is already in use", opts->chardev);
        return false;
    }
    chr->has_monitor = true;
    chr->pretty = opts->has_pretty && opts->pretty;
    return true;
}

void monitor_cleanup(void)
{
    guint i;

    monitor_qmp_cleanup();
    for (i = 0; chardevs && i < chardevs->len; i++) {
        Chardev *chr = g_ptr_array_index(chardevs, i);

        g_source_remove(chr->listen_watch);
        close(chr->listen_fd);
        if (chr->unix_path) {
            unlink(chr->unix_path);
        }
        g_free(chr->unix_path);
        g_free(chr->id);
        g_free(chr);
    }
    if (chardevs) {
        g_ptr_array_free(chardevs, true);
        chardevs = NULL;
    }
}
