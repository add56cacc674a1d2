/*
 * The log backend: an enabled trace point prints "name arguments" as one
 * line, to stderr or to the file given with --trace file=, as QEMU's
 * "log" backend does in qemu-storage-daemon.
 *
 * Each line is one fprintf() call: stdio locks the stream for it, so lines
 * from several threads do not interleave.
 */
#include "trace/control.h"

#include <stdarg.h>

/* Set during start-up (--trace file=), before any I/O thread logs. */
static FILE *trace_log_file;

void trace_log(const char *fmt, ...)
{
    va_list ap;

    va_start(ap, fmt);
    vfprintf(trace_log_file ? trace_log_file : stderr, fmt, ap);
    va_end(ap);
}

bool trace_log_set_file(const char *path, Error **errp)
{
    FILE *f = NULL;

    if (path) {
        f = fopen(path, "we");
        if (!f) {
            error_setg_errno(errp, errno, "Error opening logfile %s", path);
            return false;
        }
        /* Whole lines reach the file as they are written. */
        setvbuf(f, NULL, _IOLBF, 0);
    }
    if (trace_log_file) {
        fclose(trace_log_file);
    }
    trace_log_file = f;
    return true;
}
