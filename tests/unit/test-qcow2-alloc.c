/*
 * The host allocators of qcow2, on a real image in a temporary file.
 *
 * Clusters (qcow2_alloc_clusters()): the scan for free clusters starts
 * at the first free one, not at the start of the image.
 *
 * Bytes of compressed clusters (qcow2_alloc_bytes()), checked against a
 * naive model:
 * a list of the live allocations (byte ranges of compressed data, whole
 * clusters of other data) from which the refcount of every host cluster
 * follows (one per live allocation touching it, plus the metadata's).
 * After every step no two live allocations overlap and every refcount
 * is the model's.
 *
 * The edge cases get their own tests: data crossing into the next host
 * cluster, a new host cluster when the next one is taken, a cluster
 * filled exactly, a cluster whose refcount is at its maximum (1-bit
 * refcounts), and a cluster freed while the allocator was filling it.
 */
#undef NDEBUG
#include "block/qcow2/qcow2.h"
#include "qapi/qapi-types.h"

enum {
    CLUSTER = 4096,
    DISK = 64 * 1024 * 1024,
};

typedef struct Image {
    char *path;
    BlockDriverState *bs;
    BDRVQcow2State *s;
} Image;

static BlockdevRef *file_definition(const char *path)
{
    BlockdevRef *ref = g_new0(BlockdevRef, 1);

    ref->type = QTYPE_QDICT;
    ref->u.definition.driver = BLOCKDEV_DRIVER_FILE;
    ref->u.definition.u.file.filename = g_strdup(path);
    return ref;
}

/* A new image of CLUSTER-byte clusters (refcount width: 0 = default). */
static void coroutine_fn image_open(Image *img, int refcount_bits)
{
    g_autoptr(BlockdevCreateOptions) create =
        g_new0(BlockdevCreateOptions, 1);
    g_autoptr(BlockdevOptions) opts = g_new0(BlockdevOptions, 1);
    int fd = g_file_open_tmp("test-qcow2-alloc-XXXXXX", &img->path,
                             NULL);

    g_assert_cmpint(fd, >=, 0);
    close(fd);
    create->driver = BLOCKDEV_DRIVER_QCOW2;
    create->u.qcow2.file = file_definition(img->path);
    create->u.qcow2.size = DISK;
    create->u.qcow2.has_cluster_size = true;
    create->u.qcow2.cluster_size = CLUSTER;
    if (refcount_bits) {
        create->u.qcow2.has_refcount_bits = true;
        create->u.qcow2.refcount_bits = refcount_bits;
    }
    g_assert_cmpint(qcow2_co_create(create, &error_abort), ==, 0);

    opts->driver = BLOCKDEV_DRIVER_QCOW2;
    opts->node_name = g_strdup("qcow2");
    opts->u.qcow2.file = file_definition(img->path);
    img->bs = bdrv_open_blockdev(opts, false, &error_abort);
    img->s = img->bs->opaque;
    co_mutex_lock(&img->s->lock);
}

static void image_close(Image *img)
{
    co_mutex_unlock(&img->s->lock);
    bdrv_unref(img->bs);
    g_assert_cmpint(unlink(img->path), ==, 0);
    g_free(img->path);
}

static uint64_t coroutine_fn refcount_of(Image *img, int64_t offset)
{
    uint64_t refcount;

    g_assert_cmpint(qcow2_get_refcount(img->bs, offset / CLUSTER,
                                       &refcount), ==, 0);
    return refcount;
}

static int64_t coroutine_fn alloc_bytes(Image *img, int64_t size)
{
    int64_t offset = qcow2_alloc_bytes(img->bs, size);

    g_assert_cmpint(offset, >, 0);
    return offset;
}

/* --- whole clusters --- */

static int64_t coroutine_fn alloc_cluster(Image *img)
{
    int64_t offset = qcow2_alloc_clusters(img->bs, 1);

    g_assert_cmpint(offset, >, 0);
    return offset;
}

/*
 * Filling an image: each scan starts right after the clusters in use
 * (a scan from the header on made filling an image quadratic), and a
 * freed cluster is found again.
 */
