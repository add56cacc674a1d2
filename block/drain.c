/*
 * Drained sections: holding off new requests while the graph changes.
 *
 * Draining a node quiesces everything above it.  Every node and every
 * BlockBackend has a quiesce counter; bdrv_drained_begin(bs) raises the
 * counter of @bs and, through each parent edge, of every parent above it,
 * recursively (a diamond is counted once per path, and undone the same
 * way).  Then it waits until nothing is in flight on @bs or above it.
 * While a backend is quiesced:
 *
 *  - new external requests wait in blk_request_begin() (NBD requests the
 *    server already read), unless the backend's user stops issuing them
 *    itself: a job's backend pauses the job at its next pause point;
 *  - requests already in flight run to completion, and so do the requests
 *    drivers send to their children on their behalf: those go through
 *    edges, not backends, and are never held, so a drained section cannot
 *    deadlock on its own I/O.
 *
 * An edge remembers how many drained sections of the node it points at
 * it passed on to its parent (BdrvChild.parent_quiesce); when a graph
 * change points it at another node, that count is synchronised with the
 * new node's, so a backend moved from a drained node to a fresh one is
 * released, and one moved onto a drained node is held (graph.c).
 *
 * Waiting works from a coroutine (QMP handlers run in one): it parks on a
 * queue that every "in flight dropped to zero" wakes; outside a coroutine
 * it runs the main loop.
 */
#include "block/block_int.h"
#include "util/main-loop.h"

/* Woken whenever a node's or a backend's in-flight count reaches zero. */
static CoQueue drain_event = { .waiters = G_QUEUE_INIT };

void bdrv_wake_drainers(void)
{
    co_queue_restart_all(&drain_event);
}

void bdrv_parent_drained_begin_single(BdrvChild *child)
{
    child->parent_quiesce++;
    if (child->klass->drained_begin) {
        child->klass->drained_begin(child);
    }
}

void bdrv_parent_drained_end_single(BdrvChild *child)
{
    g_assert(child->parent_quiesce > 0);
    child->parent_quiesce--;
    if (child->klass->drained_end) {
        child->klass->drained_end(child);
    }
}

void bdrv_child_sync_quiesce(BdrvChild *child)
{
    unsigned target = child->bs ? child->bs->quiesce_counter : 0;

    while (child->parent_quiesce < target) {
        bdrv_parent_drained_begin_single(child);
    }
    while (child->parent_quiesce > target) {
        bdrv_parent_drained_end_single(child);
    }
}

void bdrv_quiesce(BlockDriverState *bs)
{
    bs->quiesce_counter++;
    for (GList *l = bs->parents; l; l = l->next) {
        bdrv_child_sync_quiesce(l->data);
    }
}

void bdrv_unquiesce(BlockDriverState *bs)
{
    g_assert(bs->quiesce_counter > 0);
    bs->quiesce_counter--;
    for (GList *l = bs->parents; l; l = l->next) {
        bdrv_child_sync_quiesce(l->data);
    }
}

bool bdrv_drain_poll(BlockDriverState *bs)
{
    if (bs->in_flight > 0) {
        return true;
    }
    for (GList *l = bs->parents; l; l = l->next) {
        BdrvChild *child = l->data;

        if (child->klass->drained_poll && child->klass->drained_poll(child)) {
            return true;
        }
    }
    return false;
}

static bool drain_poll_nodes(BlockDriverState *const *nodes, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (bdrv_drain_poll(nodes[i])) {
            return true;
        }
    }
    return false;
}

void bdrv_drain_wait_event(void)
{
    if (in_coroutine()) {
        co_queue_wait(&drain_event);
    } else {
        main_loop_wait(true);
    }
}

static void drain_wait(BlockDriverState *const *nodes, size_t n)
{
    while (drain_poll_nodes(nodes, n)) {
        bdrv_drain_wait_event();
    }
}

void bdrv_drained_begin_nodes(BlockDriverState *const *nodes, size_t n)
{
    /* Quiesce all first, so that no node waits on another's new I/O. */
    for (size_t i = 0; i < n; i++) {
        bdrv_quiesce(nodes[i]);
    }
    drain_wait(nodes, n);
}

void bdrv_drained_end_nodes(BlockDriverState *const *nodes, size_t n)
{
    for (size_t i = n; i-- > 0;) {
        bdrv_unquiesce(nodes[i]);
    }
}

void bdrv_drained_begin(BlockDriverState *bs)
{
    bdrv_drained_begin_nodes(&bs, 1);
}

void bdrv_drained_end(BlockDriverState *bs)
{
    bdrv_drained_end_nodes(&bs, 1);
}

void bdrv_drain(BlockDriverState *bs)
{
    drain_wait(&bs, 1);
}
