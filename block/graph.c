/*
 * The edges of the block graph, the permissions they carry, and the
 * changes that rewire them.
 *
 * Every edge (BdrvChild) carries the permissions its parent takes on the
 * child node and those it lets other parents hold.  A node takes on its
 * children what its driver derives from what all its parents take
 * together (BlockDriver.bdrv_child_perm, pass-through by default), so a
 * write permission taken by an NBD export at the top travels down to the
 * file at the bottom.
 *
 * Every graph change -- attaching or detaching an edge, moving edges from
 * one node to another (replacing a node, inserting or dropping a filter,
 * replacing a child) -- is one transaction in three steps:
 *
 *  1. edit: the edges are moved in memory, each move recorded in a
 *     GraphChange so that it can be undone;
 *  2. check: every node below a moved edge is visited in topological order
 *     (parents before children, so diamonds are seen whole) and the
 *     permissions its parents would take over the *edited* graph are
 *     computed and checked: against each other, against read-only nodes,
 *     and by the driver (bdrv_check_perm, where the file driver already
 *     takes its image locks);
 *  3. commit -- the new edge permissions are stored and every visited node
 *     settles on them (bdrv_set_perm), in topological order -- or abort:
 *     drivers drop what the check reserved (bdrv_abort_perm) and the moves
 *     are undone in reverse order, so the graph, its permissions and the
 *     file locks are exactly as before.
 *
 * A refusal names both parents as QEMU 7.2 does ("Permission conflict on
 * node 'disk0': permissions 'write' are both required by node 'raw1' (uses
 * node 'disk0' as 'file' child) and unshared by an unnamed block device
 * (uses node 'disk0' as 'root' child).").
 * Relaxing (detaching an edge) cannot conflict and skips the check.
 */
#include "block/block_int.h"

typedef struct PermPair {
    uint64_t perm;
    uint64_t shared;
} PermPair;

/* One moved edge: @child pointed at @from and now points at @to. */
typedef struct EdgeMove {
    BdrvChild *child;
    BlockDriverState *from;         /* NULL: a new edge */
    BlockDriverState *to;           /* NULL: an edge being removed */
    gint from_pos;                  /* its place among @from's parents */
} EdgeMove;

typedef struct GraphChange {
    GArray *moves;                  /* EdgeMove, in the order made */
    GPtrArray *changed_nodes;       /* nodes changed otherwise (read-only) */
    GPtrArray *reopened;            /* nodes whose driver prepared a reopen */
    /* Filled by the check: */
    GPtrArray *order;               /* visited nodes, parents first */
    GHashTable *node_perm;          /* node -> PermPair * its parents take */
    GHashTable *edge_perm;          /* edge -> PermPair * it will take */
    guint checked;                  /* nodes whose driver check ran */
} GraphChange;

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

/* --- the change log --- */

static GraphChange *graph_change_new(void)
{
    GraphChange *gc = g_new0(GraphChange, 1);

    gc->moves = g_array_new(FALSE, FALSE, sizeof(EdgeMove));
    gc->changed_nodes = g_ptr_array_new();
    gc->reopened = g_ptr_array_new();
    gc->order = g_ptr_array_new();
    gc->node_perm = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    gc->edge_perm = g_hash_table_new_full(NULL, NULL, NULL, g_free);
    return gc;
}

static void graph_change_free(GraphChange *gc)
{
    g_array_free(gc->moves, TRUE);
    g_ptr_array_free(gc->changed_nodes, TRUE);
    g_ptr_array_free(gc->reopened, TRUE);
    g_ptr_array_free(gc->order, TRUE);
    g_hash_table_destroy(gc->node_perm);
    g_hash_table_destroy(gc->edge_perm);
    g_free(gc);
}
G_DEFINE_AUTOPTR_CLEANUP_FUNC(GraphChange, graph_change_free)

