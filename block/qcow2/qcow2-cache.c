/*
 * qcow2 metadata cache: a bounded set of cluster-sized tables (L2 tables
 * or refcount blocks) of the image file.
 *
 * Each cache holds num_tables slots in one aligned allocation.  A hash
 * table maps an image file offset to its slot, so a lookup costs O(1);
 * eviction picks the least recently used unpinned slot (a linear scan,
 * paid only on a miss, which costs a read anyway).  A slot is pinned
 * (ref > 0) between qcow2_cache_get() and qcow2_cache_put(); callers
 * hold BDRVQcow2State.lock throughout and pin at most a few slots.
 *
 * Write-back ordering: a cache may depend on another one.  Before any
 * dirty slot of a cache is written (on eviction or on a flush), every
 * dirty slot of the cache it depends on is written and the image file is
 * flushed, and the dependency is then dropped.  The allocation path
 * makes the L2 cache depend on the refcount cache (refcounts reach the
 * disk before the L2 entries that use the clusters); the free path makes
 * the refcount cache depend on the L2 cache (a cluster is unlinked on
 * disk before its refcount drops).  Setting one dependency while the
 * opposite one exists first flushes the latter, so there is never a
 * cycle.
 */
#include "block/qcow2/qcow2.h"

typedef struct Qcow2CacheSlot {
    int64_t offset;                 /* 0: empty (offset 0 is the header) */
    int ref;
    bool dirty;
    uint64_t lru;                   /* last use, from lru_clock */
} Qcow2CacheSlot;

struct Qcow2Cache {
    BlockDriverState *bs;           /* the qcow2 node (writes via bs->file) */
    Qcow2Metadata kind;             /* of the tables, rewritten in place */
    int num_tables;
    int64_t table_size;
    Qcow2CacheSlot *slots;
    uint8_t *tables;                /* num_tables * table_size */
    GHashTable *index;              /* offset -> slot number + 1 */
    uint64_t lru_clock;
    Qcow2Cache *depends;
};

static void *slot_table(Qcow2Cache *c, int i)
{
    return c->tables + (int64_t)i * c->table_size;
}

static int table_slot(Qcow2Cache *c, const void *table)
{
    ptrdiff_t diff = (const uint8_t *)table - c->tables;

    g_assert(diff >= 0 && diff % c->table_size == 0 &&
             diff / c->table_size < c->num_tables);
    return diff / c->table_size;
}

Qcow2Cache *qcow2_cache_create(BlockDriverState *bs, Qcow2Metadata kind,
                               int num_tables, int64_t table_size)
{
    Qcow2Cache *c = g_new0(Qcow2Cache, 1);

    c->bs = bs;
    c->kind = kind;
    c->num_tables = num_tables;
    c->table_size = table_size;
    c->slots = g_new0(Qcow2CacheSlot, num_tables);
    c->tables = blk_memalign(num_tables * table_size);
    if (!c->tables) {
        g_free(c->slots);
        g_free(c);
        return NULL;
    }
    c->index = g_hash_table_new(g_int64_hash, g_int64_equal);
    return c;
}

void qcow2_cache_destroy(Qcow2Cache *c)
{
    if (!c) {
        return;
    }
    g_hash_table_destroy(c->index);
    blk_vfree(c->tables);
    g_free(c->slots);
    g_free(c);
}

static int coroutine_fn cache_flush_dependency(Qcow2Cache *c)
{
    int ret = qcow2_cache_flush(c->depends);

    if (ret == 0) {
        c->depends = NULL;
    }
    return ret;
}

static int coroutine_fn cache_write_slot(Qcow2Cache *c, int i)
{
    Qcow2CacheSlot *slot = &c->slots[i];
    int ret;

    if (!slot->dirty) {
        return 0;
    }
    if (c->depends) {
        ret = cache_flush_dependency(c);
        if (ret < 0) {
            return ret;
        }
    }
    BLKDBG_EVENT(c->bs->file, c->kind == QCOW2_MD_ACTIVE_L2
                              ? BLKDBG_L2_UPDATE : BLKDBG_REFBLOCK_UPDATE_PART);
    ret = qcow2_write_metadata(c->bs, c->kind, slot->offset, c->table_size,
                               slot_table(c, i));
    if (ret < 0) {
        return ret;
    }
    slot->dirty = false;
    return 0;
}

int coroutine_fn qcow2_cache_write(Qcow2Cache *c)
{
    int result = 0;

    for (int i = 0; i < c->num_tables; i++) {
        int ret = cache_write_slot(c, i);

        if (ret < 0 && result == 0) {
            result = ret;
        }
    }
    return result;
}

int coroutine_fn qcow2_cache_flush(Qcow2Cache *c)
{
    int ret = qcow2_cache_write(c);

    if (ret == 0) {
        ret = bdrv_co_flush(c->bs->file->bs);
    }
    return ret;
}

