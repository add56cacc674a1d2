/*
 * qcow2 metadata helpers, checked against naive models: refcount entry
 * encoding for every width (a plain array of values), L2 entry decoding,
 * and the metadata cache (LRU eviction order, write-back of dirty tables
 * on eviction, and the dependency order of write-back between caches).
 *
 * The cache runs over a tiny in-test memory driver that logs the offset
 * of every write and counts flushes, under a fake qcow2 parent node.
 *
 * The metadata overlap check is compared with a model that lists the
 * kinds of metadata in each cluster of a made-up layout, and a refused
 * write is checked to mark the image corrupt and stop all writes.
 */
#undef NDEBUG
#include "block/qcow2/qcow2.h"
#include "qapi/qapi-types.h"

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

/* The descriptor written for compressed data reads back as that data. */
static void test_compressed_encode(void)
{
    static const struct {
        int cluster_bits;
        int64_t host, bytes;
    } cases[] = {
        { 16, 0x10000, 1 },                 /* one sector */
        { 16, 0x10000, 512 },
        { 16, 0x101ff, 2 },                 /* crosses a sector boundary */
        { 16, 0x10234, 0xffff },            /* nearly a cluster */
        { 9, 0x1ff, 511 },                  /* 512-byte clusters */
        { 21, 0x123456789, 0x1fffff },      /* 2 MiB clusters */
    };

    for (size_t i = 0; i < G_N_ELEMENTS(cases); i++) {
        int bits = cases[i].cluster_bits;
        uint64_t l2e = qcow2_compressed_l2e(cases[i].host, cases[i].bytes,
                                            bits);
        int64_t host, bytes;

        g_assert_cmpint(qcow2_l2e_type(l2e, 3), ==,
                        QCOW2_CLUSTER_COMPRESSED);
        qcow2_compressed_range(l2e, bits, &host, &bytes);
        g_assert_cmpint(host, ==, cases[i].host);
        /* Whole sectors: up to the end of the last one. */
        g_assert_cmpint(host + bytes, ==,
                        ALIGN_UP(cases[i].host + cases[i].bytes, 512));
    }
    /* 2 MiB clusters leave 49 bits for the offset. */
    g_assert_cmpuint(qcow2_compressed_l2e(1LL << 49, 100, 21), ==, 0);
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

static int coroutine_fn mem_co_preadv(BlockDriverState *bs, int64_t offset,
                                      int64_t bytes, IOVector *qiov,
                                      BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    iovector_from_buf(qiov, 0, s->data + offset, bytes);
    return 0;
}

static int coroutine_fn mem_co_pwritev(BlockDriverState *bs, int64_t offset,
                                       int64_t bytes, IOVector *qiov,
                                       BdrvRequestFlags flags)
{
    MemState *s = bs->opaque;

    g_array_append_val(s->writes, offset);
    iovector_to_buf(qiov, 0, s->data + offset, bytes);
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
    .bdrv_co_preadv = mem_co_preadv,
    .bdrv_co_pwritev = mem_co_pwritev,
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

/* --- metadata overlap check --- */

enum {
    OL_CLUSTERS = 64,
};

/*
 * A made-up layout over OL_CLUSTERS clusters of TABLE bytes, and its
 * naive model: the kinds of metadata in each cluster.
 */
typedef struct OverlapLayout {
    BDRVQcow2State s;
    uint64_t l1[70];                /* 560 bytes: spans two clusters */
    uint64_t reftable[4];
    Qcow2SnapshotL1 snapshot_l1[2];
    int64_t inactive_l2[3];
    unsigned model[OL_CLUSTERS];
} OverlapLayout;

static void mark(OverlapLayout *o, Qcow2Metadata kind, int64_t offset,
                 int64_t bytes)
{
    for (int64_t c = offset / TABLE; c * TABLE < offset + bytes; c++) {
        o->model[c] |= kind;
    }
}

static void overlap_layout_init(OverlapLayout *o)
{
    BDRVQcow2State *s = &o->s;

    memset(o, 0, sizeof(*o));
    s->cluster_bits = 9;
    s->cluster_size = TABLE;
    mark(o, QCOW2_MD_HEADER, 0, 1);
    s->l1_table = o->l1;
    s->l1_size = G_N_ELEMENTS(o->l1);
    s->l1_table_offset = 3 * TABLE;
    mark(o, QCOW2_MD_ACTIVE_L1, s->l1_table_offset, sizeof(o->l1));
    o->l1[0] = 10 * TABLE | QCOW2_OFLAG_COPIED;
    o->l1[7] = 11 * TABLE;
    o->l1[69] = 40 * TABLE | QCOW2_OFLAG_COPIED;
    mark(o, QCOW2_MD_ACTIVE_L2, 10 * TABLE, TABLE);
    mark(o, QCOW2_MD_ACTIVE_L2, 11 * TABLE, TABLE);
    mark(o, QCOW2_MD_ACTIVE_L2, 40 * TABLE, TABLE);
    s->refcount_table = o->reftable;
    s->refcount_table_size = G_N_ELEMENTS(o->reftable);
    s->refcount_table_offset = 6 * TABLE;
    mark(o, QCOW2_MD_REFCOUNT_TABLE, s->refcount_table_offset,
         sizeof(o->reftable));
    o->reftable[0] = 7 * TABLE;
    o->reftable[3] = 50 * TABLE;
    qcow2_refcount_table_changed(s);
    mark(o, QCOW2_MD_REFCOUNT_BLOCK, 7 * TABLE, TABLE);
    mark(o, QCOW2_MD_REFCOUNT_BLOCK, 50 * TABLE, TABLE);
    s->nb_snapshots = G_N_ELEMENTS(o->snapshot_l1);
    s->snapshots_offset = 20 * TABLE;
    s->snapshots_size = TABLE + 8;
    mark(o, QCOW2_MD_SNAPSHOT_TABLE, s->snapshots_offset, s->snapshots_size);
    s->snapshot_l1 = o->snapshot_l1;
    o->snapshot_l1[0] = (Qcow2SnapshotL1) { 25 * TABLE, 3 };
    o->snapshot_l1[1] = (Qcow2SnapshotL1) { 26 * TABLE, 0 };  /* empty */
    mark(o, QCOW2_MD_INACTIVE_L1, 25 * TABLE, 3 * 8);
    s->inactive_l2 = o->inactive_l2;
    s->nb_inactive_l2 = G_N_ELEMENTS(o->inactive_l2);
    o->inactive_l2[0] = 10 * TABLE;     /* shared with the active L1 */
    o->inactive_l2[1] = 30 * TABLE;
    o->inactive_l2[2] = 63 * TABLE;
    for (int i = 0; i < 3; i++) {
        mark(o, QCOW2_MD_INACTIVE_L2, o->inactive_l2[i], TABLE);
    }
}

/* Every range of up to 4 clusters, every check mask, against the model. */
static void test_overlap_model(void)
{
    OverlapLayout *o = g_new(OverlapLayout, 1);
    GRand *rng = g_rand_new_with_seed(1);

    overlap_layout_init(o);
    for (int i = 0; i < 20000; i++) {
        int64_t offset = g_rand_int_range(rng, 0, OL_CLUSTERS * TABLE);
        int64_t bytes = g_rand_int_range(rng, 1, 4 * TABLE);
        unsigned checks = g_rand_int(rng) & QCOW2_MD_ALL;
        unsigned expected = 0;
        Qcow2Metadata hit;

        bytes = MIN(bytes, OL_CLUSTERS * TABLE - offset);
        for (int64_t c = offset / TABLE; c * TABLE < offset + bytes; c++) {
            expected |= o->model[c];
        }
        expected &= checks;
        hit = qcow2_metadata_overlap(&o->s, checks, offset, bytes);
        if (!expected) {
            g_assert_cmpint(hit, ==, QCOW2_MD_NONE);
        } else {
            /* One of the kinds there, the first in enum order. */
            g_assert_cmpint(hit, ==, expected & -expected);
        }
    }
    /* Nothing to write, nothing to hit. */
    g_assert_cmpint(qcow2_metadata_overlap(&o->s, QCOW2_MD_ALL, 0, 0), ==,
                    QCOW2_MD_NONE);
    g_rand_free(rng);
    g_free(o);
}

static void test_overlap_modes(void)
{
    unsigned constant =
        qcow2_overlap_checks_for_mode(QCOW2_OVERLAP_CHECK_MODE_CONSTANT);

    g_assert_cmpuint(qcow2_overlap_checks_for_mode(
                         QCOW2_OVERLAP_CHECK_MODE_NONE), ==, 0);
    g_assert_cmpuint(constant, ==,
                     QCOW2_MD_HEADER | QCOW2_MD_ACTIVE_L1 |
                     QCOW2_MD_REFCOUNT_TABLE | QCOW2_MD_SNAPSHOT_TABLE |
                     QCOW2_MD_BITMAP_DIRECTORY);
    g_assert_cmpuint(qcow2_overlap_checks_for_mode(
                         QCOW2_OVERLAP_CHECK_MODE_CACHED), ==, QCOW2_MD_ALL);
    g_assert_cmpuint(qcow2_overlap_checks_for_mode(
                         QCOW2_OVERLAP_CHECK_MODE_ALL), ==, QCOW2_MD_ALL);
    g_assert_cmpstr(qcow2_metadata_name(QCOW2_MD_HEADER), ==,
                    "qcow2_header");
    g_assert_cmpstr(qcow2_metadata_name(QCOW2_MD_ACTIVE_L2), ==,
                    "active L2 table");
    g_assert_cmpstr(qcow2_metadata_name(QCOW2_MD_INACTIVE_L1), ==,
                    "inactive L1 table");
    g_assert_cmpstr(qcow2_metadata_name(QCOW2_MD_BITMAP_DIRECTORY), ==,
                    "bitmap directory");
}

/*
 * A refused write marks the image corrupt (the one header write) and
 * writes nothing; every later metadata write fails without writing.
 */
static void coroutine_fn refused_entry(void *opaque)
{
    Fixture *f = opaque;
    BDRVQcow2State *s = &f->state;
    GArray *w = mem_state(f)->writes;
    uint64_t l1[1] = { 5 * TABLE | QCOW2_OFLAG_COPIED };
    uint8_t buf[TABLE] = { 0 };

    s->version = 3;
    s->cluster_bits = 9;
    s->l1_table = l1;
    s->l1_size = 1;
    s->l1_table_offset = 2 * TABLE;
    s->overlap_checks = QCOW2_MD_ALL;

    /* An L2 table written back in place, a new cluster: allowed. */
    g_assert_cmpint(qcow2_write_metadata(&f->parent, QCOW2_MD_ACTIVE_L2,
                                         5 * TABLE, TABLE, buf), ==, 0);
    g_assert_cmpint(qcow2_write_metadata(&f->parent, QCOW2_MD_NONE,
                                         6 * TABLE, TABLE, buf), ==, 0);
    g_assert_cmpuint(w->len, ==, 2);
    /* New metadata over the L2 table: refused, image marked corrupt. */
    g_assert_cmpint(qcow2_write_metadata(&f->parent, QCOW2_MD_NONE,
                                         5 * TABLE + 8, 8, buf), ==, -EIO);
    g_assert_true(s->corrupt);
    g_assert_cmpuint(w->len, ==, 3);
    g_assert_cmpint(g_array_index(w, int64_t, 2), ==, QCOW2_HDR_INCOMPAT);
    g_assert_cmpuint(qcow2_get_be64(mem_state(f)->data + QCOW2_HDR_INCOMPAT),
                     ==, QCOW2_INCOMPAT_CORRUPT);
    /* From now on nothing is written. */
    g_assert_cmpint(qcow2_write_metadata(&f->parent, QCOW2_MD_NONE,
                                         6 * TABLE, TABLE, buf), ==, -EIO);
    g_assert_cmpuint(w->len, ==, 3);
    s->l1_table = NULL;
}

static void test_overlap_refused(void)
{
    Fixture *f = fixture_new();

    co_run_sync(refused_entry, f);
    fixture_free(f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qcow2/refcount/widths", test_refcount_widths);
    g_test_add_func("/qcow2/refcount/layout", test_refcount_layout);
    g_test_add_func("/qcow2/l2-entry/types", test_l2_entry_types);
    g_test_add_func("/qcow2/l2-entry/compressed", test_compressed_range);
    g_test_add_func("/qcow2/l2-entry/compressed-encode",
                    test_compressed_encode);
    g_test_add_func("/qcow2/cache/lru", test_cache_lru);
    g_test_add_func("/qcow2/cache/dependency", test_cache_dependency);
    g_test_add_func("/qcow2/overlap/model", test_overlap_model);
    g_test_add_func("/qcow2/overlap/modes", test_overlap_modes);
    g_test_add_func("/qcow2/overlap/refused", test_overlap_refused);
    return g_test_run();
}