static void coroutine_fn scan_start_entry(void *opaque)
{
    Image img;
    int64_t first, middle = 0;

    image_open(&img, 0);
    first = alloc_cluster(&img);
    for (int i = 1; i < 100; i++) {
        int64_t offset = alloc_cluster(&img);

        g_assert_cmpint(offset, ==, first + i * CLUSTER);
        g_assert_cmpint(img.s->free_cluster_index, ==,
                        offset / CLUSTER + 1);
        if (i == 50) {
            middle = offset;
        }
    }
    g_assert_cmpint(qcow2_free_clusters(img.bs, middle, CLUSTER, false),
                    ==, 0);
    g_assert_cmpint(img.s->free_cluster_index, ==, middle / CLUSTER);
    g_assert_cmpint(alloc_cluster(&img), ==, middle);
    g_assert_cmpint(alloc_cluster(&img), ==, first + 100 * CLUSTER);
    image_close(&img);
}

static void test_scan_start(void)
{
    co_run_sync(scan_start_entry, NULL);
}

/* --- compressed bytes: the model --- */

typedef struct Range {
    int64_t offset;
    int64_t bytes;
} Range;

typedef struct Model {
    GArray *live;                   /* Range, in no order */
    uint64_t *base;                 /* refcounts before the test */
    int64_t clusters;               /* of @base */
} Model;

static void coroutine_fn model_init(Model *m, Image *img)
{
    m->live = g_array_new(FALSE, FALSE, sizeof(Range));
    m->clusters = DISK / CLUSTER;
    m->base = g_new0(uint64_t, m->clusters);
    for (int64_t c = 0; c < m->clusters; c++) {
        m->base[c] = refcount_of(img, c * CLUSTER);
    }
}

static void model_free(Model *m)
{
    g_array_free(m->live, TRUE);
    g_free(m->base);
}

static void model_add(Model *m, int64_t offset, int64_t bytes)
{
    Range r = { .offset = offset, .bytes = bytes };

    g_assert_cmpint(offset + bytes, <=, m->clusters * CLUSTER);
    /* Disjoint from everything live. */
    for (guint i = 0; i < m->live->len; i++) {
        Range *o = &g_array_index(m->live, Range, i);

        g_assert_true(offset + bytes <= o->offset ||
                      o->offset + o->bytes <= offset);
    }
    /* And from the metadata. */
    for (int64_t c = offset / CLUSTER; c <= (offset + bytes - 1) / CLUSTER;
         c++) {
        g_assert_cmpuint(m->base[c], ==, 0);
    }
    g_array_append_val(m->live, r);
}

static void coroutine_fn model_check(Model *m, Image *img)
{
    g_autofree uint64_t *expected = g_memdup2(m->base,
                                              m->clusters * sizeof(uint64_t));

    for (guint i = 0; i < m->live->len; i++) {
        Range *r = &g_array_index(m->live, Range, i);

        for (int64_t c = r->offset / CLUSTER;
             c <= (r->offset + r->bytes - 1) / CLUSTER; c++) {
            expected[c]++;
        }
    }
    for (int64_t c = 0; c < m->clusters; c++) {
        g_assert_cmpuint(refcount_of(img, c * CLUSTER), ==, expected[c]);
    }
}

/*
 * Random compressed sizes, with other clusters allocated and earlier
 * allocations freed in between.
 */
static void coroutine_fn model_entry(void *opaque)
{
    GRand *rng = g_rand_new_with_seed(42);
    Image img;
    Model m;

    image_open(&img, 0);
    model_init(&m, &img);
    for (int step = 0; step < 600; step++) {
        int what = g_rand_int_range(rng, 0, 10);

        if (what < 6) {
            int64_t size = g_rand_boolean(rng)
                           ? g_rand_int_range(rng, 1, 600)
                           : g_rand_int_range(rng, 1, CLUSTER + 1);

            model_add(&m, alloc_bytes(&img, size), size);
        } else if (what < 8) {
            model_add(&m, alloc_cluster(&img), CLUSTER);
        } else if (m.live->len) {
            guint i = g_rand_int_range(rng, 0, m.live->len);
            Range r = g_array_index(m.live, Range, i);

            g_array_remove_index_fast(m.live, i);
            g_assert_cmpint(qcow2_free_clusters(img.bs, r.offset, r.bytes,
                                                false), ==, 0);
        }
        if (step % 50 == 0) {
            model_check(&m, &img);
        }
    }
    model_check(&m, &img);
    model_free(&m);
    image_close(&img);
    g_rand_free(rng);
}

static void test_model(void)
{
    co_run_sync(model_entry, NULL);
}

/* --- compressed bytes: edge cases --- */