int coroutine_fn qcow2_cache_set_dependency(Qcow2Cache *c,
                                            Qcow2Cache *dependency)
{
    int ret;

    if (dependency->depends) {
        ret = cache_flush_dependency(dependency);
        if (ret < 0) {
            return ret;
        }
    }
    if (c->depends && c->depends != dependency) {
        ret = cache_flush_dependency(c);
        if (ret < 0) {
            return ret;
        }
    }
    c->depends = dependency;
    return 0;
}

/* A free slot, or the least recently used unpinned one written back. */
static int coroutine_fn cache_find_victim(Qcow2Cache *c)
{
    int victim = -1;
    int ret;

    for (int i = 0; i < c->num_tables; i++) {
        if (c->slots[i].ref) {
            continue;
        }
        if (!c->slots[i].offset) {
            return i;
        }
        if (victim < 0 || c->slots[i].lru < c->slots[victim].lru) {
            victim = i;
        }
    }
    if (victim < 0) {
        return -ENOSPC;     /* every slot pinned: a caller bug */
    }
    ret = cache_write_slot(c, victim);
    if (ret < 0) {
        return ret;
    }
    g_hash_table_remove(c->index, &c->slots[victim].offset);
    c->slots[victim].offset = 0;
    return victim;
}

static int coroutine_fn cache_do_get(Qcow2Cache *c, int64_t offset,
                                     void **table, bool read)
{
    gpointer found;
    int i, ret;

    g_assert(offset > 0 && offset % c->table_size == 0);
    found = g_hash_table_lookup(c->index, &offset);
    if (found) {
        i = GPOINTER_TO_INT(found) - 1;
        if (!read) {
            memset(slot_table(c, i), 0, c->table_size);
        }
    } else {
        i = cache_find_victim(c);
        if (i < 0) {
            return i;
        }
        /* Somebody may have loaded it while the victim was written. */
        found = g_hash_table_lookup(c->index, &offset);
        if (found) {
            i = GPOINTER_TO_INT(found) - 1;
        } else if (read) {
            BLKDBG_EVENT(c->bs->file, c->kind == QCOW2_MD_ACTIVE_L2
                                      ? BLKDBG_L2_LOAD : BLKDBG_REFBLOCK_LOAD);
            ret = bdrv_co_pread(c->bs->file, offset, c->table_size,
                                slot_table(c, i), 0);
            if (ret < 0) {
                return ret;
            }
        } else {
            memset(slot_table(c, i), 0, c->table_size);
        }
        if (!found) {
            c->slots[i].offset = offset;
            c->slots[i].dirty = false;
            g_hash_table_insert(c->index, &c->slots[i].offset,
                                GINT_TO_POINTER(i + 1));
        }
    }
    c->slots[i].ref++;
    c->slots[i].lru = ++c->lru_clock;
    *table = slot_table(c, i);
    return 0;
}

int coroutine_fn qcow2_cache_get(Qcow2Cache *c, int64_t offset,
                                 void **table)
{
    return cache_do_get(c, offset, table, true);
}

int coroutine_fn qcow2_cache_get_empty(Qcow2Cache *c, int64_t offset,
                                       void **table)
{
    return cache_do_get(c, offset, table, false);
}

void qcow2_cache_put(Qcow2Cache *c, void **table)
{
    int i = table_slot(c, *table);

    g_assert(c->slots[i].ref > 0);
    c->slots[i].ref--;
    *table = NULL;
}

void qcow2_cache_mark_dirty(Qcow2Cache *c, void *table)
{
    c->slots[table_slot(c, table)].dirty = true;
}

void qcow2_cache_discard(Qcow2Cache *c, int64_t offset)
{
    gpointer found = g_hash_table_lookup(c->index, &offset);
    int i;

    if (!found) {
        return;
    }
    i = GPOINTER_TO_INT(found) - 1;
    g_assert(c->slots[i].ref == 0);
    g_hash_table_remove(c->index, &offset);
    c->slots[i].offset = 0;
    c->slots[i].dirty = false;
}

static gint slot_lru_cmp(gconstpointer a, gconstpointer b, gpointer opaque)
{
    const Qcow2CacheSlot *slots = opaque;
    uint64_t la = slots[*(const int *)a].lru;
    uint64_t lb = slots[*(const int *)b].lru;

    return la < lb ? -1 : la > lb;
}

GArray *qcow2_cache_lru_order(Qcow2Cache *c)
{
    g_autoptr(GArray) idx = g_array_new(FALSE, FALSE, sizeof(int));
    GArray *offsets = g_array_new(FALSE, FALSE, sizeof(int64_t));

    for (int i = 0; i < c->num_tables; i++) {
        if (c->slots[i].offset) {
            g_array_append_val(idx, i);
        }
    }
    g_array_sort_with_data(idx, slot_lru_cmp, c->slots);
    for (guint i = 0; i < idx->len; i++) {
        g_array_append_val(offsets,
                           c->slots[g_array_index(idx, int, i)].offset);
    }
    return offsets;
}
