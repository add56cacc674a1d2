/*
 * The QMP monitor: socket character devices (--chardev), QMP sessions on
 * them (--monitor), the command table and event broadcast.
 *
 * Everything here runs in the main thread.  Commands are executed one at
 * a time, in arrival order across all sessions, by a single dispatcher
 * coroutine, so command handlers may yield.
 */
#ifndef MONITOR_MONITOR_H
#define MONITOR_MONITOR_H

#include "util/osdep.h"
#include "util/error.h"

/*
 * Build the QMP command table from the schema (qmp_init_marshal()) and
 * start the dispatcher coroutine.  Call once before the first
 * monitor_add_opts().
 */
void monitor_init_qmp_commands(void);

/*
 * monitor_chardev_add_opts:
 * @arg: argument of --chardev, e.g.
 *          "socket,id=m0,path=/run/blockd.sock,server=on,wait=off"
 *          or "socket,id=m0,host=127.0.0.1,port=4444,server=on,wait=off"
 *
 * Create a listening socket character device.  Only the "socket" backend
 * in server mode is supported; wait=on is accepted but does not block.
 * An existing file at a UNIX socket path is replaced.
 */
bool monitor_chardev_add_opts(const char *arg, Error **errp);

/*
 * monitor_add_opts:
 * @arg: argument of --monitor: "[chardev=]ID[,mode=control][,pretty=on]"
 *          or the same as JSON
 *
 * Attach a QMP monitor to an existing chardev.  Every client connecting
 * to the chardev gets its own QMP session (QEMU serves one at a time).
 */
bool monitor_add_opts(const char *arg, Error **errp);

/*
 * Close every session and listening socket and unlink the UNIX socket
 * paths created by monitor_chardev_add_opts().  Requests not yet answered
 * are dropped.
 */
void monitor_cleanup(void);

#endif /* MONITOR_MONITOR_H */