/* Data that does not fit crosses into the next cluster, which is free. */
static void coroutine_fn span_entry(void *opaque)
{
    Image img;
    int64_t a, b;

    image_open(&img, 0);
    a = alloc_bytes(&img, 3000);
    g_assert_cmpint(a % CLUSTER, ==, 0);
    b = alloc_bytes(&img, 3000);
    g_assert_cmpint(b, ==, a + 3000);
    g_assert_cmpuint(refcount_of(&img, a), ==, 2);
    g_assert_cmpuint(refcount_of(&img, a + CLUSTER), ==, 1);
    /* The next bytes follow, in the second cluster. */
    g_assert_cmpint(alloc_bytes(&img, 100), ==, b + 3000);
    g_assert_cmpuint(refcount_of(&img, a + CLUSTER), ==, 2);
    image_close(&img);
}

static void test_span(void)
{
    co_run_sync(span_entry, NULL);
}

/* The next cluster is taken: the data starts a new cluster. */
static void coroutine_fn next_taken_entry(void *opaque)
{
    Image img;
    int64_t a, other, b;

    image_open(&img, 0);
    a = alloc_bytes(&img, 3000);
    other = alloc_cluster(&img);
    g_assert_cmpint(other, ==, a + CLUSTER);
    b = alloc_bytes(&img, 3000);
    g_assert_cmpint(b % CLUSTER, ==, 0);
    g_assert_cmpint(b, >, other);
    g_assert_cmpuint(refcount_of(&img, a), ==, 1);
    g_assert_cmpuint(refcount_of(&img, other), ==, 1);
    g_assert_cmpuint(refcount_of(&img, b), ==, 1);
    image_close(&img);
}

static void test_next_taken(void)
{
    co_run_sync(next_taken_entry, NULL);
}

/* A cluster filled exactly is done with: the next data starts afresh. */
static void coroutine_fn exact_fill_entry(void *opaque)
{
    Image img;
    int64_t a;

    image_open(&img, 0);
    a = alloc_bytes(&img, 1000);
    g_assert_cmpint(alloc_bytes(&img, CLUSTER - 1000), ==, a + 1000);
    g_assert_cmpint(img.s->free_byte_offset, ==, 0);
    g_assert_cmpuint(refcount_of(&img, a), ==, 2);
    /* A whole cluster in a fresh one, which must not count the old. */
    g_assert_cmpint(alloc_bytes(&img, CLUSTER), ==, a + CLUSTER);
    g_assert_cmpuint(refcount_of(&img, a), ==, 2);
    g_assert_cmpuint(refcount_of(&img, a + CLUSTER), ==, 1);
    image_close(&img);
}

static void test_exact_fill(void)
{
    co_run_sync(exact_fill_entry, NULL);
}

/* 1-bit refcounts: a cluster holds the data of one compressed cluster. */
static void coroutine_fn refcount_max_entry(void *opaque)
{
    Image img;
    int64_t a, b;

    image_open(&img, 1);
    a = alloc_bytes(&img, 100);
    b = alloc_bytes(&img, 100);
    g_assert_cmpint(b, ==, a + CLUSTER);
    g_assert_cmpuint(refcount_of(&img, a), ==, 1);
    g_assert_cmpuint(refcount_of(&img, b), ==, 1);
    image_close(&img);
}

static void test_refcount_max(void)
{
    co_run_sync(refcount_max_entry, NULL);
}

/*
 * The cluster being filled is freed and handed to other data: no more
 * compressed bytes may go there.
 */
static void coroutine_fn freed_entry(void *opaque)
{
    Image img;
    int64_t a, b;

    image_open(&img, 0);
    a = alloc_bytes(&img, 100);
    g_assert_cmpint(qcow2_free_clusters(img.bs, a, 100, false), ==, 0);
    g_assert_cmpint(alloc_cluster(&img), ==, a);
    b = alloc_bytes(&img, 100);
    g_assert_true(b >= a + CLUSTER);
    g_assert_cmpuint(refcount_of(&img, a), ==, 1);
    image_close(&img);
}

static void test_freed(void)
{
    co_run_sync(freed_entry, NULL);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/qcow2/alloc-clusters/scan-start", test_scan_start);
    g_test_add_func("/qcow2/alloc-bytes/model", test_model);
    g_test_add_func("/qcow2/alloc-bytes/span", test_span);
    g_test_add_func("/qcow2/alloc-bytes/next-taken", test_next_taken);
    g_test_add_func("/qcow2/alloc-bytes/exact-fill", test_exact_fill);
    g_test_add_func("/qcow2/alloc-bytes/refcount-max", test_refcount_max);
    g_test_add_func("/qcow2/alloc-bytes/freed", test_freed);
    return g_test_run();
}
