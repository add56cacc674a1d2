/*
 * Trace events: the run-time side of the trace points that
 * scripts/tracegen.py generates from each folder's trace-events file.
 *
 * Every event has one enabled flag.  A trace point costs one load and one
 * predicted-not-taken branch while its event is off; when it is on, the
 * log backend prints "name arguments" as one line to stderr or to the file
 * given with --trace file=.  USDT probes, where built in, fire whatever the
 * flag says: they are no-ops until perf or bpftrace attaches.
 *
 * Event names are matched with globs, as in QEMU: '*' matches any run of
 * characters, '?' one character, and everything else itself.
 *
 * The flags are set from the main loop (--trace, QMP) and read from any
 * thread; a trace point may see a change late, never torn.
 */
#ifndef TRACE_CONTROL_H
#define TRACE_CONTROL_H

#include "util/osdep.h"
#include "util/error.h"

typedef struct TraceEvent {
    const char *name;
    bool enabled;               /* atomic: read by trace points */
} TraceEvent;

/* The events of one trace-events file, NULL-terminated. */
typedef struct TraceEventGroup {
    TraceEvent *const *events;
    struct TraceEventGroup *next;
} TraceEventGroup;

/* Called by the generated code, from a constructor. */
void trace_register_group(TraceEventGroup *group);

static inline bool trace_event_enabled(TraceEvent *ev)
{
    return __builtin_expect(__atomic_load_n(&ev->enabled, __ATOMIC_RELAXED),
                            0);
}

/* Log backend: print one line (@fmt ends in "\n"). */
void trace_log(const char *fmt, ...) G_GNUC_PRINTF(1, 2);

/*
 * trace_log_set_file:
 * @path: file to append the log to, or NULL for stderr
 *
 * Returns false with @errp set if @path cannot be opened; the previous
 * destination stays in use.
 */
bool trace_log_set_file(const char *path, Error **errp);

/* Whether @name is a pattern rather than an event name. */
bool trace_is_pattern(const char *name);

/* Whether @name matches the glob @pattern. */
bool trace_pattern_match(const char *pattern, const char *name);

/* The event called @name, or NULL. */
TraceEvent *trace_event_find(const char *name);

/*
 * trace_event_next:
 * @pattern: glob to match
 * @prev: the event returned by the previous call, or NULL to start
 *
 * Returns the next event whose name matches @pattern, or NULL.
 */
TraceEvent *trace_event_next(const char *pattern, TraceEvent *prev);

void trace_event_set_enabled(TraceEvent *ev, bool enabled);

/* Sets every event matching @pattern; returns how many matched. */
unsigned trace_enable_events(const char *pattern, bool enabled);

/*
 * trace_opt_parse:
 * @arg: the argument of --trace / -T: [enable=]PATTERN[,events=FILE]
 *       [,file=FILE]
 *
 * Applies the option: opens the log file, enables the events listed in
 * the events file (one pattern a line, "-PATTERN" disables, '#' comments)
 * and the pattern.  A pattern that names no event only warns, as in
 * QEMU.  Returns false with @errp set on errors.
 */
bool trace_opt_parse(const char *arg, Error **errp);

#endif /* TRACE_CONTROL_H */