/* Point @child at @to (NULL: nowhere), recording the move. */
static void graph_move_edge(GraphChange *gc, BdrvChild *child,
                            BlockDriverState *to)
{
    EdgeMove move = { .child = child, .from = child->bs, .to = to };

    if (move.from) {
        move.from_pos = g_list_index(move.from->parents, child);
        move.from->parents = g_list_remove(move.from->parents, child);
    }
    if (to) {
        to->parents = g_list_append(to->parents, child);
        bdrv_ref(to);               /* the edge's reference, from now on */
    }
    if (!move.from && child->parent_bs) {
        /* A new edge: the check must walk it from its parent. */
        child->parent_bs->children = g_list_append(child->parent_bs->children,
                                                   child);
    }
    child->bs = to;
    bdrv_child_sync_quiesce(child);
    g_array_append_val(gc->moves, move);
}

static void bdrv_child_free(BdrvChild *child)
{
    g_free(child->name);
    g_free(child);
}

static void graph_undo_moves(GraphChange *gc)
{
    for (guint i = gc->moves->len; i-- > 0;) {
        EdgeMove *move = &g_array_index(gc->moves, EdgeMove, i);

        if (move->to) {
            move->to->parents = g_list_remove(move->to->parents,
                                              move->child);
            bdrv_unref(move->to);
        }
        if (move->from) {
            move->from->parents = g_list_insert(move->from->parents,
                                                move->child, move->from_pos);
        }
        move->child->bs = move->from;
        bdrv_child_sync_quiesce(move->child);
        if (!move->from) {
            BlockDriverState *parent = move->child->parent_bs;

            if (parent) {
                parent->children = g_list_remove(parent->children,
                                                 move->child);
            }
            bdrv_child_free(move->child);
        }
    }
    g_array_set_size(gc->moves, 0);
}

/* --- the check --- */

static void graph_visit(GPtrArray *postorder, GHashTable *seen,
                        BlockDriverState *bs)
{
    if (!g_hash_table_add(seen, bs)) {
        return;
    }
    for (GList *l = bs->children; l; l = l->next) {
        BdrvChild *child = l->data;

        if (child->bs) {
            graph_visit(postorder, seen, child->bs);
        }
    }
    g_ptr_array_add(postorder, bs);
}

/* Every node below a changed node or a moved edge, parents first. */
static void graph_topological_order(GraphChange *gc)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    g_autoptr(GPtrArray) postorder = g_ptr_array_new();

    for (guint i = 0; i < gc->changed_nodes->len; i++) {
        graph_visit(postorder, seen, gc->changed_nodes->pdata[i]);
    }
    for (guint i = 0; i < gc->moves->len; i++) {
        EdgeMove *move = &g_array_index(gc->moves, EdgeMove, i);

        if (move->from) {
            graph_visit(postorder, seen, move->from);
        }
        if (move->to) {
            graph_visit(postorder, seen, move->to);
        }
    }
    for (guint i = postorder->len; i-- > 0;) {
        g_ptr_array_add(gc->order, postorder->pdata[i]);
    }
}

/* What the parents of @bs take together now (before the change). */
static PermPair bdrv_current_cumulative(BlockDriverState *bs)
{
    PermPair cum = { 0, BLK_PERM_ALL };

    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *child = l->data;

        cum.perm |= child->perm;
        cum.shared &= child->shared_perm;
    }
    return cum;
}

/*
 * What @child will take: what its parent node's driver derives from what
 * the parent's own parents will take (the check visits a changed parent
 * first), or -- a backend's edge -- what it takes already.
 */
static PermPair graph_edge_perm(GraphChange *gc, BdrvChild *child)
{
    PermPair *visited;
    PermPair p = { child->perm, child->shared_perm };
    PermPair cum;

    if (child->parent_bs) {
        visited = g_hash_table_lookup(gc->node_perm, child->parent_bs);
        cum = visited ? *visited : bdrv_current_cumulative(child->parent_bs);
        bdrv_child_perm(child->parent_bs, child, cum.perm, cum.shared,
                        &p.perm, &p.shared);
    }
    return p;
}

