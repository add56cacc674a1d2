/*
 * The block graph: nodes, the edges between them, and permissions.
 *
 * Every edge (BdrvChild) carries the permissions its parent takes on the
 * child node and the permissions it lets other parents hold.  A node's
 * own children get permissions derived from what all its parents take
 * together (BlockDriver.bdrv_child_perm, pass-through by default), so a
 * write permission taken by an NBD export at the top travels down to the
 * file at the bottom.
 *
 * Every change is checked before it is applied: bdrv_check_perm() walks
 * the subtree with the would-be permissions and fails with a message that
 * names the conflicting parent; only then does bdrv_refresh_perms() store
 * them.  A driver's check may already reserve what it needs (the file
 * driver takes its image locks there, so that no other process can slip
 * in between); a failed check undoes the reservations of the whole
 * subtree, a successful one is settled by the refresh.  Relaxing
 * permissions (detaching a parent) cannot conflict and is applied
 * directly.
 */
#include "block/block_int.h"
#include "qapi/qapi-types.h"

enum {
    NODE_NAME_MAX = 31,
};

static GList *all_nodes;
static GPtrArray *block_drivers;

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

bool bdrv_is_read_only(const BlockDriverState *bs)
{
    return bs->read_only;
}

/* --- permissions --- */

static const char *const perm_names[] = {
    "consistent read", "write", "write unchanged", "resize",
};

static char *bdrv_perm_names(uint64_t perm)
{
    GString *names = g_string_new(NULL);

    for (unsigned i = 0; i < G_N_ELEMENTS(perm_names); i++) {
        if (perm & (1ULL << i)) {
            g_string_append_printf(names, "%s%s",
                                   names->len ? ", " : "", perm_names[i]);
        }
    }
    return g_string_free(names, FALSE);
}

static void bdrv_child_perm(BlockDriverState *bs, BdrvChild *child,
                            uint64_t parent_perm, uint64_t parent_shared,
                            uint64_t *nperm, uint64_t *nshared)
{
    if (bs->drv->bdrv_child_perm) {
        bs->drv->bdrv_child_perm(bs, child, parent_perm, parent_shared,
                                 nperm, nshared);
    } else {
        *nperm = parent_perm;
        *nshared = parent_shared;
    }
}

/*
 * The permissions all parents of @bs take together, with @changed counted
 * as @perm/@shared; a NULL @changed stands for a new edge not yet in the
 * list, which adds @perm/@shared (pass 0/BLK_PERM_ALL for none).
 */
static void bdrv_cumulative_perms(BlockDriverState *bs, BdrvChild *changed,
                                  uint64_t perm, uint64_t shared,
                                  uint64_t *cum_perm, uint64_t *cum_shared)
{
    *cum_perm = perm;
    *cum_shared = shared;
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *parent = l->data;

        if (parent != changed) {
            *cum_perm |= parent->perm;
            *cum_shared &= parent->shared_perm;
        }
    }
}

static bool bdrv_check_perm_subtree(BlockDriverState *bs,
                                    BdrvChild *changed, uint64_t perm,
                                    uint64_t shared, Error **errp)
{
    uint64_t cum_perm, cum_shared;

    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *other = l->data;
        g_autofree char *desc = NULL;
        g_autofree char *names = NULL;

        if (other == changed) {
            continue;
        }
        if (perm & ~other->shared_perm) {
            desc = other->klass->get_parent_desc(other);
            names = bdrv_perm_names(perm & ~other->shared_perm);
            error_setg(errp, "Conflicts with use by %s as '%s', which does "
                       "not allow '%s' on %s", desc, other->name, names,
                       bs->node_name);
            return false;
        }
        if (other->perm & ~shared) {
            desc = other->klass->get_parent_desc(other);
            names = bdrv_perm_names(other->perm & ~shared);
            error_setg(errp, "Conflicts with use by %s as '%s', which uses "
                       "'%s' on %s", desc, other->name, names,
                       bs->node_name);
            return false;
        }
    }

    bdrv_cumulative_perms(bs, changed, perm, shared, &cum_perm, &cum_shared);
    if ((cum_perm & (BLK_PERM_WRITE | BLK_PERM_RESIZE)) && bs->read_only) {
        error_setg(errp, "Block node is read-only");
        return false;
    }
    if (bs->drv->bdrv_check_perm &&
        !bs->drv->bdrv_check_perm(bs, cum_perm, cum_shared, errp)) {
        return false;
    }
    for (GList *l = bs->children; l; l = l->next) {
        BdrvChild *child = l->data;
        uint64_t nperm, nshared;

        bdrv_child_perm(bs, child, cum_perm, cum_shared, &nperm, &nshared);
        if (!bdrv_check_perm_subtree(child->bs, child, nperm, nshared,
                                     errp)) {
            return false;
        }
    }
    return true;
}

/* Undo what the drivers reserved in a check of @bs and its subtree. */
static void bdrv_abort_perm(BlockDriverState *bs)
{
    if (bs->drv->bdrv_abort_perm) {
        bs->drv->bdrv_abort_perm(bs);
    }
    for (GList *l = bs->children; l; l = l->next) {
        BdrvChild *child = l->data;

        bdrv_abort_perm(child->bs);
    }
}

