/*
 * The nodes of the block graph: the driver registry, opening a node from
 * its options (and then its backing child), node names and lookup,
 * references, and closing.  The edges between nodes, their permissions
 * and the changes that rewire them are in graph.c.
 */
#include "util/id.h"
#include "block/block_int.h"
#include "block/dirty-bitmap.h"
#include "qapi/qapi-types.h"

enum {
    NODE_NAME_MAX = 31,
};

static GList *all_nodes;
static GPtrArray *block_drivers;

bool bdrv_check_size_option(const char *name, bool has_value, int64_t value,
                            Error **errp)
{
    if (has_value && value < 0) {
        error_setg(errp, "Parameter '%s' expects a non-negative number "
                   "below 2^64", name);
        return false;
    }
    return true;
}

void bdrv_register(const BlockDriver *drv)
{
    if (!block_drivers) {
        block_drivers = g_ptr_array_new();
    }
    g_ptr_array_add(block_drivers, (gpointer)drv);
}

const BlockDriver *bdrv_find_driver(const char *format_name)
{
    for (guint i = 0; block_drivers && i < block_drivers->len; i++) {
        const BlockDriver *drv = g_ptr_array_index(block_drivers, i);

        if (!strcmp(drv->format_name, format_name)) {
            return drv;
        }
    }
    return NULL;
}

const char *bdrv_probe_format(const uint8_t *buf, int buf_size)
{
    const BlockDriver *best = NULL;
    int best_score = 0;

    for (guint i = 0; block_drivers && i < block_drivers->len; i++) {
        const BlockDriver *drv = g_ptr_array_index(block_drivers, i);
        int score = drv->bdrv_probe ? drv->bdrv_probe(buf, buf_size) : 0;

        if (score > best_score) {
            best = drv;
            best_score = score;
        }
    }
    return best ? best->format_name : "raw";
}

GList *bdrv_all_nodes(void)
{
    return all_nodes;
}

BlockDriverState *bdrv_find_node(const char *node_name)
{
    for (GList *l = all_nodes; l; l = l->next) {
        BlockDriverState *bs = l->data;

        if (!strcmp(bs->node_name, node_name)) {
            return bs;
        }
    }
    return NULL;
}

BlockDriverState *bdrv_lookup_bs(const char *device, const char *node_name,
                                 Error **errp)
{
    BlockDriverState *bs = node_name ? bdrv_find_node(node_name) : NULL;

    if (!bs) {
        error_setg(errp, "Cannot find device='%s' nor node-name='%s'",
                   device ? device : "", node_name ? node_name : "");
    }
    return bs;
}

const char *bdrv_get_node_name(const BlockDriverState *bs)
{
    return bs->node_name;
}

int64_t bdrv_getlength(BlockDriverState *bs)
{
    return bs->total_bytes;
}

int bdrv_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    memset(bdi, 0, sizeof(*bdi));
    if (!bs->drv->bdrv_get_info) {
        return -ENOTSUP;
    }
    return bs->drv->bdrv_get_info(bs, bdi);
}

void bdrv_op_block(BlockDriverState *bs, const char *reason)
{
    g_assert(!bs->op_blocker);
    bs->op_blocker = g_strdup(reason);
}

void bdrv_op_unblock(BlockDriverState *bs)
{
    g_clear_pointer(&bs->op_blocker, g_free);
}

bool bdrv_op_is_blocked(BlockDriverState *bs, Error **errp)
{
    if (bs->op_blocker) {
        error_setg(errp, "Node '%s' is busy: %s", bs->node_name,
                   bs->op_blocker);
        return true;
    }
    return false;
}

bool bdrv_is_read_only(const BlockDriverState *bs)
{
    return bs->read_only;
}

static char *bdrv_child_get_parent_desc(BdrvChild *child)
{
    return g_strdup_printf("node '%s'", child->parent_bs->node_name);
}

