/*
 * Trace control: the table of events, glob patterns, and the --trace
 * option.
 *
 * Each folder's generated trace.c registers its events from a constructor
 * (see scripts/tracegen.py), so the table is a list of groups that is
 * complete before main() runs and never changes afterwards.  Lookups walk
 * it: they serve --trace and QMP, never a trace point.
 */
#include "trace/control.h"
#include "util/keyval.h"
#include "qapi/util.h"

static TraceEventGroup *trace_groups;

void trace_register_group(TraceEventGroup *group)
{
    group->next = trace_groups;
    trace_groups = group;
}

bool trace_is_pattern(const char *name)
{
    return strpbrk(name, "*?") != NULL;
}

/*
 * Glob matching without recursion: on a mismatch, let the last '*' seen
 * swallow one more character and retry from there.  Each '*' only ever
 * moves forward, so this is O(len(pattern) * len(name)).
 */
bool trace_pattern_match(const char *pattern, const char *name)
{
    const char *star = NULL;    /* just past the last '*' seen */
    const char *resume = NULL;  /* where in @name that '*' stopped */

    while (*name) {
        if (*pattern == '*') {
            star = ++pattern;
            resume = name;
        } else if (*pattern == '?' || *pattern == *name) {
            pattern++;
            name++;
        } else if (star) {
            pattern = star;
            name = ++resume;
        } else {
            return false;
        }
    }
    while (*pattern == '*') {
        pattern++;
    }
    return *pattern == '\0';
}

/* The event after @ev in the table, or the first one for NULL. */
static TraceEvent *trace_event_after(TraceEvent *ev)
{
    bool found = ev == NULL;

    for (TraceEventGroup *g = trace_groups; g; g = g->next) {
        for (TraceEvent *const *e = g->events; *e; e++) {
            if (found) {
                return *e;
            }
            found = *e == ev;
        }
    }
    return NULL;
}

TraceEvent *trace_event_next(const char *pattern, TraceEvent *prev)
{
    TraceEvent *ev = prev;

    while ((ev = trace_event_after(ev)) != NULL) {
        if (trace_pattern_match(pattern, ev->name)) {
            return ev;
        }
    }
    return NULL;
}

TraceEvent *trace_event_find(const char *name)
{
    for (TraceEventGroup *g = trace_groups; g; g = g->next) {
        for (TraceEvent *const *e = g->events; *e; e++) {
            if (strcmp((*e)->name, name) == 0) {
                return *e;
            }
        }
    }
    return NULL;
}

void trace_event_set_enabled(TraceEvent *ev, bool enabled)
{
    __atomic_store_n(&ev->enabled, enabled, __ATOMIC_RELAXED);
}

unsigned trace_enable_events(const char *pattern, bool enabled)
{
    unsigned count = 0;

    for (TraceEvent *ev = trace_event_next(pattern, NULL); ev;
         ev = trace_event_next(pattern, ev)) {
        trace_event_set_enabled(ev, enabled);
        count++;
    }
    return count;
}

/*
 * Enable @pattern, or disable it when it starts with '-'.  An event name
 * that matches nothing is a warning, naming @where, as in QEMU.
 */
static void trace_apply_pattern(const char *pattern, const char *where)
{
    bool enable = pattern[0] != '-';
    const char *glob = enable ? pattern : pattern + 1;

    if (!trace_enable_events(glob, enable) && !trace_is_pattern(glob)) {
        error_report("%s: warning: trace event '%s' does not exist", where,
                     glob);
    }
}

/* --trace events=FILE: one pattern a line; '#' starts a comment line. */
static bool trace_apply_events_file(const char *path, Error **errp)
{
    FILE *f = fopen(path, "re");
    g_autofree char *line = NULL;
    size_t size = 0;
    int lineno = 0;

    if (!f) {
        error_setg_errno(errp, errno, "%s", path);
        return false;
    }
    while (getline(&line, &size, f) >= 0) {
        g_autofree char *where = g_strdup_printf("%s:%d", path, ++lineno);
        char *pattern = g_strstrip(line);

        if (pattern[0] != '\0' && pattern[0] != '#') {
            trace_apply_pattern(pattern, where);
        }
    }
    fclose(f);
    return true;
}

/* The string value of @key in @opts, or NULL. */
static const char *trace_opt_get(json_object *opts, const char *key)
{
    json_object *val;

    return json_object_object_get_ex(opts, key, &val)
           ? json_object_get_string(val) : NULL;
}

/* Refuses keys other than enable, events and file, as QEMU does. */
static bool trace_opt_check_keys(json_object *opts, Error **errp)
{
    json_object_object_foreach(opts, key, val) {
        if ((strcmp(key, "enable") && strcmp(key, "events") &&
             strcmp(key, "file")) ||
            !json_object_is_type(val, json_type_string)) {
            error_setg(errp, "Invalid parameter '%s'", key);
            return false;
        }
    }
    return true;
}

bool trace_opt_parse(const char *arg, Error **errp)
{
    g_autoptr(json_object) opts = keyval_parse(arg, "enable", NULL, errp);
    const char *enable, *events, *file;

    if (!opts || !trace_opt_check_keys(opts, errp)) {
        return false;
    }
    enable = trace_opt_get(opts, "enable");
    events = trace_opt_get(opts, "events");
    file = trace_opt_get(opts, "file");

    if (file && !trace_log_set_file(file, errp)) {
        return false;
    }
    if (events && !trace_apply_events_file(events, errp)) {
        return false;
    }
    if (enable) {
        g_autofree char *where = g_strdup_printf("--trace %s", arg);

        trace_apply_pattern(enable, where);
    }
    return true;
}
