/*
 * A list of byte ranges in flight, for code that must not let two
 * operations on the same bytes run at once: block-copy's tasks (a
 * cluster is copied by one task at a time) and copy-before-write's
 * frozen snapshot reads (a guest write waits until readers of the old
 * data are done).  block/reqlist.c.
 *
 * The list does not own its entries: the caller embeds a BlockReq in
 * its own request, adds it before the first yield that others could
 * observe, and removes it when done.  Removing or shrinking an entry
 * wakes every coroutine waiting for it; a woken waiter looks at the
 * list again (the entry may be gone, or freed, by then).
 *
 * Main loop and its coroutines only.  Lookups are linear in the number
 * of entries, which stays small (tasks in flight, not clusters).
 */
#ifndef BLOCK_REQLIST_H
#define BLOCK_REQLIST_H

#include "util/coroutine.h"

typedef struct BlockReq {
    int64_t offset;
    int64_t bytes;
    CoQueue waiters;        /* coroutines waiting for this entry */
    GList link;             /* in BlockReqList.reqs */
} BlockReq;

typedef struct BlockReqList {
    GQueue reqs;            /* BlockReq *, oldest first */
} BlockReqList;

void reqlist_init(BlockReqList *list);
bool reqlist_is_empty(const BlockReqList *list);

/* Fill in @req for [@offset, @offset + @bytes) and add it to @list. */
void reqlist_add(BlockReqList *list, BlockReq *req, int64_t offset,
                 int64_t bytes);

/* The oldest entry overlapping [@offset, @offset + @bytes), or NULL. */
BlockReq *reqlist_find_conflict(BlockReqList *list, int64_t offset,
                                int64_t bytes);

/*
 * reqlist_wait_one:
 * If an entry overlaps [@offset, @offset + @bytes), wait until it is
 * removed or shrunk and return true (without looking again: the caller
 * re-checks whatever it depends on); else return false at once.
 */
bool coroutine_fn reqlist_wait_one(BlockReqList *list, int64_t offset,
                                   int64_t bytes);

/* Wait until no entry overlaps [@offset, @offset + @bytes). */
void coroutine_fn reqlist_wait_all(BlockReqList *list, int64_t offset,
                                   int64_t bytes);

/*
 * The operation turned out to cover only the first @new_bytes of @req
 * (0 < @new_bytes <= req->bytes): shrink it and wake its waiters, who
 * may no longer overlap it.
 */
void reqlist_shrink(BlockReq *req, int64_t new_bytes);

/* Remove @req from its list and wake its waiters. */
void reqlist_remove(BlockReqList *list, BlockReq *req);

#endif /* BLOCK_REQLIST_H */