static void bdrv_child_drained_begin(BdrvChild *child)
{
    bdrv_quiesce(child->parent_bs);
}

static void bdrv_child_drained_end(BdrvChild *child)
{
    bdrv_unquiesce(child->parent_bs);
}

static bool bdrv_child_drained_poll(BdrvChild *child)
{
    return bdrv_drain_poll(child->parent_bs);
}

const BdrvChildClass child_of_bds = {
    .get_parent_desc = bdrv_child_get_parent_desc,
    .drained_begin = bdrv_child_drained_begin,
    .drained_end = bdrv_child_drained_end,
    .drained_poll = bdrv_child_drained_poll,
};

/* --- nodes --- */

static char *bdrv_assign_node_name(const char *node_name, Error **errp)
{
    static unsigned generated;

    if (!node_name) {
        return g_strdup_printf("#block%03u", generated++);
    }
    if (!id_wellformed(node_name)) {
        error_setg(errp, "Invalid node-name: '%s'", node_name);
        return NULL;
    }
    if (bdrv_find_node(node_name)) {
        error_setg(errp, "Duplicate nodes with node-name='%s'", node_name);
        return NULL;
    }
    if (strlen(node_name) > NODE_NAME_MAX) {
        error_setg(errp, "Node name too long");
        return NULL;
    }
    return g_strdup(node_name);
}

static BlockDriverState *bdrv_node_new(const BlockDriver *drv,
                                       char *node_name)
{
    BlockDriverState *bs = g_new0(BlockDriverState, 1);

    bs->node_name = node_name;
    bs->drv = drv;
    bs->opaque = g_malloc0(drv->instance_size);
    bs->refcnt = 1;
    bs->bl.request_alignment = 1;
    bs->bl.min_mem_alignment = 1;
    return bs;
}

static void bdrv_node_free(BlockDriverState *bs)
{
    g_free(bs->backing_file);
    g_free(bs->backing_format);
    g_free(bs->filename);
    json_object_put(bs->options);
    g_free(bs->opaque);
    g_free(bs->node_name);
    g_free(bs);
}

/*
 * Let the driver open @bs; on success the node joins the graph, and then
 * its backing child is opened (after it, as in QEMU, which is why a
 * backing chain lists from the base up in query-named-block-nodes).
 */
static bool coroutine_fn bdrv_node_open(BlockDriverState *bs,
                                        BlockdevOptions *options,
                                        Error **errp)
{
    if (bs->drv->bdrv_open(bs, options, errp) < 0) {
        while (bs->children) {
            bdrv_detach_child(bs->children->data);
        }
        bdrv_node_free(bs);
        return false;
    }
    g_assert(IS_POWER_OF_2(bs->bl.request_alignment));
    if (!bs->filename) {
        bs->filename_from_file = bs->file != NULL;
        bs->filename = g_strdup(bs->file ? bs->file->bs->filename : "");
    }
    all_nodes = g_list_append(all_nodes, bs);
    if (!bdrv_open_backing(bs, options, errp)) {
        bdrv_unref(bs);
        return false;
    }
    return true;
}

bool bdrv_parse_zero_options(BlockdevOptions *options,
                             BlockdevDetectZeroesOptions *detect_zeroes,
                             bool *discard_unmap, Error **errp)
{
    *discard_unmap = options->has_discard &&
                     options->discard == BLOCKDEV_DISCARD_OPTIONS_UNMAP;
    *detect_zeroes = options->has_detect_zeroes
                     ? options->detect_zeroes
                     : BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF;
    if (*detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_UNMAP &&
        !*discard_unmap) {
        error_setg(errp, "setting detect-zeroes to unmap is not allowed "
                   "without setting discard operation to unmap");
        return false;
    }
    return true;
}

