/*
 * Unit tests for I/O vectors (util/iov.c).
 *
 * The model is a flat byte array: a vector over separate pieces of
 * memory must read and write exactly like the array of its bytes in
 * order, through every window (slices, copies, memset) at every element
 * boundary and in between.
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/iov.h"

/* Odd lengths, so that windows start and end everywhere. */
static const size_t piece_lens[] = { 1, 3, 7, 16, 5 };

typedef struct Pieces {
    uint8_t *mem[G_N_ELEMENTS(piece_lens)];
    IOVector v;
} Pieces;

/*
 * A vector over separately allocated pieces (never contiguous, so they
 * stay separate elements), holding bytes 1, 2, 3, ... in order.
 */
static void pieces_init(Pieces *p)
{
    uint8_t next = 1;

    iovector_init(&p->v);
    for (size_t i = 0; i < G_N_ELEMENTS(piece_lens); i++) {
        p->mem[i] = g_malloc(piece_lens[i]);
        for (size_t j = 0; j < piece_lens[i]; j++) {
            p->mem[i][j] = next++;
        }
        iovector_add(&p->v, p->mem[i], piece_lens[i]);
    }
}

static void pieces_destroy(Pieces *p)
{
    iovector_destroy(&p->v);
    for (size_t i = 0; i < G_N_ELEMENTS(piece_lens); i++) {
        g_free(p->mem[i]);
    }
}

/* The model: the vector's bytes as one array. */
static GByteArray *flatten(const IOVector *v)
{
    GByteArray *a = g_byte_array_new();

    for (int i = 0; i < v->niov; i++) {
        g_byte_array_append(a, v->iov[i].iov_base, v->iov[i].iov_len);
    }
    g_assert_cmpuint(a->len, ==, v->size);
    return a;
}

static void test_init_buf(void)
{
    char buf[10];
    IOVector v;

    iovector_init_buf(&v, buf, sizeof(buf));
    g_assert(v.iov == &v.local);
    g_assert_cmpint(v.niov, ==, 1);
    g_assert_cmpint(v.nalloc, ==, 0);
    g_assert_cmpuint(v.size, ==, sizeof(buf));
    g_assert(v.iov[0].iov_base == buf);
    iovector_destroy(&v);

    iovector_init_buf(&v, buf, 0);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_cmpuint(v.size, ==, 0);
    iovector_destroy(&v);
}

static void test_add_merge(void)
{
    char buf[32], other[8];
    IOVector v;

    iovector_init(&v);
    iovector_add(&v, buf, 4);
    g_assert(v.iov == &v.local);
    iovector_add(&v, buf + 4, 6);           /* continues: merged */
    iovector_add(&v, other, 0);             /* empty: ignored */
    g_assert_cmpint(v.niov, ==, 1);
    g_assert_cmpint(v.nalloc, ==, 0);
    iovector_add(&v, other, 8);             /* elsewhere: second element */
    iovector_add(&v, buf + 20, 2);
    g_assert_cmpint(v.niov, ==, 3);
    g_assert_cmpint(v.nalloc, >=, 3);
    g_assert_cmpuint(v.size, ==, 20);
    g_assert(v.iov[0].iov_base == buf && v.iov[0].iov_len == 10);
    g_assert(v.iov[1].iov_base == other && v.iov[1].iov_len == 8);
    g_assert(v.iov[2].iov_base == buf + 20 && v.iov[2].iov_len == 2);

    /* Grows past the first allocation. */
    for (int i = 0; i < 10; i++) {
        iovector_add(&v, i % 2 ? other : buf, 1);
    }
    g_assert_cmpint(v.niov, ==, 13);
    g_assert_cmpuint(v.size, ==, 30);
    iovector_destroy(&v);
    g_assert_cmpint(v.niov, ==, 0);
    g_assert_cmpuint(v.size, ==, 0);
}

