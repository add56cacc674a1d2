/*
 * blockd: the storage daemon.
 *
 * The command line is qemu-storage-daemon's.  Options are processed in
 * the order given, and each one runs the same code as its QMP command
 * (--blockdev is blockdev-add, --export is block-export-add, ...), so the
 * two interfaces cannot drift apart.  The process is ready, and writes
 * its pidfile or lets its --daemonize parent exit, only after every
 * option has been processed.
 *
 * Shutdown (SIGTERM, SIGINT, SIGHUP or QMP quit) cancels the jobs and
 * waits for them, closes the exports and the NBD server, so no new I/O
 * arrives, then flushes and closes every node, then the monitors.
 */
#include "util/osdep.h"
#include "util/coroutine.h"
#include "util/error.h"
#include "util/main-loop.h"
#include "util/shutdown.h"
#include "block/blockdev.h"
#include "block/export.h"
#include "block/job.h"
#include "monitor/monitor.h"
#include "nbd/nbd.h"
#include "qom/object.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-visit.h"
#include "qapi/qmp-option.h"
#include "trace/control.h"

#include <fcntl.h>
#include <getopt.h>
#include <glib-unix.h>
#include <signal.h>
#include <sys/file.h>

static char *pidfile_path;

static gboolean on_exit_signal(gpointer opaque)
{
    shutdown_request();
    return G_SOURCE_CONTINUE;
}

static void help(void)
{
    printf(
"Usage: blockd [options]\n"
"blockd storage daemon (command line and QMP compatible with\n"
"qemu-storage-daemon)\n"
"\n"
"  -h, --help             display this help and exit\n"
"  -T, --trace [[enable=]<pattern>][,events=<file>][,file=<file>]\n"
"                         specify tracing options\n"
"  -V, --version          output version information and exit\n"
"\n"
"  --blockdev [driver=]<driver>[,node-name=<N>][,discard=ignore|unmap]\n"
"             [,cache.direct=on|off][,cache.no-flush=on|off]\n"
"             [,read-only=on|off][,auto-read-only=on|off]\n"
"             [,driver specific parameters...]\n"
"                         configure a block node (drivers: file, raw,\n"
"                         null-co); also accepts JSON: --blockdev '{...}'\n"
"\n"
"  --chardev socket,id=<id>,path=<path>[,server=on][,wait=off]\n"
"                         configure a UNIX socket character device\n"
"\n"
"  --daemonize            daemonize the process, and have the parent exit\n"
"                         once startup is complete\n"
"\n"
"  --export [type=]nbd,id=<id>,node-name=<node-name>[,name=<export-name>]\n"
"           [,writable=on|off][,description=<text>]\n"
"                         export the specified block node over NBD\n"
"                         (requires --nbd-server)\n"
"\n"
"  --monitor [chardev=]name[,mode=control][,pretty[=on|off]]\n"
"                         configure a QMP monitor\n"
"\n"
"  --nbd-server addr.type=inet,addr.host=<host>,addr.port=<port>\n"
"               [,tls-creds=<id>][,tls-authz=<id>][,max-connections=<n>]\n"
"  --nbd-server addr.type=unix,addr.path=<path>[,tls-creds=<id>]\n"
"               [,tls-authz=<id>][,max-connections=<n>]\n"
"                         start an NBD server for exporting block nodes\n"
"\n"
"  --object <type>,id=<id>[,<property>=<value>...]\n"
"                         create an object (tls-creds-x509, tls-creds-psk,\n"
"                         authz-simple, authz-list), e.g. TLS credentials\n"
"                         for --nbd-server tls-creds=<id>\n"
"\n"
"  --pidfile <path>       write process ID to a file after startup\n");
}

enum {
    OPTION_BLOCKDEV = 256,
    OPTION_CHARDEV,
    OPTION_DAEMONIZE,
    OPTION_EXPORT,
    OPTION_MONITOR,
    OPTION_NBD_SERVER,
    OPTION_OBJECT,
    OPTION_PIDFILE,
};

