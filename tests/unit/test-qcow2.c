/*
 * qcow2 metadata helpers, checked against naive models: refcount entry
 * encoding for every width (a plain array of values), L2 entry decoding,
 * and the metadata cache (LRU eviction order, write-back of dirty tables
 * on eviction, and the dependency order of write-back between caches).
 *
 * The cache runs over a tiny in-test memory driver that logs the offset
 * of every write and counts flushes, under a fake qcow2 parent node.
 */
#undef NDEBUG
#include "block/qcow2.h"

enum {
    TABLE = 512,
    DISK = 64 * TABLE,
};

/* --- refcount entries --- */

static void test_refcount_widths(void)
{
    for (int order = 0; order <= 6; order++) {
        uint64_t entries = TABLE * 8 >> order;
        uint64_t max = order == 6 ? UINT64_MAX
                                  : (1ULL << (1 << order)) - 1;
        g_autofree uint8_t *block = g_malloc0(TABLE);
        g_autofree uint64_t *model = g_new0(uint64_t, entries);
        GRand *rng = g_rand_new_with_seed(order);

        for (int i = 0; i < 4000; i++) {
            uint64_t idx = g_rand_int_range(rng, 0, entries);
            uint64_t val = ((uint64_t)g_rand_int(rng) << 32 |
                            g_rand_int(rng)) & max;

            if (g_rand_boolean(rng)) {
                val = g_rand_boolean(rng) ? max : 0;
            }
            qcow2_refcount_set(block, order, idx, val);
            model[idx] = val;
            /* Neighbours are untouched. */
            for (uint64_t j = idx ? idx - 1 : 0;
                 j < MIN(idx + 2, entries); j++) {
                g_assert_cmpuint(qcow2_refcount_get(block, order, j), ==,
                                 model[j]);
            }
        }
        for (uint64_t j = 0; j < entries; j++) {
            g_assert_cmpuint(qcow2_refcount_get(block, order, j), ==,
                             model[j]);
        }
        g_rand_free(rng);
    }
}

static void test_refcount_layout(void)
{
    uint8_t block[8] = { 0 };

    /* Sub-byte widths start at the least significant bit. */
    qcow2_refcount_set(block, 0, 0, 1);
    qcow2_refcount_set(block, 2, 1, 0xa);
    g_assert_cmpuint(block[0], ==, 0xa1);
    /* Wider ones are big-endian. */
    memset(block, 0, sizeof(block));
    qcow2_refcount_set(block, 4, 1, 0x1234);
    g_assert_cmpuint(block[2], ==, 0x12);
    g_assert_cmpuint(block[3], ==, 0x34);
}

/* --- L2 entries --- */

static void test_l2_entry_types(void)
{
    uint64_t host = 0x50000;

    g_assert_cmpint(qcow2_l2e_type(0, 3), ==, QCOW2_CLUSTER_UNALLOCATED);
    g_assert_cmpint(qcow2_l2e_type(host | QCOW2_OFLAG_COPIED, 3), ==,
                    QCOW2_CLUSTER_NORMAL);
    g_assert_cmpint(qcow2_l2e_type(QCOW2_OFLAG_ZERO, 3), ==,
                    QCOW2_CLUSTER_ZERO_PLAIN);
    g_assert_cmpint(qcow2_l2e_type(host | QCOW2_OFLAG_ZERO, 3), ==,
                    QCOW2_CLUSTER_ZERO_ALLOC);
    /* Version 2 has no zero flag. */
    g_assert_cmpint(qcow2_l2e_type(QCOW2_OFLAG_ZERO, 2), ==,
                    QCOW2_CLUSTER_UNALLOCATED);
    g_assert_cmpint(qcow2_l2e_type(QCOW2_OFLAG_COMPRESSED | 1, 3), ==,
                    QCOW2_CLUSTER_COMPRESSED);
}

static void test_compressed_range(void)
{
    /* 64 KiB clusters: x = 62 - 8 = 54; 3 extra sectors. */
    uint64_t l2e = QCOW2_OFLAG_COMPRESSED | (3ULL << 54) | 0x10234;
    int64_t host, bytes;

    qcow2_compressed_range(l2e, 16, &host, &bytes);
    g_assert_cmpint(host, ==, 0x10234);
    g_assert_cmpint(bytes, ==, 4 * 512 - 0x34);
}

