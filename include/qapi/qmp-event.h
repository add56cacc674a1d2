/*
 * QMP events.
 */
#ifndef QAPI_QMP_EVENT_H
#define QAPI_QMP_EVENT_H

#include "qapi/util.h"

/*
 * qapi_event_emit:
 * @event: event name, e.g. "BLOCK_EXPORT_DELETED"
 * @data: the "data" member (a JSON object), or NULL for none; ownership
 *        passes to the callee
 *
 * Add a "timestamp" (wall clock) and send the event to every QMP monitor
 * that has completed capabilities negotiation.  Implemented in monitor/;
 * called by the generated qapi_event_send_*() functions.
 */
void qapi_event_emit(const char *event, json_object *data);

#endif /* QAPI_QMP_EVENT_H */
