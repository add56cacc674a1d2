/*
 * The QMP commands of the monitor itself: qmp_capabilities,
 * query-version, query-commands and query-qmp-schema; and the setup of
 * the command tables.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-introspect.h"
#include "monitor/monitor.h"
#include "monitor-internal.h"

void qmp_qmp_capabilities(QMPCapabilityList *enable, Error **errp)
{
    MonitorQMP *mon = monitor_cur();
    bool oob = false;

    assert(mon);
    if (monitor_qmp_negotiated(mon)) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "Capabilities negotiation is already complete, command "
                  "ignored");
        return;
    }
    for (; enable; enable = enable->next) {
        oob |= enable->value == QMP_CAPABILITY_OOB;
    }
    monitor_qmp_set_negotiated(mon, oob);
}

VersionInfo *qmp_query_version(Error **errp)
{
    VersionInfo *info = g_new0(VersionInfo, 1);

    info->qemu = g_new0(VersionTriple, 1);
    info->qemu->major = QMP_INTERFACE_MAJOR;
    info->qemu->minor = QMP_INTERFACE_MINOR;
    info->qemu->micro = QMP_INTERFACE_MICRO;
    info->package = g_strdup("blockd " BLOCKD_VERSION_STRING);
    return info;
}

static void add_command_info(const QmpCommand *cmd, void *opaque)
{
    CommandInfoList **list = opaque;
    CommandInfoList *node = g_new0(CommandInfoList, 1);

    if (!cmd->enabled) {
        g_free(node);
        return;
    }
    node->value = g_new0(CommandInfo, 1);
    node->value->name = g_strdup(cmd->name);
    node->next = *list;
    *list = node;
}

CommandInfoList *qmp_query_commands(Error **errp)
{
    CommandInfoList *list = NULL;

    qmp_for_each_command(&qmp_commands, add_command_info, &list);
    return list;
}

json_object *qmp_query_qmp_schema(Error **errp)
{
    static json_object *schema;

    if (!schema) {
        schema = json_tokener_parse(qmp_schema_json);
        assert(schema);
    }
    return json_object_get(schema);
}

void monitor_init_qmp_commands(void)
{
    const QmpCommand *cap;

    if (qmp_commands.cmds) {
        return;
    }
    qmp_command_list_init(&qmp_commands);
    qmp_init_marshal(&qmp_commands);
    qmp_command_list_init(&qmp_cap_negotiation_commands);
    cap = qmp_find_command(&qmp_commands, "qmp_capabilities");
    qmp_register_command(&qmp_cap_negotiation_commands, cap->name, cap->fn,
                         cap->options);
    monitor_qmp_dispatcher_init();
}