static bool graph_edge_is_new_here(GraphChange *gc, BdrvChild *child,
                                   BlockDriverState *bs)
{
    for (guint i = 0; i < gc->moves->len; i++) {
        EdgeMove *move = &g_array_index(gc->moves, EdgeMove, i);

        if (move->child == child && move->to == bs) {
            return true;
        }
    }
    return false;
}

/* "node 'X' (uses node 'Y' as 'file' child)", as QEMU names a parent. */
static char *graph_parent_desc(BdrvChild *child, BlockDriverState *bs)
{
    g_autofree char *desc = child->klass->get_parent_desc(child);

    return g_strdup_printf("%s (uses node '%s' as '%s' child)", desc,
                           bs->node_name, child->name);
}

/*
 * Does @a, which takes @pa on @bs, share what @b takes (@pb)?  QEMU
 * 7.2's message names the permissions and both parents.
 */
static bool graph_a_allows_b(BlockDriverState *bs, BdrvChild *a, PermPair pa,
                             BdrvChild *b, PermPair pb, Error **errp)
{
    g_autofree char *names = NULL;
    g_autofree char *a_desc = NULL;
    g_autofree char *b_desc = NULL;

    if (!(pb.perm & ~pa.shared)) {
        return true;
    }
    names = bdrv_perm_names(pb.perm & ~pa.shared);
    a_desc = graph_parent_desc(a, bs);
    b_desc = graph_parent_desc(b, bs);
    error_setg(errp, "Permission conflict on node '%s': permissions '%s' are "
               "both required by %s and unshared by %s.", bs->node_name,
               names, b_desc, a_desc);
    return false;
}

/*
 * May edge @changed take @mine on @bs next to @other, which takes
 * @theirs?  @other's use is checked first: when both refuse each other,
 * QEMU (whose parent lists are newest first) reports the older parent as
 * the one requiring.
 */
static bool graph_check_pair(BlockDriverState *bs, BdrvChild *changed,
                             PermPair mine, BdrvChild *other, PermPair theirs,
                             Error **errp)
{
    return graph_a_allows_b(bs, changed, mine, other, theirs, errp) &&
           graph_a_allows_b(bs, other, theirs, changed, mine, errp);
}

/*
 * Compute and record what each parent edge of @bs will take, and what
 * they take together; @changed[i] says whether edge i takes something new
 * here.  Returns the total.
 */
static PermPair *graph_compute_node(GraphChange *gc, BlockDriverState *bs,
                                    PermPair *perms, bool *changed)
{
    PermPair *cum = g_new(PermPair, 1);
    GList *l;
    guint i;

    *cum = (PermPair) { 0, BLK_PERM_ALL };
    g_hash_table_insert(gc->node_perm, bs, cum);
    for (l = bs->parents, i = 0; l; l = l->next, i++) {
        BdrvChild *child = l->data;

        perms[i] = graph_edge_perm(gc, child);
        changed[i] = graph_edge_is_new_here(gc, child, bs) ||
                     perms[i].perm != child->perm ||
                     perms[i].shared != child->shared_perm;
        g_hash_table_insert(gc->edge_perm, child,
                            g_memdup2(&perms[i], sizeof(PermPair)));
        cum->perm |= perms[i].perm;
        cum->shared &= perms[i].shared;
    }
    return cum;
}

/*
 * Work out what the parents of @bs will take together and, if @check,
 * check it (a change that only relaxes cannot conflict).
 */
