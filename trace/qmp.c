/*
 * QMP commands for trace events: trace-event-get-state and
 * trace-event-set-state, with QEMU's errors.
 *
 * A name without '*' or '?' must name an event; a pattern may match none.
 * Every event is built in, so none is "unavailable" and
 * @ignore-unavailable changes nothing.  There are no vCPUs, so any @vcpu
 * is an invalid index, as it is in a QEMU without that vCPU.
 */
#include "trace/control.h"
#include "qapi/qapi-commands.h"

static bool trace_qmp_check(const char *name, bool has_vcpu, int64_t vcpu,
                            Error **errp)
{
    if (has_vcpu) {
        error_setg(errp, "invalid vCPU index %u", (unsigned)vcpu);
        return false;
    }
    if (!trace_is_pattern(name) && !trace_event_find(name)) {
        error_setg(errp, "unknown event \"%s\"", name);
        return false;
    }
    return true;
}

TraceEventInfoList *qmp_trace_event_get_state(const char *name,
                                              bool has_vcpu, int64_t vcpu,
                                              Error **errp)
{
    TraceEventInfoList *head = NULL, **tail = &head;

    if (!trace_qmp_check(name, has_vcpu, vcpu, errp)) {
        return NULL;
    }
    for (TraceEvent *ev = trace_event_next(name, NULL); ev;
         ev = trace_event_next(name, ev)) {
        TraceEventInfoList *entry = g_new0(TraceEventInfoList, 1);

        entry->value = g_new0(TraceEventInfo, 1);
        entry->value->name = g_strdup(ev->name);
        entry->value->state = trace_event_enabled(ev)
                              ? TRACE_EVENT_STATE_ENABLED
                              : TRACE_EVENT_STATE_DISABLED;
        *tail = entry;
        tail = &entry->next;
    }
    return head;
}

void qmp_trace_event_set_state(const char *name, bool enable,
                               bool has_ignore_unavailable,
                               bool ignore_unavailable,
                               bool has_vcpu, int64_t vcpu, Error **errp)
{
    if (trace_qmp_check(name, has_vcpu, vcpu, errp)) {
        trace_enable_events(name, enable);
    }
}
