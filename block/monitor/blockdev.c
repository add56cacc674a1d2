/*
 * QMP commands that create, delete and list nodes.
 *
 * blockdev-add opens a node tree from its options; the root is owned by
 * the monitor, which holds one reference to it until blockdev-del.  A node
 * is deleted only when nothing else uses it, with QEMU's messages for the
 * refusals, so that management software can tell the cases apart.
 */
#include "block/blockdev.h"
#include "block/block_int.h"
#include "block/qapi.h"
#include "qapi/qapi-commands.h"

static GList *monitor_owned_nodes;

void coroutine_fn qmp_blockdev_add(BlockdevOptions *options, Error **errp)
{
    BlockDriverState *bs;

    if (!options->node_name) {
        error_setg(errp, "'node-name' must be specified for the root node");
        return;
    }
    bs = bdrv_open_blockdev(options, false, errp);
    if (bs) {
        monitor_owned_nodes = g_list_append(monitor_owned_nodes, bs);
    }
}

static bool bdrv_has_backend_parent(BlockDriverState *bs)
{
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *parent = l->data;

        if (!parent->parent_bs) {
            return true;
        }
    }
    return false;
}

void coroutine_fn qmp_blockdev_del(const char *node_name, Error **errp)
{
    BlockDriverState *bs = bdrv_find_node(node_name);

    if (!bs) {
        error_setg(errp, "Failed to find node with node-name='%s'",
                   node_name);
        return;
    }
    /*
     * QEMU checks for a device first, then for a job; here a job uses its
     * nodes through backends too, so the job's blocker must come first.
     */
    if (bdrv_op_is_blocked(bs, errp)) {
        return;
    }
    if (bdrv_has_backend_parent(bs)) {
        error_setg(errp, "Node %s is in use", node_name);
        return;
    }
    if (!g_list_find(monitor_owned_nodes, bs)) {
        error_setg(errp, "Node %s is not owned by the monitor", node_name);
        return;
    }
    if (bs->refcnt > 1) {
        error_setg(errp, "Block device %s is in use", node_name);
        return;
    }
    monitor_owned_nodes = g_list_remove(monitor_owned_nodes, bs);
    /* Nothing may be in flight on the node when it goes. */
    bdrv_drained_begin(bs);
    bdrv_drained_end(bs);
    bdrv_unref(bs);
}

/* Newest node first, as QEMU lists them. */
BlockDeviceInfoList *qmp_query_named_block_nodes(bool has_flat, bool flat,
                                                 Error **errp)
{
    BlockDeviceInfoList *head = NULL;

    (void)errp;
    for (GList *l = bdrv_all_nodes(); l; l = l->next) {
        BlockDeviceInfoList *entry = g_new0(BlockDeviceInfoList, 1);

        entry->value = bdrv_block_device_info(l->data, has_flat && flat);
        entry->next = head;
        head = entry;
    }
    return head;
}

void blockdev_close_all(void)
{
    /* Parents before children: the list is in creation order. */
    while (monitor_owned_nodes) {
        GList *last = g_list_last(monitor_owned_nodes);
        BlockDriverState *bs = last->data;

        monitor_owned_nodes = g_list_delete_link(monitor_owned_nodes, last);
        bdrv_unref(bs);
    }
}