static bool graph_check_node(GraphChange *gc, BlockDriverState *bs,
                             bool check, Error **errp)
{
    guint n = g_list_length(bs->parents);
    g_autofree PermPair *perms = g_new(PermPair, n);
    g_autofree bool *changed = g_new(bool, n);
    PermPair *cum = graph_compute_node(gc, bs, perms, changed);
    GList *l;
    guint i;

    if (!check) {
        return true;
    }

    /* Edges that did not change were compatible with each other already. */
    for (l = bs->parents, i = 0; l; l = l->next, i++) {
        GList *m;
        guint j;

        if (!changed[i]) {
            continue;
        }
        for (m = bs->parents, j = 0; m; m = m->next, j++) {
            if (j != i && (!changed[j] || j > i) &&
                !graph_check_pair(bs, l->data, perms[i], m->data, perms[j],
                                  errp)) {
                return false;
            }
        }
    }
    if ((cum->perm & (BLK_PERM_WRITE | BLK_PERM_RESIZE)) && bs->read_only) {
        error_setg(errp, "Block node is read-only");
        return false;
    }
    gc->checked++;
    if (bs->drv->bdrv_check_perm &&
        !bs->drv->bdrv_check_perm(bs, cum->perm, cum->shared, errp)) {
        return false;
    }
    return true;
}

/*
 * Nothing may become its own descendant: checked before @child is moved
 * to @to, since a cycle, even a tentative one, would send drain round in
 * circles.
 */
static bool graph_check_cycle(BdrvChild *child, BlockDriverState *to,
                              Error **errp)
{
    g_autoptr(GHashTable) seen = g_hash_table_new(NULL, NULL);
    g_autoptr(GPtrArray) below = g_ptr_array_new();

    if (!to || !child->parent_bs) {
        return true;
    }
    graph_visit(below, seen, to);
    if (g_hash_table_contains(seen, child->parent_bs)) {
        error_setg(errp, "Making '%s' a %s child of '%s' would create a "
                   "cycle", to->node_name, child->name,
                   child->parent_bs->node_name);
        return false;
    }
    return true;
}

static bool graph_check(GraphChange *gc, bool check, Error **errp)
{
    graph_topological_order(gc);
    for (guint i = 0; i < gc->order->len; i++) {
        if (!graph_check_node(gc, gc->order->pdata[i], check, errp)) {
            return false;
        }
    }
    return true;
}

/* --- commit and abort --- */

static void graph_abort(GraphChange *gc)
{
    /* Only the drivers that were asked have something to undo. */
    for (guint i = gc->checked; i-- > 0;) {
        BlockDriverState *bs = gc->order->pdata[i];

        if (bs->drv->bdrv_abort_perm) {
            bs->drv->bdrv_abort_perm(bs);
        }
    }
    graph_undo_moves(gc);
}

/*
 * The parent of a moved edge learns about it: a new edge becomes its file
 * or backing child by its role, a removed one goes, and a format node
 * that takes its name from its file takes the new file's.
 */
static void graph_commit_move(EdgeMove *move)
{
    BdrvChild *child = move->child;
    BlockDriverState *parent = child->parent_bs;

    if (!parent) {
        if (!move->to) {
            bdrv_child_free(child);
        }
        return;
    }
    if (!move->from && (child->role & BDRV_CHILD_PRIMARY)) {
        parent->file = child;
    }
    if (!move->from && (child->role & BDRV_CHILD_COW)) {
        parent->backing = child;
    }
    if (!move->to) {
        parent->children = g_list_remove(parent->children, child);
        if (parent->file == child) {
            parent->file = NULL;
        }
        if (parent->backing == child) {
            parent->backing = NULL;
        }
        bdrv_child_free(child);
        return;
    }
    if (parent->file == child && parent->filename_from_file) {
        g_free(parent->filename);
        parent->filename = g_strdup(move->to->filename);
    }
}

/* Store the permissions the check computed; drivers settle on them. */
static void graph_commit(GraphChange *gc)
{
    for (guint i = 0; i < gc->order->len; i++) {
        BlockDriverState *bs = gc->order->pdata[i];
        PermPair *cum = g_hash_table_lookup(gc->node_perm, bs);

        for (GList *l = bs->parents; l; l = l->next) {
            BdrvChild *child = l->data;
            PermPair *p = g_hash_table_lookup(gc->edge_perm, child);

            child->perm = p->perm;
            child->shared_perm = p->shared;
        }
        if (bs->drv->bdrv_set_perm) {
            bs->drv->bdrv_set_perm(bs, cum->perm, cum->shared);
        }
    }
    for (guint i = 0; i < gc->moves->len; i++) {
        graph_commit_move(&g_array_index(gc->moves, EdgeMove, i));
    }
    /* Last, as it may close nodes: moved edges drop their old node. */
    for (guint i = 0; i < gc->moves->len; i++) {
        EdgeMove *move = &g_array_index(gc->moves, EdgeMove, i);

        if (move->from) {
            bdrv_unref(move->from);
        }
    }
}