/* Every window: the slice reads as the model and shares its memory. */
static void test_slice_all_windows(void)
{
    Pieces p;
    g_autoptr(GByteArray) model = NULL;

    pieces_init(&p);
    model = flatten(&p.v);
    for (size_t off = 0; off <= p.v.size; off++) {
        for (size_t len = 0; off + len <= p.v.size; len++) {
            g_autoptr(GByteArray) got = NULL;
            IOVector s;

            iovector_init_slice(&s, &p.v, off, len);
            got = flatten(&s);
            g_assert_cmpuint(got->len, ==, len);
            g_assert(len == 0 ||
                     memcmp(got->data, model->data + off, len) == 0);
            /* Never more elements than the window touches. */
            g_assert_cmpint(s.niov, <=, p.v.niov);
            if (s.niov <= 1) {
                g_assert_cmpint(s.nalloc, ==, 0);
            }
            /* Writing through the slice writes the original. */
            if (len) {
                uint8_t *orig;

                iovector_memset(&s, len - 1, 0xee, 1);
                orig = s.iov[s.niov - 1].iov_base;
                g_assert_cmpint(orig[s.iov[s.niov - 1].iov_len - 1], ==,
                                0xee);
                iovector_memset(&s, len - 1, model->data[off + len - 1], 1);
            }
            iovector_destroy(&s);
        }
    }
    pieces_destroy(&p);
}

/* A window of everything is the vector itself; any other, a slice. */
static void test_window(void)
{
    Pieces p;
    g_autoptr(GByteArray) model = NULL;

    pieces_init(&p);
    model = flatten(&p.v);
    for (size_t off = 0; off <= p.v.size; off++) {
        for (size_t len = 0; off + len <= p.v.size; len++) {
            g_autoptr(GByteArray) got = NULL;
            IOVector slice;
            IOVector *w = iovector_window(&p.v, off, len, &slice);

            g_assert(off == 0 && len == p.v.size ? w == &p.v : w == &slice);
            g_assert_cmpuint(w->size, ==, len);
            got = flatten(w);
            g_assert(len == 0 ||
                     memcmp(got->data, model->data + off, len) == 0);
            iovector_destroy(&slice);
        }
    }
    pieces_destroy(&p);
}

static void test_slice_of_slice(void)
{
    Pieces p;
    g_autoptr(GByteArray) model = NULL;
    g_autoptr(GByteArray) got = NULL;
    IOVector outer, inner;

    pieces_init(&p);
    model = flatten(&p.v);
    iovector_init_slice(&outer, &p.v, 2, 25);
    iovector_init_slice(&inner, &outer, 3, 15);
    got = flatten(&inner);
    g_assert(memcmp(got->data, model->data + 5, 15) == 0);
    iovector_destroy(&inner);
    iovector_destroy(&outer);
    pieces_destroy(&p);
}

/* [bounce][middle of another vector][bounce], as io.c builds it. */
static void test_add_slice_between(void)
{
    Pieces p;
    char head[4] = "HHHH", tail[2] = "TT";
    g_autoptr(GByteArray) model = NULL;
    g_autoptr(GByteArray) got = NULL;
    IOVector v;

    pieces_init(&p);
    model = flatten(&p.v);
    iovector_init(&v);
    iovector_add(&v, head, sizeof(head));
    iovector_add_slice(&v, &p.v, 3, 20);
    iovector_add(&v, tail, sizeof(tail));
    g_assert_cmpuint(v.size, ==, 26);
    got = flatten(&v);
    g_assert(memcmp(got->data, head, 4) == 0);
    g_assert(memcmp(got->data + 4, model->data + 3, 20) == 0);
    g_assert(memcmp(got->data + 24, tail, 2) == 0);
    iovector_destroy(&v);
    pieces_destroy(&p);
}