/*
 * May the parents of @bs take @perm/@shared (on @changed, see
 * bdrv_cumulative_perms)?  On success, bdrv_refresh_perms(@bs) must
 * follow; on failure nothing has changed.
 */
static bool bdrv_check_perm(BlockDriverState *bs, BdrvChild *changed,
                            uint64_t perm, uint64_t shared, Error **errp)
{
    if (!bdrv_check_perm_subtree(bs, changed, perm, shared, errp)) {
        bdrv_abort_perm(bs);
        return false;
    }
    return true;
}

/*
 * Tell the driver what the parents of @bs now take, and recompute and
 * store the permissions @bs takes on its children.
 */
static void bdrv_refresh_perms(BlockDriverState *bs)
{
    uint64_t cum_perm, cum_shared;

    bdrv_cumulative_perms(bs, NULL, 0, BLK_PERM_ALL, &cum_perm, &cum_shared);
    if (bs->drv->bdrv_set_perm) {
        bs->drv->bdrv_set_perm(bs, cum_perm, cum_shared);
    }
    for (GList *l = bs->children; l; l = l->next) {
        BdrvChild *child = l->data;

        bdrv_child_perm(bs, child, cum_perm, cum_shared,
                        &child->perm, &child->shared_perm);
        bdrv_refresh_perms(child->bs);
    }
}

bool bdrv_child_set_perm(BdrvChild *child, uint64_t perm, uint64_t shared,
                         Error **errp)
{
    if (!bdrv_check_perm(child->bs, child, perm, shared, errp)) {
        return false;
    }
    child->perm = perm;
    child->shared_perm = shared;
    bdrv_refresh_perms(child->bs);
    return true;
}

/* --- edges --- */

BdrvChild *bdrv_attach_child(BlockDriverState *child_bs, const char *name,
                             BdrvChildRole role,
                             const BdrvChildClass *klass, void *opaque,
                             BlockDriverState *parent_bs,
                             uint64_t perm, uint64_t shared_perm,
                             Error **errp)
{
    BdrvChild *child;

    if (!bdrv_check_perm(child_bs, NULL, perm, shared_perm, errp)) {
        return NULL;
    }
    child = g_new0(BdrvChild, 1);
    child->bs = child_bs;
    child->name = g_strdup(name);
    child->role = role;
    child->perm = perm;
    child->shared_perm = shared_perm;
    child->klass = klass;
    child->opaque = opaque;
    child->parent_bs = parent_bs;
    bdrv_ref(child_bs);
    child_bs->parents = g_list_append(child_bs->parents, child);
    if (parent_bs) {
        parent_bs->children = g_list_append(parent_bs->children, child);
    }
    bdrv_refresh_perms(child_bs);
    return child;
}

void bdrv_detach_child(BdrvChild *child)
{
    BlockDriverState *child_bs = child->bs;

    child_bs->parents = g_list_remove(child_bs->parents, child);
    if (child->parent_bs && child->parent_bs->file == child) {
        child->parent_bs->file = NULL;
    }
    if (child->parent_bs && child->parent_bs->backing == child) {
        child->parent_bs->backing = NULL;
    }
    if (child->parent_bs) {
        child->parent_bs->children =
            g_list_remove(child->parent_bs->children, child);
    }
    bdrv_refresh_perms(child_bs);
    g_free(child->name);
    g_free(child);
    bdrv_unref(child_bs);
}

static char *bdrv_child_get_parent_desc(BdrvChild *child)
{
    return g_strdup_printf("node '%s'", child->parent_bs->node_name);
}

static const BdrvChildClass child_of_bds = {
    .get_parent_desc = bdrv_child_get_parent_desc,
};

/* --- nodes --- */

static bool node_name_wellformed(const char *name)
{
    if (!g_ascii_isalpha(name[0])) {
        return false;
    }
    for (const char *p = name; *p; p++) {
        if (!g_ascii_isalnum(*p) && !strchr("-._", *p)) {
            return false;
        }
    }
    return true;
}

static char *bdrv_assign_node_name(const char *node_name, Error **errp)
{
    static unsigned generated;

    if (!node_name) {
        return g_strdup_printf("#block%03u", generated++);
    }
    if (!node_name_wellformed(node_name)) {
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
        bs->filename = g_strdup(bs->file ? bs->file->bs->filename : "");
    }
    all_nodes = g_list_append(all_nodes, bs);
    if (!bdrv_open_backing(bs, options, errp)) {
        bdrv_unref(bs);
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
    bs->read_only = options->has_read_only ? options->read_only
                                           : inherit_read_only;
    bs->discard_unmap = options->has_discard &&
                        options->discard == BLOCKDEV_DISCARD_OPTIONS_UNMAP;
    if (options->has_detect_zeroes) {
        bs->detect_zeroes = options->detect_zeroes;
    }
    if (bs->detect_zeroes == BLOCKDEV_DETECT_ZEROES_OPTIONS_UNMAP &&
        !bs->discard_unmap) {
        error_setg(errp, "setting detect-zeroes to unmap is not allowed "
                   "without setting discard operation to unmap");
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
    if (child && (role & BDRV_CHILD_PRIMARY)) {
        parent->file = child;
    }
    if (child && (role & BDRV_CHILD_COW)) {
        parent->backing = child;
    }
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
    if (bs->drv->bdrv_close) {
        bs->drv->bdrv_close(bs);
    }
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
