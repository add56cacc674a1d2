/*
 * Private header of monitor/.
 *
 * Chardev (chardev.c): a listening socket created by --chardev.  A
 * chardev with a monitor attached (--monitor) turns every accepted
 * connection into a MonitorQMP session (qmp.c).
 *
 * Ownership: chardevs live until monitor_cleanup().  A session is
 * reference-counted: the connection holds one reference until it is
 * closed, and a request waiting in or running in the dispatcher holds
 * another, so a client that disconnects mid-command leaves the session
 * alive (marked dead) until its command has finished.
 */
#ifndef MONITOR_MONITOR_INTERNAL_H
#define MONITOR_MONITOR_INTERNAL_H

#include "util/osdep.h"
#include "util/error.h"
#include "qapi/util.h"
#include "qapi/qmp-dispatch.h"

/* The lead's meson.build passes -DBLOCKD_VERSION="X.Y.Z" */
#ifdef BLOCKD_VERSION
#define BLOCKD_VERSION_STRING BLOCKD_VERSION
#else
#define BLOCKD_VERSION_STRING "0.1.0"
#endif

/*
 * The QEMU release whose QMP interface blockd implements.  QMP clients
 * decide what they may use from the "qemu" version member, so that is
 * where this goes; blockd's own version is in "package".
 */
#define QMP_INTERFACE_MAJOR 7
#define QMP_INTERFACE_MINOR 2
#define QMP_INTERFACE_MICRO 0

typedef struct Chardev {
    /* Set at creation, never changed */
    char *id;
    char *unix_path;            /* NULL for TCP */
    int listen_fd;
    guint listen_watch;

    /* Set by --monitor */
    bool has_monitor;
    bool pretty;
} Chardev;

/* Commands available after capabilities negotiation */
extern QmpCommandList qmp_commands;
/* Commands available before: only qmp_capabilities */
extern QmpCommandList qmp_cap_negotiation_commands;

Chardev *chardev_find(const char *id);

/* Start a QMP session on accepted connection @fd (takes ownership). */
void monitor_qmp_new(Chardev *chr, int fd);

/* Close all sessions (monitor_cleanup()). */
void monitor_qmp_cleanup(void);

/* Start the dispatcher coroutine. */
void monitor_qmp_dispatcher_init(void);

/*
 * The session whose command is running, for qmp_capabilities; NULL
 * outside command execution.
 */
typedef struct MonitorQMP MonitorQMP;
MonitorQMP *monitor_cur(void);
bool monitor_qmp_negotiated(MonitorQMP *mon);
void monitor_qmp_set_negotiated(MonitorQMP *mon, bool oob);

#endif /* MONITOR_MONITOR_INTERNAL_H */