/*
 * Check @gc's edits as a whole; commit them or undo them all.  Relaxing
 * changes (@check false) cannot conflict and commit directly.
 */
static bool graph_apply(GraphChange *gc, bool check, Error **errp)
{
    if (!graph_check(gc, check, errp)) {
        graph_abort(gc);
        return false;
    }
    graph_commit(gc);
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
    g_autoptr(GraphChange) gc = graph_change_new();
    BdrvChild *child = g_new0(BdrvChild, 1);

    child->name = g_strdup(name);
    child->role = role;
    child->perm = perm;
    child->shared_perm = shared_perm;
    child->klass = klass;
    child->opaque = opaque;
    child->parent_bs = parent_bs;
    graph_move_edge(gc, child, child_bs);
    return graph_apply(gc, true, errp) ? child : NULL;
}

void bdrv_detach_child(BdrvChild *child)
{
    g_autoptr(GraphChange) gc = graph_change_new();

    graph_move_edge(gc, child, NULL);
    graph_apply(gc, false, &error_abort);
}

/* --- changes that move edges --- */

bool bdrv_replace_child(BdrvChild *child, BlockDriverState *new_bs,
                        Error **errp)
{
    BlockDriverState *nodes[] = { child->bs, new_bs };
    g_autoptr(GraphChange) gc = graph_change_new();
    bool ok;

    if (child->bs == new_bs) {
        return true;
    }
    if (!graph_check_cycle(child, new_bs, errp)) {
        return false;
    }
    bdrv_drained_begin_nodes(nodes, 2);
    graph_move_edge(gc, child, new_bs);
    ok = graph_apply(gc, true, errp);
    bdrv_drained_end_nodes(nodes, 2);
    return ok;
}

bool bdrv_replace_node(BlockDriverState *from, BlockDriverState *to,
                       Error **errp)
{
    BlockDriverState *nodes[] = { from, to };
    g_autoptr(GraphChange) gc = graph_change_new();
    g_autoptr(GList) parents = NULL;
    bool ok;

    parents = g_list_copy(from->parents);
    for (GList *l = parents; l; l = l->next) {
        BdrvChild *child = l->data;

        if (child->parent_bs != to && !graph_check_cycle(child, to, errp)) {
            return false;
        }
    }
    bdrv_drained_begin_nodes(nodes, 2);
    for (GList *l = parents; l; l = l->next) {
        BdrvChild *child = l->data;

        /* The new node's own edge to @from stays (a filter above it). */
        if (child->parent_bs != to) {
            graph_move_edge(gc, child, to);
        }
    }
    ok = graph_apply(gc, true, errp);
    bdrv_drained_end_nodes(nodes, 2);
    return ok;
}

BlockDriverState *bdrv_filtered_bs(BlockDriverState *bs)
{
    return bs->drv->is_filter && bs->file ? bs->file->bs : NULL;
}

bool bdrv_drop_filter(BlockDriverState *bs, Error **errp)
{
    BlockDriverState *below = bdrv_filtered_bs(bs);

    if (!below) {
        error_setg(errp, "'%s' is not a filter", bs->node_name);
        return false;
    }
    return bdrv_replace_node(bs, below, errp);
}

/* --- reopen --- */