static const struct option long_options[] = {
    { "blockdev", required_argument, NULL, OPTION_BLOCKDEV },
    { "chardev", required_argument, NULL, OPTION_CHARDEV },
    { "daemonize", no_argument, NULL, OPTION_DAEMONIZE },
    { "export", required_argument, NULL, OPTION_EXPORT },
    { "help", no_argument, NULL, 'h' },
    { "monitor", required_argument, NULL, OPTION_MONITOR },
    { "nbd-server", required_argument, NULL, OPTION_NBD_SERVER },
    { "object", required_argument, NULL, OPTION_OBJECT },
    { "pidfile", required_argument, NULL, OPTION_PIDFILE },
    { "trace", required_argument, NULL, 'T' },
    { "version", no_argument, NULL, 'V' },
    { NULL, 0, NULL, 0 },
};

/* An option that maps onto a QMP command, run in coroutine context. */
typedef struct OptionCommand {
    int option;
    const char *arg;
    bool ok;
    Error *err;
} OptionCommand;

static void coroutine_fn option_command_entry(void *opaque)
{
    OptionCommand *cmd = opaque;
    Error **errp = &cmd->err;

    switch (cmd->option) {
    case OPTION_BLOCKDEV: {
        g_autoptr(BlockdevOptions) opts =
            qmp_option_parse_BlockdevOptions(cmd->arg, "driver", errp);

        if (opts) {
            qmp_blockdev_add(opts, errp);
        }
        break;
    }
    case OPTION_EXPORT: {
        g_autoptr(BlockExportOptions) opts =
            qmp_option_parse_BlockExportOptions(cmd->arg, "type", errp);

        if (opts) {
            blk_exp_add(opts, errp);
        }
        break;
    }
    case OPTION_NBD_SERVER: {
        g_autoptr(NbdServerOptions) opts =
            qmp_option_parse_NbdServerOptions(cmd->arg, NULL, errp);

        if (opts) {
            nbd_server_start_options(opts, errp);
        }
        break;
    }
    default:
        g_assert_not_reached();
    }
    cmd->ok = cmd->err == NULL;
}

static bool process_option(int option, const char *arg, Error **errp)
{
    OptionCommand cmd = { .option = option, .arg = arg };

    switch (option) {
    case 'T':
        return trace_opt_parse(arg, errp);
    case OPTION_CHARDEV:
        return monitor_chardev_add_opts(arg, errp);
    case OPTION_MONITOR:
        return monitor_add_opts(arg, errp);
    case OPTION_OBJECT: {
        g_autoptr(ObjectOptions) opts =
            qmp_option_parse_ObjectOptions(arg, "qom-type", errp);

        return opts && object_add(opts, errp);
    }
    case OPTION_BLOCKDEV:
    case OPTION_EXPORT:
    case OPTION_NBD_SERVER:
        co_run_sync(option_command_entry, &cmd);
        error_propagate(errp, cmd.err);
        return cmd.ok;
    default:
        g_assert_not_reached();
    }
}

/*
 * The pidfile is locked for as long as we run, so a second daemon with
 * the same pidfile refuses to start instead of stealing it.
 */
static bool pidfile_write(const char *path, Error **errp)
{
    g_autofree char *content = g_strdup_printf("%d\n", getpid());
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);

    if (fd < 0) {
        error_setg_errno(errp, errno, "Cannot open pid file");
        return false;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) < 0) {
        error_setg(errp, "Cannot lock pid file, is another instance "
                   "running?");
        close(fd);
        return false;
    }
    if (ftruncate(fd, 0) < 0 ||
        write(fd, content, strlen(content)) != (ssize_t)strlen(content)) {
        error_setg_errno(errp, errno, "Failed to write pid file");
        close(fd);
        return false;
    }
    /* Keep fd open: it holds the lock until we exit. */
    pidfile_path = g_strdup(path);
    return true;
}

/*
 * --daemonize: fork; the parent waits on a pipe until the child reports
 * that start-up finished (one byte: 0 for success), then exits with the
 * matching status.  The child starts a new session and leaves the
 * terminal.
 */