BlockDriverState *coroutine_fn bdrv_open_blockdev(BlockdevOptions *options,
                                                  bool inherit_read_only,
                                                  Error **errp)
{
    const char *format_name = BlockdevDriver_str(options->driver);
    const BlockDriver *drv = bdrv_find_driver(format_name);
    BlockDriverState *bs;
    char *node_name;

    if (!drv) {
        error_setg(errp, "Unknown driver '%s'", format_name);
        return NULL;
    }
    node_name = bdrv_assign_node_name(options->node_name, errp);
    if (!node_name) {
        return NULL;
    }

    bs = bdrv_node_new(drv, node_name);
    bs->options = bdrv_options_to_json(options);
    bs->read_only = options->has_read_only ? options->read_only
                                           : inherit_read_only;
    if (!bdrv_parse_zero_options(options, &bs->detect_zeroes,
                                 &bs->discard_unmap, errp)) {
        bdrv_node_free(bs);
        return NULL;
    }
    if (options->cache) {
        bs->cache_direct = options->cache->has_direct &&
                           options->cache->direct;
        bs->cache_no_flush = options->cache->has_no_flush &&
                             options->cache->no_flush;
    }
    return bdrv_node_open(bs, options, errp) ? bs : NULL;
}

BlockDriverState *coroutine_fn bdrv_new_open_driver(const BlockDriver *drv,
                                                    const char *node_name,
                                                    bool discard_unmap,
                                                    Error **errp)
{
    char *name = bdrv_assign_node_name(node_name, errp);
    BlockDriverState *bs;

    if (!name) {
        return NULL;
    }
    bs = bdrv_node_new(drv, name);
    bs->discard_unmap = discard_unmap;
    return bdrv_node_open(bs, NULL, errp) ? bs : NULL;
}

/* The child's read-only default follows the parent, as in QEMU. */
BdrvChild *coroutine_fn bdrv_open_child(BlockDriverState *parent,
                                        BlockdevRef *ref, const char *name,
                                        BdrvChildRole role, Error **errp)
{
    BlockDriverState *child_bs;
    BdrvChild *child;

    if (ref->type == QTYPE_QSTRING) {
        child_bs = bdrv_lookup_bs(ref->u.reference, ref->u.reference, errp);
        if (!child_bs) {
            return NULL;
        }
        bdrv_ref(child_bs);
    } else {
        child_bs = bdrv_open_blockdev(&ref->u.definition, parent->read_only,
                                      errp);
        if (!child_bs) {
            return NULL;
        }
    }
    /* The parent has no parents yet, so it takes nothing on the child. */
    child = bdrv_attach_child(child_bs, name, role, &child_of_bds, parent,
                              parent, 0, BLK_PERM_ALL, errp);
    bdrv_unref(child_bs);
    return child;
}

void bdrv_ref(BlockDriverState *bs)
{
    bs->refcnt++;
}

static void coroutine_fn bdrv_close_flush_entry(void *opaque)
{
    BlockDriverState *bs = opaque;
    int ret = bdrv_co_flush(bs);

    if (ret < 0) {
        warn_report("Failed to flush node '%s' on close: %s",
                    bs->node_name, g_strerror(-ret));
    }
}

static void bdrv_close(BlockDriverState *bs)
{
    bdrv_drain(bs);
    if (!bs->read_only) {
        co_run_sync(bdrv_close_flush_entry, bs);
    }
    /* The driver stores persistent bitmaps as it closes. */
    if (bs->drv->bdrv_close) {
        bs->drv->bdrv_close(bs);
    }
    bdrv_release_all_dirty_bitmaps(bs);
    while (bs->children) {
        bdrv_detach_child(bs->children->data);
    }
}

void bdrv_unref(BlockDriverState *bs)
{
    g_assert(bs->refcnt > 0);
    if (--bs->refcnt > 0) {
        return;
    }
    g_assert(bs->parents == NULL);
    all_nodes = g_list_remove(all_nodes, bs);
    bdrv_close(bs);
    bdrv_node_free(bs);
}
