/*
 * QMP dispatch: the command table and request -> response.
 *
 * Validation order and messages follow QEMU 7.2, because clients match on
 * them: the request must be an object; only "execute" (or "exec-oob"),
 * "arguments" and "id" are allowed; "execute" must be a string naming a
 * known command; "arguments" must be an object.  The "id" member is
 * copied into the response verbatim, whatever its JSON type.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "qapi/qmp-dispatch.h"

void qmp_command_list_init(QmpCommandList *cmds)
{
    cmds->cmds = g_ptr_array_new_with_free_func(g_free);
}

void qmp_command_list_destroy(QmpCommandList *cmds)
{
    if (cmds->cmds) {
        g_ptr_array_free(cmds->cmds, true);
        cmds->cmds = NULL;
    }
}

void qmp_register_command(QmpCommandList *cmds, const char *name,
                          QmpCommandFunc *fn, QmpCommandOptions options)
{
    QmpCommand *cmd;

    assert(!qmp_find_command(cmds, name));
    cmd = g_new0(QmpCommand, 1);
    cmd->name = name;
    cmd->fn = fn;
    cmd->options = options;
    cmd->enabled = true;
    g_ptr_array_add(cmds->cmds, cmd);
}

void qmp_unregister_command(QmpCommandList *cmds, const char *name)
{
    guint i;

    for (i = 0; i < cmds->cmds->len; i++) {
        QmpCommand *cmd = g_ptr_array_index(cmds->cmds, i);

        if (!strcmp(cmd->name, name)) {
            g_ptr_array_remove_index(cmds->cmds, i);
            return;
        }
    }
}

const QmpCommand *qmp_find_command(const QmpCommandList *cmds,
                                   const char *name)
{
    guint i;

    for (i = 0; i < cmds->cmds->len; i++) {
        QmpCommand *cmd = g_ptr_array_index(cmds->cmds, i);

        if (!strcmp(cmd->name, name)) {
            return cmd;
        }
    }
    return NULL;
}

void qmp_for_each_command(const QmpCommandList *cmds,
                          void (*fn)(const QmpCommand *cmd, void *opaque),
                          void *opaque)
{
    guint i;

    for (i = 0; i < cmds->cmds->len; i++) {
        fn(g_ptr_array_index(cmds->cmds, i), opaque);
    }
}

json_object *qmp_error_response(Error *err, json_object *id, bool has_id)
{
    json_object *resp = json_object_new_object();
    json_object *error = json_object_new_object();

    json_object_object_add(error, "class",
        json_object_new_string(ErrorClass_str(error_get_class(err))));
    json_object_object_add(error, "desc",
        json_object_new_string(error_get_pretty(err)));
    json_object_object_add(resp, "error", error);
    if (has_id) {
        json_object_object_add(resp, "id", json_object_get(id));
    }
    error_free(err);
    return resp;
}

/* Check the request envelope; returns the command or NULL with @errp set */
static const QmpCommand *qmp_check_request(const QmpCommandList *cmds,
                                           json_object *request,
                                           bool allow_oob,
                                           json_object **args, Error **errp)
{
    json_object *exec = NULL;
    json_object *oob = NULL;
    bool has_exec, has_oob;
    const char *name;
    const QmpCommand *cmd;

    if (!json_object_is_type(request, json_type_object)) {
        error_setg(errp, "QMP input must be a JSON object");
        return NULL;
    }
    has_exec = json_object_object_get_ex(request, "execute", &exec);
    has_oob = allow_oob &&
        json_object_object_get_ex(request, "exec-oob", &oob);
    json_object_object_foreach(request, key, val) {
        (void)val;
        if (strcmp(key, "execute") && strcmp(key, "arguments") &&
            strcmp(key, "id") && (!allow_oob || strcmp(key, "exec-oob"))) {
            error_setg(errp, "QMP input member '%s' is unexpected", key);
            return NULL;
        }
    }
    if (has_exec && has_oob) {
        error_setg(errp, "QMP input must not have both 'execute' and "
                   "'exec-oob'");
        return NULL;
    }
    if (has_oob) {
        exec = oob;
    } else if (!has_exec) {
        error_setg(errp, "QMP input lacks member 'execute'");
        return NULL;
    }
    if (!json_object_is_type(exec, json_type_string)) {
        error_setg(errp, "QMP input member '%s' must be a string",
                   has_oob ? "exec-oob" : "execute");
        return NULL;
    }
    name = json_object_get_string(exec);
    if (json_object_object_get_ex(request, "arguments", args) &&
        !json_object_is_type(*args, json_type_object)) {
        error_setg(errp, "QMP input member 'arguments' must be an object");
        return NULL;
    }
    cmd = qmp_find_command(cmds, name);
    if (!cmd || !cmd->enabled) {
        error_set(errp, ERROR_CLASS_COMMAND_NOT_FOUND,
                  "The command %s has not been found", name);
        return NULL;
    }
    if (has_oob && !(cmd->options & QCO_ALLOW_OOB)) {
        error_setg(errp, "The command %s does not support OOB", name);
        return NULL;
    }
    return cmd;
}

json_object *coroutine_fn qmp_dispatch(const QmpCommandList *cmds,
                                       json_object *request,
                                       bool allow_oob)
{
    Error *err = NULL;
    json_object *id = NULL;
    bool has_id = false;
    json_object *args = NULL;
    json_object *ret = NULL;
    json_object *resp;
    const QmpCommand *cmd;

    if (json_object_is_type(request, json_type_object)) {
        has_id = json_object_object_get_ex(request, "id", &id);
    }
    cmd = qmp_check_request(cmds, request, allow_oob, &args, &err);
    if (!cmd) {
        return qmp_error_response(err, id, has_id);
    }
    if (!args) {
        args = json_object_new_object();
    } else {
        json_object_get(args);
    }
    cmd->fn(args, &ret, &err);
    json_object_put(args);
    if (err) {
        json_object_put(ret);
        return qmp_error_response(err, id, has_id);
    }
    resp = json_object_new_object();
    json_object_object_add(resp, "return",
                           ret ? ret : json_object_new_object());
    if (has_id) {
        json_object_object_add(resp, "id", json_object_get(id));
    }
    return resp;
}