static int daemonize_start(void)
{
    int fds[2];
    pid_t pid;

    if (pipe2(fds, O_CLOEXEC) < 0) {
        error_report("cannot create pipe: %s", g_strerror(errno));
        exit(1);
    }
    pid = fork();
    if (pid < 0) {
        error_report("cannot fork: %s", g_strerror(errno));
        exit(1);
    }
    if (pid > 0) {
        char status = 1;

        close(fds[1]);
        if (read(fds[0], &status, 1) != 1) {
            status = 1;
        }
        _exit(status);
    }
    close(fds[0]);
    setsid();
    return fds[1];
}

static void daemonize_finish(int ready_fd)
{
    char status = 0;
    int null_fd = open("/dev/null", O_RDWR);

    dup2(null_fd, STDIN_FILENO);
    dup2(null_fd, STDOUT_FILENO);
    dup2(null_fd, STDERR_FILENO);
    close(null_fd);
    if (write(ready_fd, &status, 1) != 1) {
        /* The parent is gone; nobody to tell. */
    }
    close(ready_fd);
}

/* Called from error paths during start-up: exits with status 1. */
static void G_GNUC_NORETURN option_error(const char *name, const char *arg,
                                          Error *err)
{
    error_prepend(&err, "--%s %s: ", name, arg);
    error_report_err(err);
    exit(1);
}

static const char *option_name(int option)
{
    for (const struct option *o = long_options; o->name; o++) {
        if (o->val == option) {
            return o->name;
        }
    }
    return "?";
}

static void shutdown_daemon(void)
{
    job_cancel_sync_all();
    blk_exp_close_all();
    nbd_server_shutdown();
    object_del_all();
    blockdev_close_all();
    monitor_cleanup();
    if (pidfile_path) {
        unlink(pidfile_path);
    }
}

int main(int argc, char **argv)
{
    const char *pidfile = NULL;
    bool daemonize = false;
    int ready_fd = -1;
    int c;

    signal(SIGPIPE, SIG_IGN);
    monitor_init_qmp_commands();

    /* First pass: options that change how we start. */
    opterr = 0;
    while ((c = getopt_long(argc, argv, "-:hT:V", long_options, NULL)) != -1) {
        switch (c) {
        case 'h':
            help();
            return 0;
        case 'V':
            printf("blockd version %s\n", BLOCKD_VERSION);
            return 0;
        case OPTION_DAEMONIZE:
            daemonize = true;
            break;
        case OPTION_PIDFILE:
            pidfile = optarg;
            break;
        case 1:
            error_report("%s: Unexpected argument", optarg);
            return 1;
        case ':':
            error_report("option '%s' requires an argument", argv[optind - 1]);
            return 1;
        case '?':
            error_report("unrecognized option '%s'", argv[optind - 1]);
            return 1;
        default:
            break;
        }
    }

    if (daemonize) {
        ready_fd = daemonize_start();
    }

    /* Second pass: everything else, in order. */
    optind = 0;
    while ((c = getopt_long(argc, argv, "-:hT:V", long_options, NULL)) != -1) {
        Error *err = NULL;

        switch (c) {
        case OPTION_BLOCKDEV:
        case OPTION_CHARDEV:
        case OPTION_EXPORT:
        case OPTION_MONITOR:
        case OPTION_NBD_SERVER:
        case OPTION_OBJECT:
        case 'T':
            if (!process_option(c, optarg, &err)) {
                option_error(option_name(c), optarg, err);
            }
            break;
        default:
            break;
        }
    }

    if (pidfile) {
        Error *err = NULL;

        if (!pidfile_write(pidfile, &err)) {
            error_report_err(err);
            return 1;
        }
    }
    if (daemonize) {
        daemonize_finish(ready_fd);
    }

    g_unix_signal_add(SIGTERM, on_exit_signal, NULL);
    g_unix_signal_add(SIGINT, on_exit_signal, NULL);
    g_unix_signal_add(SIGHUP, on_exit_signal, NULL);

    while (!shutdown_requested()) {
        main_loop_wait(true);
    }
    shutdown_daemon();
    return 0;
}
