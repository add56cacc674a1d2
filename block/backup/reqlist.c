/*
 * The list of byte ranges in flight; see include/block/reqlist.h.
 *
 * Each entry has its own wait queue, so finishing one request wakes only
 * the coroutines that waited for that request.  Waiters never rely on
 * the entry still existing when they run: they are woken through the
 * main loop and look the list up again.
 */
#include "block/reqlist.h"

void reqlist_init(BlockReqList *list)
{
    g_queue_init(&list->reqs);
}

bool reqlist_is_empty(const BlockReqList *list)
{
    return list->reqs.head == NULL;
}

void reqlist_add(BlockReqList *list, BlockReq *req, int64_t offset,
                 int64_t bytes)
{
    g_assert(offset >= 0 && bytes > 0);
    *req = (BlockReq) {
        .offset = offset,
        .bytes = bytes,
        .link.data = req,
    };
    co_queue_init(&req->waiters);
    g_queue_push_tail_link(&list->reqs, &req->link);
}

static bool ranges_overlap(int64_t a_offset, int64_t a_bytes,
                           int64_t b_offset, int64_t b_bytes)
{
    return a_bytes > 0 && b_bytes > 0 &&
           a_offset < b_offset + b_bytes && b_offset < a_offset + a_bytes;
}

BlockReq *reqlist_find_conflict(BlockReqList *list, int64_t offset,
                                int64_t bytes)
{
    for (GList *l = list->reqs.head; l; l = l->next) {
        BlockReq *req = l->data;

        if (ranges_overlap(req->offset, req->bytes, offset, bytes)) {
            return req;
        }
    }
    return NULL;
}

bool coroutine_fn reqlist_wait_one(BlockReqList *list, int64_t offset,
                                   int64_t bytes)
{
    BlockReq *req = reqlist_find_conflict(list, offset, bytes);

    if (!req) {
        return false;
    }
    co_queue_wait(&req->waiters);
    return true;
}

void coroutine_fn reqlist_wait_all(BlockReqList *list, int64_t offset,
                                   int64_t bytes)
{
    while (reqlist_wait_one(list, offset, bytes)) {
        /* look again: another entry may overlap too */
    }
}

void reqlist_shrink(BlockReq *req, int64_t new_bytes)
{
    g_assert(new_bytes > 0 && new_bytes <= req->bytes);
    if (new_bytes == req->bytes) {
        return;
    }
    req->bytes = new_bytes;
    co_queue_restart_all(&req->waiters);
}

void reqlist_remove(BlockReqList *list, BlockReq *req)
{
    g_queue_unlink(&list->reqs, &req->link);
    co_queue_restart_all(&req->waiters);
}