/* --- cache --- */

typedef struct MemState {
    uint8_t data[DISK];
    GArray *writes;                 /* offsets, in order */
    unsigned flushes;
} MemState;

static int coroutine_fn mem_open(BlockDriverState *bs,
                                 BlockdevOptions *options, Error **errp)
{
    MemState *s = bs->opaque;

    s->writes = g_array_new(FALSE, FALSE, sizeof(int64_t));
    for (int i = 0; i < DISK; i++) {
        s->data[i] = i / TABLE;     /* each table filled with its number */
    }
    bs->total_bytes = DISK;
    return 0;
}

static void mem_close(BlockDriverState *bs)
{
    MemState *s = bs->opaque;

    g_array_free(s->writes, TRUE);
}

static int coroutine_fn mem_co_pread(BlockDriverState *bs, int64_t offset,
                                     int64_t bytes, void *buf,
                                     BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    memcpy(buf, s->data + offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwrite(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, const void *buf,
                                      BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    g_array_append_val(s->writes, offset);
    memcpy(s->data + offset, buf, bytes);
    return 0;
}

static int coroutine_fn mem_co_flush(BlockDriverState *bs)
{
    MemState *s = bs->opaque;

    s->flushes++;
    return 0;
}

static const BlockDriver bdrv_test_mem = {
    .format_name = "test-mem",
    .instance_size = sizeof(MemState),
    .bdrv_open = mem_open,
    .bdrv_close = mem_close,
    .bdrv_co_pread = mem_co_pread,
    .bdrv_co_pwrite = mem_co_pwrite,
    .bdrv_co_flush = mem_co_flush,
};

typedef struct Fixture {
    BlockDriverState *mem;
    BlockDriverState parent;        /* a fake qcow2 node */
    BDRVQcow2State state;
} Fixture;

static char *fake_parent_desc(BdrvChild *child)
{
    return g_strdup("test");
}

static const BdrvChildClass fake_class = {
    .get_parent_desc = fake_parent_desc,
};

static void coroutine_fn open_entry(void *opaque)
{
    Fixture *f = opaque;

    f->mem = bdrv_new_open_driver(&bdrv_test_mem, NULL, false, &error_abort);
}

static Fixture *fixture_new(void)
{
    Fixture *f = g_new0(Fixture, 1);

    co_run_sync(open_entry, f);
    f->state.cluster_size = TABLE;
    f->parent.opaque = &f->state;
    f->parent.file = bdrv_attach_child(f->mem, "file", BDRV_CHILD_METADATA,
                                       &fake_class, f, NULL,
                                       BLK_PERM_CONSISTENT_READ |
                                       BLK_PERM_WRITE, BLK_PERM_ALL,
                                       &error_abort);
    return f;
}

static void fixture_free(Fixture *f)
{
    bdrv_detach_child(f->parent.file);
    bdrv_unref(f->mem);
    g_free(f);
}

static MemState *mem_state(Fixture *f)
{
    return f->mem->opaque;
}

static void assert_lru(Qcow2Cache *c, const int64_t *tables, int n)
{
    g_autoptr(GArray) order = qcow2_cache_lru_order(c);

    g_assert_cmpuint(order->len, ==, n);
    for (int i = 0; i < n; i++) {
        g_assert_cmpint(g_array_index(order, int64_t, i), ==,
                        tables[i] * TABLE);
    }
}

/* Pin, check the content, optionally dirty, release. */
static void coroutine_fn touch(Qcow2Cache *c, int64_t table, bool dirty)
{
    uint8_t *t;

    g_assert_cmpint(qcow2_cache_get(c, table * TABLE, (void **)&t), ==, 0);
    if (dirty) {
        t[0] = 0xff;
        qcow2_cache_mark_dirty(c, t);
    } else {
        g_assert(t[1] == table);
    }
    qcow2_cache_put(c, (void **)&t);
}

static void coroutine_fn lru_entry(void *opaque)
{
    Fixture *f = opaque;
    Qcow2Cache *c = qcow2_cache_create(&f->parent, QCOW2_MD_ACTIVE_L2, 3,
                                       TABLE);

    touch(c, 1, false);
    touch(c, 2, false);
    touch(c, 3, false);
    assert_lru(c, (int64_t[]) { 1, 2, 3 }, 3);
    touch(c, 1, false);
    assert_lru(c, (int64_t[]) { 2, 3, 1 }, 3);
    touch(c, 4, true);          /* evicts 2 (clean: no write) */
    assert_lru(c, (int64_t[]) { 3, 1, 4 }, 3);
    g_assert_cmpuint(mem_state(f)->writes->len, ==, 0);
    touch(c, 5, false);         /* evicts 3 */
    touch(c, 6, false);         /* evicts 1 */
    touch(c, 7, false);         /* evicts 4: dirty, written back */
    g_assert_cmpuint(mem_state(f)->writes->len, ==, 1);
    g_assert_cmpint(g_array_index(mem_state(f)->writes, int64_t, 0), ==,
                    4 * TABLE);
    g_assert_cmpuint(mem_state(f)->data[4 * TABLE], ==, 0xff);
    /* Discarded tables are forgotten, dirty or not. */
    touch(c, 5, true);
    qcow2_cache_discard(c, 5 * TABLE);
    assert_lru(c, (int64_t[]) { 6, 7 }, 2);
    g_assert_cmpint(qcow2_cache_flush(c), ==, 0);
    g_assert_cmpuint(mem_state(f)->writes->len, ==, 1);
    qcow2_cache_destroy(c);
}

static void test_cache_lru(void)
{
    Fixture *f = fixture_new();

    co_run_sync(lru_entry, f);
    fixture_free(f);
}

static void coroutine_fn dependency_entry(void *opaque)
{
    Fixture *f = opaque;
    Qcow2Cache *l2 = qcow2_cache_create(&f->parent, QCOW2_MD_ACTIVE_L2, 4,
                                        TABLE);
    Qcow2Cache *rc = qcow2_cache_create(&f->parent, QCOW2_MD_REFCOUNT_BLOCK,
                                        4, TABLE);
    GArray *w = mem_state(f)->writes;

    /* Allocation: refcount block 10 before L2 table 20. */
    touch(rc, 10, true);
    g_assert_cmpint(qcow2_cache_set_dependency(l2, rc), ==, 0);
    touch(l2, 20, true);
    g_assert_cmpint(qcow2_cache_write(l2), ==, 0);
    g_assert_cmpuint(w->len, ==, 2);
    g_assert_cmpint(g_array_index(w, int64_t, 0), ==, 10 * TABLE);
    g_assert_cmpint(g_array_index(w, int64_t, 1), ==, 20 * TABLE);
    g_assert_cmpuint(mem_state(f)->flushes, ==, 1);   /* between them */

    /* Free: L2 table 21 before refcount block 11. */
    touch(l2, 21, true);
    g_assert_cmpint(qcow2_cache_set_dependency(rc, l2), ==, 0);
    touch(rc, 11, true);
    g_assert_cmpint(qcow2_cache_write(rc), ==, 0);
    g_assert_cmpint(g_array_index(w, int64_t, 2), ==, 21 * TABLE);
    g_assert_cmpint(g_array_index(w, int64_t, 3), ==, 11 * TABLE);

    /* Reversing a pending dependency flushes it first: no cycle. */
    touch(l2, 22, true);
    g_assert_cmpint(qcow2_cache_set_dependency(rc, l2), ==, 0);
    touch(rc, 12, true);
    g_assert_cmpint(qcow2_cache_set_dependency(l2, rc), ==, 0);
    g_assert_cmpuint(w->len, ==, 5);
    g_assert_cmpint(g_array_index(w, int64_t, 4), ==, 22 * TABLE);
    qcow2_cache_destroy(l2);
    qcow2_cache_destroy(rc);
}

static void test_cache_dependency(void)
{
    Fixture *f = fixture_new();

    co_run_sync(dependency_entry, f);
    fixture_free(f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qcow2/refcount/widths", test_refcount_widths);
    g_test_add_func("/qcow2/refcount/layout", test_refcount_layout);
    g_test_add_func("/qcow2/l2-entry/types", test_l2_entry_types);
    g_test_add_func("/qcow2/l2-entry/compressed", test_compressed_range);
    g_test_add_func("/qcow2/cache/lru", test_cache_lru);
    g_test_add_func("/qcow2/cache/dependency", test_cache_dependency);
    return g_test_run();
}