/* to_buf and from_buf over every window are inverse and match the model. */
static void test_copy_round_trip(void)
{
    Pieces p;
    g_autoptr(GByteArray) model = NULL;

    pieces_init(&p);
    model = flatten(&p.v);
    for (size_t off = 0; off <= p.v.size; off++) {
        for (size_t len = 0; off + len <= p.v.size; len++) {
            g_autofree uint8_t *buf = g_malloc(len + 1);
            g_autofree uint8_t *inv = g_malloc(len + 1);
            g_autoptr(GByteArray) now = NULL;

            iovector_to_buf(&p.v, off, buf, len);
            g_assert(memcmp(buf, model->data + off, len) == 0);

            for (size_t i = 0; i < len; i++) {
                inv[i] = ~buf[i];
            }
            iovector_from_buf(&p.v, off, inv, len);
            now = flatten(&p.v);
            for (size_t i = 0; i < p.v.size; i++) {
                bool inside = i >= off && i < off + len;

                g_assert_cmpint(now->data[i], ==,
                                inside ? (uint8_t)~model->data[i]
                                       : model->data[i]);
            }
            iovector_from_buf(&p.v, off, buf, len);
        }
    }
    pieces_destroy(&p);
}

static void test_memset(void)
{
    Pieces p;
    g_autoptr(GByteArray) model = NULL;
    g_autoptr(GByteArray) now = NULL;

    pieces_init(&p);
    model = flatten(&p.v);
    iovector_memset(&p.v, 2, 0, 20);
    now = flatten(&p.v);
    for (size_t i = 0; i < p.v.size; i++) {
        g_assert_cmpint(now->data[i], ==,
                        i >= 2 && i < 22 ? 0 : model->data[i]);
    }
    pieces_destroy(&p);
}

/* All zero, then one non-zero byte at every position in turn. */
static void test_is_zero(void)
{
    Pieces p;
    IOVector empty;

    iovector_init(&empty);
    g_assert(iovector_is_zero(&empty));

    pieces_init(&p);
    g_assert(!iovector_is_zero(&p.v));
    iovector_memset(&p.v, 0, 0, p.v.size);
    g_assert(iovector_is_zero(&p.v));
    for (size_t i = 0; i < p.v.size; i++) {
        IOVector s;

        iovector_memset(&p.v, i, 0x01, 1);
        g_assert(!iovector_is_zero(&p.v));
        /* The windows left and right of the byte are still zero. */
        iovector_init_slice(&s, &p.v, 0, i);
        g_assert(iovector_is_zero(&s));
        iovector_destroy(&s);
        iovector_init_slice(&s, &p.v, i + 1, p.v.size - i - 1);
        g_assert(iovector_is_zero(&s));
        iovector_destroy(&s);
        iovector_memset(&p.v, i, 0, 1);
    }
    g_assert(iovector_is_zero(&p.v));
    pieces_destroy(&p);
}

static void test_is_aligned(void)
{
    g_autofree uint8_t *mem = g_malloc(8192 + 512);
    uint8_t *base = (uint8_t *)ALIGN_UP((uintptr_t)mem, 512);
    IOVector v;

    iovector_init(&v);
    iovector_add(&v, base, 512);
    iovector_add(&v, base + 2048, 1024);
    g_assert(iovector_is_aligned(&v, 512, 512));
    g_assert(iovector_is_aligned(&v, 1, 1));
    iovector_add(&v, base + 4097, 512);     /* base not aligned */
    g_assert(!iovector_is_aligned(&v, 512, 512));
    g_assert(iovector_is_aligned(&v, 1, 512));
    iovector_destroy(&v);

    iovector_init(&v);
    iovector_add(&v, base, 512);
    iovector_add(&v, base + 2048, 100);     /* length not aligned */
    g_assert(!iovector_is_aligned(&v, 512, 512));
    g_assert(iovector_is_aligned(&v, 512, 4));
    iovector_destroy(&v);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/iov/init/buf", test_init_buf);
    g_test_add_func("/iov/add/merge", test_add_merge);
    g_test_add_func("/iov/slice/all-windows", test_slice_all_windows);
    g_test_add_func("/iov/slice/of-slice", test_slice_of_slice);
    g_test_add_func("/iov/slice/window", test_window);
    g_test_add_func("/iov/slice/between-bounces", test_add_slice_between);
    g_test_add_func("/iov/copy/round-trip", test_copy_round_trip);
    g_test_add_func("/iov/memset", test_memset);
    g_test_add_func("/iov/is-zero", test_is_zero);
    g_test_add_func("/iov/is-aligned", test_is_aligned);
    return g_test_run();
}
