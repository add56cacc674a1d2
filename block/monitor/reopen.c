/*
 * blockdev-reopen: the QMP side.
 *
 * Each element of the list is the complete new option set of one open
 * node.  What may change, as in QEMU 7.2:
 *
 *  - read-only (left out: read/write), for drivers that can switch it;
 *  - the file child, named by node name (an inline definition must equal
 *    the one the node was opened with);
 *  - the backing child: a node name, or null for none; a node that has a
 *    backing child must say which ("backing is missing for 'NODE'");
 *  - detect-zeroes and discard.
 *
 * Everything else must be as the node was opened (bs->options keeps that,
 * as JSON), else "Cannot change the option 'KEY'".  The checks all run
 * before anything changes; then bdrv_reopen_multiple() applies every node's
 * change as one graph change, so the list takes effect whole or not at all.
 */
#include "block/block_int.h"
#include "qapi/qapi-commands.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-output-visitor.h"

json_object *bdrv_options_to_json(BlockdevOptions *options)
{
    json_object *obj = NULL;
    g_autoptr(Visitor) v = qobject_output_visitor_new(&obj);

    visit_type_BlockdevOptions(v, NULL, &options, &error_abort);
    visit_complete(v, &obj);
    return obj;
}

/* Options whose change is not compared key by key. */
static bool reopen_handles_key(const char *key)
{
    static const char *const handled[] = {
        "node-name", "driver", "read-only", "file", "backing",
        "detect-zeroes", "discard",
    };

    for (size_t i = 0; i < G_N_ELEMENTS(handled); i++) {
        if (!strcmp(key, handled[i])) {
            return true;
        }
    }
    return false;
}

/*
 * The first key (dotted, under @prefix) whose value differs between @new
 * and @old, or NULL.  At the top level (@top), the keys handled apart are
 * skipped.
 */
static char *first_changed_key(json_object *new, json_object *old,
                               const char *prefix, bool top)
{
    json_object_object_foreach(new, key, value) {
        json_object *was = NULL;

        if (top && reopen_handles_key(key)) {
            continue;
        }
        json_object_object_get_ex(old, key, &was);
        if (was && json_object_equal(value, was)) {
            continue;
        }
        if (was && json_object_is_type(value, json_type_object) &&
            json_object_is_type(was, json_type_object)) {
            g_autofree char *sub = g_strconcat(prefix, key, ".", NULL);

            return first_changed_key(value, was, sub, false);
        }
        return g_strconcat(prefix, key, NULL);
    }
    json_object_object_foreach(old, old_key, old_value) {
        (void)old_value;
        if (!(top && reopen_handles_key(old_key)) &&
            !json_object_object_get_ex(new, old_key, NULL)) {
            return g_strconcat(prefix, old_key, NULL);
        }
    }
    return NULL;
}

/*
 * The node a child option names: a reference is looked up; a definition
 * must be the one the node was opened with (*@same then).
 */
static bool reopen_child(BlockDriverState *bs, json_object *new_opts,
                         const char *name, BlockDriverState **child,
                         bool *same, Error **errp)
{
    json_object *value = NULL, *was = NULL;

    *child = NULL;
    *same = false;
    json_object_object_get_ex(new_opts, name, &value);
    if (json_object_is_type(value, json_type_string)) {
        const char *ref = json_object_get_string(value);

        if (!*ref) {
            return true;
        }
        *child = bdrv_lookup_bs(NULL, ref, errp);
        return *child != NULL;
    }
    if (!json_object_is_type(value, json_type_object)) {
        return true;                    /* null: no child */
    }
    json_object_object_get_ex(bs->options, name, &was);
    if (!was || !json_object_equal(value, was)) {
        error_setg(errp, "Cannot change the option '%s.driver'", name);
        return false;
    }
    *same = true;
    return true;
}

/* Check one node's new options and say what changes. */
static bool reopen_prepare(BlockdevOptions *options, BdrvReopenChange *change,
                           Error **errp)
{
    g_autoptr(json_object) new_opts = bdrv_options_to_json(options);
    g_autofree char *changed = NULL;
    BlockDriverState *bs;
    json_object *backing = NULL;
    bool same;

    if (!options->node_name) {
        error_setg(errp, "node-name not specified");
        return false;
    }
    bs = bdrv_find_node(options->node_name);
    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'",
                   options->node_name);
        return false;
    }
    if (strcmp(BlockdevDriver_str(options->driver), bs->drv->format_name)) {
        error_setg(errp, "Cannot change the option 'driver'");
        return false;
    }
    changed = first_changed_key(new_opts, bs->options, "", true);
    if (changed) {
        error_setg(errp, "Cannot change the option '%s'", changed);
        return false;
    }

    *change = (BdrvReopenChange) {
        .bs = bs,
        .read_only = options->has_read_only && options->read_only,
    };
    if (change->read_only && !bs->read_only &&
        !bdrv_can_set_read_only(bs, errp)) {
        return false;
    }
    if (change->read_only != bs->read_only &&
        !bs->drv->can_reopen_read_only) {
        error_setg(errp, "Cannot change the option 'read-only'");
        return false;
    }
    if (!bdrv_parse_zero_options(options, &change->detect_zeroes,
                                 &change->discard_unmap, errp)) {
        return false;
    }
    if (!reopen_child(bs, new_opts, "file", &change->file, &same, errp)) {
        return false;
    }
    if (json_object_object_get_ex(new_opts, "backing", &backing)) {
        change->set_backing = true;
        if (!reopen_child(bs, new_opts, "backing", &change->backing, &same,
                          errp)) {
            return false;
        }
        if (same) {
            change->set_backing = false;
        }
    } else if (bs->backing) {
        error_setg(errp, "backing is missing for '%s'", bs->node_name);
        return false;
    }
    return true;
}

void qmp_blockdev_reopen(BlockdevOptionsList *options, Error **errp)
{
    g_autoptr(GArray) changes = g_array_new(FALSE, TRUE,
                                            sizeof(BdrvReopenChange));

    for (BlockdevOptionsList *l = options; l; l = l->next) {
        BdrvReopenChange change;

        if (!reopen_prepare(l->value, &change, errp)) {
            return;
        }
        g_array_append_val(changes, change);
    }
    if (changes->len > 0) {
        bdrv_reopen_multiple((BdrvReopenChange *)changes->data, changes->len,
                             errp);
    }
}