bool bdrv_can_set_read_only(BlockDriverState *bs, Error **errp)
{
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *child = l->data;

        if (child->perm & (BLK_PERM_WRITE | BLK_PERM_RESIZE)) {
            error_setg(errp, "Read-only block node '%s' cannot support "
                       "read-write users", bs->node_name);
            return false;
        }
    }
    return true;
}

/* Point @bs's backing edge at @to, creating or removing the edge. */
static bool graph_set_backing(GraphChange *gc, BlockDriverState *bs,
                              BlockDriverState *to, Error **errp)
{
    BdrvChild *child = bs->backing;

    if (child && child->bs == to) {
        return true;
    }
    if (!child) {
        child = g_new0(BdrvChild, 1);
        child->name = g_strdup("backing");
        child->role = BDRV_CHILD_COW;
        child->klass = &child_of_bds;
        child->opaque = bs;
        child->parent_bs = bs;
    }
    if (!graph_check_cycle(child, to, errp)) {
        if (!child->bs) {
            bdrv_child_free(child);
        }
        return false;
    }
    graph_move_edge(gc, child, to);
    return true;
}

/* Edit the graph as @change says, recording everything in @gc. */
static bool graph_reopen_one(GraphChange *gc, BdrvReopenChange *change,
                             Error **errp)
{
    BlockDriverState *bs = change->bs;

    if (change->read_only != bs->read_only) {
        if (change->read_only && !bdrv_can_set_read_only(bs, errp)) {
            return false;
        }
        if (bs->drv->bdrv_reopen_prepare) {
            if (!bs->drv->bdrv_reopen_prepare(bs, change->read_only, errp)) {
                return false;
            }
            g_ptr_array_add(gc->reopened, bs);
        }
        bs->read_only = change->read_only;
        g_ptr_array_add(gc->changed_nodes, bs);
    }
    if (change->file && bs->file && bs->file->bs != change->file) {
        if (!graph_check_cycle(bs->file, change->file, errp)) {
            return false;
        }
        graph_move_edge(gc, bs->file, change->file);
    }
    return !change->set_backing ||
           graph_set_backing(gc, bs, change->backing, errp);
}

bool bdrv_reopen_multiple(BdrvReopenChange *changes, size_t n, Error **errp)
{
    g_autoptr(GraphChange) gc = graph_change_new();
    g_autofree bool *old_ro = g_new(bool, n);
    g_autoptr(GPtrArray) drained = g_ptr_array_new();
    bool ok = true;

    for (size_t i = 0; i < n; i++) {
        old_ro[i] = changes[i].bs->read_only;
        g_ptr_array_add(drained, changes[i].bs);
    }
    bdrv_drained_begin_nodes((BlockDriverState **)drained->pdata,
                             drained->len);
    for (size_t i = 0; i < n && ok; i++) {
        ok = graph_reopen_one(gc, &changes[i], errp);
    }
    if (ok && !graph_check(gc, true, errp)) {
        ok = false;
        graph_abort(gc);
    } else if (!ok) {
        graph_undo_moves(gc);
    }
    for (guint i = gc->reopened->len; i-- > 0;) {
        BlockDriverState *bs = gc->reopened->pdata[i];

        if (ok) {
            bs->drv->bdrv_reopen_commit(bs);
        } else {
            bs->drv->bdrv_reopen_abort(bs);
        }
    }
    if (!ok) {
        for (size_t i = n; i-- > 0;) {
            changes[i].bs->read_only = old_ro[i];
        }
    } else {
        graph_commit(gc);
        for (size_t i = 0; i < n; i++) {
            changes[i].bs->detect_zeroes = changes[i].detect_zeroes;
            changes[i].bs->discard_unmap = changes[i].discard_unmap;
        }
        for (guint i = 0; i < gc->reopened->len; i++) {
            BlockDriverState *bs = gc->reopened->pdata[i];

            if (bs->drv->bdrv_reopen_commit_post) {
                bs->drv->bdrv_reopen_commit_post(bs);
            }
        }
    }
    bdrv_drained_end_nodes((BlockDriverState **)drained->pdata,
                           drained->len);
    return ok;
}
