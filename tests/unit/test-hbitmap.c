/*
 * Unit tests for the hierarchical bitmap (util/hbitmap.c).
 *
 * A naive model -- one bool per granule, each operation written straight
 * from the contract in include/util/hbitmap.h -- runs beside the real
 * bitmap through seeded random sequences of changes, and after every
 * change each query must agree: get for every granule, count, the
 * searches from many offsets, the dirty areas, the serialized bytes and
 * the digest.  The sizes put granule counts around the level boundaries
 * (64 and 4096 granules) and the sizes off multiples of the granularity.
 *
 * The digest's expected value is built here from the model as the
 * header specifies it (little-endian 64-bit words), and a few literal
 * digests pin the layout down.
 *
 * -m perf adds /hbitmap/perf/1tib, which times a 1 TiB bitmap at 64 KiB
 * granularity (not run by default).
 */
#undef NDEBUG
#include "util/osdep.h"
#include "util/hbitmap.h"

#define KiB 1024ULL
#define MiB (1024 * KiB)
#define GiB (1024 * MiB)
#define TiB (1024 * GiB)

/* --- The model --- */

typedef struct Model {
    uint64_t size;
    uint64_t granularity;
    uint64_t granules;
    bool *dirty;
} Model;

static void model_init(Model *m, uint64_t size, uint64_t granularity)
{
    m->size = size;
    m->granularity = granularity;
    m->granules = MAX(DIV_ROUND_UP(size, granularity), 1);
    m->dirty = g_new0(bool, m->granules);
}

static void model_destroy(Model *m)
{
    g_free(m->dirty);
}

/* The bytes of granule @i, clipped to the size: [start, end). */
static uint64_t granule_start(const Model *m, uint64_t i)
{
    return i * m->granularity;
}

static uint64_t granule_end(const Model *m, uint64_t i)
{
    return MIN((i + 1) * m->granularity, m->size);
}

/* The end of [@offset, @offset + @bytes) clipped to the size. */
static uint64_t clipped_end(const Model *m, uint64_t offset, uint64_t bytes)
{
    if (offset >= m->size) {
        return offset;
    }
    return bytes > m->size - offset ? m->size : offset + bytes;
}

static bool overlaps(const Model *m, uint64_t i, uint64_t start, uint64_t end)
{
    return start < end &&
           granule_start(m, i) < end && granule_end(m, i) > start;
}

/*
 * The loops below visit only the granules from the one holding @offset
 * to the end of the range to keep the tests fast; the condition in the
 * loop body alone decides.
 */
static uint64_t first_granule(const Model *m, uint64_t offset)
{
    return MIN(offset / m->granularity, m->granules);
}

static void model_set(Model *m, uint64_t offset, uint64_t bytes)
{
    uint64_t end = clipped_end(m, offset, bytes);

    for (uint64_t i = first_granule(m, offset);
         i < m->granules && granule_start(m, i) < end; i++) {
        if (overlaps(m, i, offset, end)) {
            m->dirty[i] = true;
        }
    }
}

/* A granule is cleared when its bytes (clipped to the size) are covered. */
static void model_reset(Model *m, uint64_t offset, uint64_t bytes)
{
    uint64_t end = clipped_end(m, offset, bytes);

    if (offset >= m->size) {
        return;
    }
    for (uint64_t i = first_granule(m, offset);
         i < m->granules && granule_start(m, i) < end; i++) {
        if (granule_start(m, i) >= offset && granule_end(m, i) <= end) {
            m->dirty[i] = false;
        }
    }
}

static uint64_t model_dirty_granules(const Model *m)
{
    uint64_t n = 0;

    for (uint64_t i = 0; i < m->granules; i++) {
        n += m->dirty[i];
    }
    return n;
}

static int64_t model_next(const Model *m, uint64_t offset, uint64_t bytes,
                          bool dirty)
{
    uint64_t end = clipped_end(m, offset, bytes);

    for (uint64_t i = first_granule(m, offset);
         i < m->granules && granule_start(m, i) < end; i++) {
        if (overlaps(m, i, offset, end) && m->dirty[i] == dirty) {
            return MAX(granule_start(m, i), offset);
        }
    }
    return -1;
}

static bool model_next_dirty_area(const Model *m, uint64_t offset,
                                  uint64_t end, uint64_t max_bytes,
                                  uint64_t *area_start, uint64_t *area_bytes)
{
    int64_t start;
    uint64_t limit, pos;

    end = MIN(end, m->size);
    if (offset >= end) {
        return false;
    }
    start = model_next(m, offset, end - offset, true);
    if (start < 0) {
        return false;
    }
    limit = start + MIN(max_bytes, end - start);
    pos = start;
    while (pos < limit && m->dirty[pos / m->granularity]) {
        pos = granule_end(m, pos / m->granularity);
    }
    *area_start = start;
    *area_bytes = MIN(pos, limit) - start;
    return true;
}

/* Every granule of @dst that overlaps a dirty granule of @src. */
static void model_merge(Model *dst, const Model *src)
{
    g_assert_cmpuint(dst->size, ==, src->size);
    for (uint64_t j = 0; j < src->granules; j++) {
        if (src->dirty[j]) {
            model_set(dst, granule_start(src, j),
                      granule_end(src, j) - granule_start(src, j));
        }
    }
}

static void model_truncate(Model *m, uint64_t size)
{
    Model old = *m;

    model_init(m, size, old.granularity);
    memcpy(m->dirty, old.dirty, MIN(old.granules, m->granules));
    model_destroy(&old);
}

static uint64_t model_serialized_bytes(const Model *m)
{
    return DIV_ROUND_UP(m->granules, 8);
}

/* The array of bit i = granule i, least significant bit first. */
static uint8_t *model_serialize(const Model *m, uint64_t bytes)
{
    uint8_t *buf = g_malloc0(bytes);

    for (uint64_t i = 0; i < m->granules; i++) {
        if (m->dirty[i]) {
            buf[i / 8] |= 1 << (i % 8);
        }
    }
    return buf;
}

static void model_deserialize(Model *m, const uint8_t *buf, uint64_t start,
                              uint64_t len)
{
    for (uint64_t byte = start; byte < start + len; byte++) {
        for (unsigned bit = 0; bit < 8; bit++) {
            uint64_t i = byte * 8 + bit;

            if (i < m->granules) {
                m->dirty[i] = (buf[byte - start] >> bit) & 1;
            }
        }
    }
}

/*
 * The digest as the header specifies it: the bits as little-endian
 * 64-bit words, DIV_ROUND_UP(granules, 64) of them.  Bit i is bit i % 64
 * of word i / 64, which little-endian puts in byte i / 8 at bit i % 8: the
 * serialized array, padded with zeros to whole words.
 */
static char *model_sha256(const Model *m)
{
    uint64_t bytes = DIV_ROUND_UP(m->granules, 64) * 8;
    g_autofree uint8_t *words = model_serialize(m, bytes);

    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, words, bytes);
}

/* --- A bitmap and its model, always changed together --- */

typedef struct Pair {
    HBitmap *hb;
    Model m;
} Pair;

static void pair_init(Pair *p, uint64_t size, uint64_t granularity)
{
    p->hb = hbitmap_new(size, granularity);
    model_init(&p->m, size, granularity);
}

static void pair_destroy(Pair *p)
{
    hbitmap_free(p->hb);
    model_destroy(&p->m);
}

static void pair_set(Pair *p, uint64_t offset, uint64_t bytes)
{
    hbitmap_set(p->hb, offset, bytes);
    model_set(&p->m, offset, bytes);
}

static void pair_reset(Pair *p, uint64_t offset, uint64_t bytes)
{
    hbitmap_reset(p->hb, offset, bytes);
    model_reset(&p->m, offset, bytes);
}

/* --- Random choices that favour the edges --- */

static uint64_t rand_below(GRand *r, uint64_t n)
{
    uint64_t v = (uint64_t)g_rand_int(r) << 32 | g_rand_int(r);

    return n ? v % n : 0;
}

/* @v moved by -1, 0 or +1, not below 0. */
static uint64_t jitter(GRand *r, uint64_t v)
{
    int d = g_rand_int_range(r, -1, 2);

    return d < 0 && v == 0 ? 0 : v + d;
}

/* Offsets at the ends, at granule, word and summary-word boundaries. */
static uint64_t pick_offset(GRand *r, const Model *m)
{
    uint64_t g = m->granularity;

    switch (g_rand_int_range(r, 0, 6)) {
    case 0:
        return jitter(r, 0);
    case 1:
        return jitter(r, m->size);
    case 2:
        return jitter(r, rand_below(r, m->granules + 1) * g);
    case 3:
        return jitter(r, rand_below(r, m->granules / 64 + 2) * 64 * g);
    case 4:
        return jitter(r, rand_below(r, m->granules / 4096 + 2) * 4096 * g);
    default:
        return rand_below(r, m->size + 2 * g);
    }
}

static uint64_t pick_length(GRand *r, const Model *m)
{
    uint64_t g = m->granularity;

    switch (g_rand_int_range(r, 0, 7)) {
    case 0:
        return g_rand_int_range(r, 0, 3);
    case 1:
        return jitter(r, g);
    case 2:
        return rand_below(r, 4 * g) + 1;
    case 3:
        return jitter(r, rand_below(r, 140) * g);
    case 4:
        return UINT64_MAX - g_rand_int_range(r, 0, 2);
    case 5:
        return jitter(r, m->size);
    default:
        return rand_below(r, m->size + 1);
    }
}

/* A short write: what guests mostly do, and it keeps bitmaps sparse. */
static uint64_t pick_write_length(GRand *r, const Model *m)
{
    return g_rand_int_range(r, 0, 8) ? rand_below(r, 3 * m->granularity) + 1
                                     : pick_length(r, m);
}

static uint64_t pick_max_bytes(GRand *r, const Model *m)
{
    uint64_t bytes = pick_length(r, m);

    return MAX(bytes, 1);
}

/* --- Comparing a bitmap with its model --- */

static void check_searches(const Pair *p, GRand *r)
{
    for (int i = 0; i < 24; i++) {
        uint64_t offset = pick_offset(r, &p->m);
        uint64_t bytes = pick_length(r, &p->m);

        g_assert_cmpint(hbitmap_next_dirty(p->hb, offset, bytes), ==,
                        model_next(&p->m, offset, bytes, true));
        g_assert_cmpint(hbitmap_next_clean(p->hb, offset, bytes), ==,
                        model_next(&p->m, offset, bytes, false));
    }
}

static void check_dirty_area(const Pair *p, uint64_t offset, uint64_t end,
                             uint64_t max_bytes)
{
    uint64_t start = 42, bytes = 42, model_start = 42, model_bytes = 42;
    bool found = hbitmap_next_dirty_area(p->hb, offset, end, max_bytes,
                                         &start, &bytes);

    g_assert_cmpint(found, ==,
                    model_next_dirty_area(&p->m, offset, end, max_bytes,
                                          &model_start, &model_bytes));
    if (found) {
        g_assert_cmpuint(start, ==, model_start);
        g_assert_cmpuint(bytes, ==, model_bytes);
    }
}

/*
 * Every area from 0, as a caller iterates (cut at no less than half a
 * granule, to bound the steps), then random single ones.
 */
static void check_dirty_areas(const Pair *p, GRand *r)
{
    uint64_t g = p->m.granularity;
    uint64_t max_bytes = g_rand_boolean(r) ? UINT64_MAX
                                           : g / 2 + rand_below(r, 8 * g);
    uint64_t offset = 0, start, bytes, model_start, model_bytes;

    while (model_next_dirty_area(&p->m, offset, p->m.size, max_bytes,
                                 &model_start, &model_bytes)) {
        g_assert_true(hbitmap_next_dirty_area(p->hb, offset, p->m.size,
                                              max_bytes, &start, &bytes));
        g_assert_cmpuint(start, ==, model_start);
        g_assert_cmpuint(bytes, ==, model_bytes);
        offset = start + bytes;
    }
    g_assert_false(hbitmap_next_dirty_area(p->hb, offset, p->m.size,
                                           max_bytes, &start, &bytes));

    for (int i = 0; i < 8; i++) {
        uint64_t from = pick_offset(r, &p->m);

        check_dirty_area(p, from, from + pick_length(r, &p->m) / 2,
                         pick_max_bytes(r, &p->m));
    }
}

/* Serialize in random chunks, compare, and load into a fresh bitmap. */
static void check_serialization(const Pair *p, GRand *r)
{
    uint64_t total = model_serialized_bytes(&p->m);
    g_autofree uint8_t *expected = model_serialize(&p->m, total);
    g_autofree uint8_t *buf = g_malloc(total);
    g_autoptr(HBitmap) loaded = hbitmap_new(p->m.size, p->m.granularity);
    g_autofree char *loaded_sha = NULL;
    g_autofree char *sha = hbitmap_sha256(p->hb);
    uint64_t chunk = g_rand_boolean(r) ? total : rand_below(r, 20) + 1;

    g_assert_cmpuint(hbitmap_serialized_bytes(p->hb), ==, total);
    memset(buf, 0xa5, total);
    for (uint64_t start = 0; start < total; start += chunk) {
        uint64_t len = MIN(chunk, total - start);

        hbitmap_serialize_part(p->hb, buf + start, start, len);
        hbitmap_deserialize_part(loaded, buf + start, start, len);
    }
    g_assert_cmpmem(buf, total, expected, total);

    loaded_sha = hbitmap_sha256(loaded);
    g_assert_cmpstr(loaded_sha, ==, sha);
    g_assert_cmpuint(hbitmap_count(loaded), ==, hbitmap_count(p->hb));
}

static void check_pair(const Pair *p, GRand *r)
{
    const Model *m = &p->m;
    g_autofree char *sha = hbitmap_sha256(p->hb);
    g_autofree char *model_sha = model_sha256(m);

    g_assert_cmpuint(hbitmap_size(p->hb), ==, m->size);
    g_assert_cmpuint(hbitmap_granularity(p->hb), ==, m->granularity);
    for (uint64_t i = 0; i < m->granules && granule_start(m, i) < m->size;
         i++) {
        uint64_t inside = granule_start(m, i) +
            rand_below(r, granule_end(m, i) - granule_start(m, i));

        g_assert_cmpint(hbitmap_get(p->hb, granule_start(m, i)), ==,
                        m->dirty[i]);
        g_assert_cmpint(hbitmap_get(p->hb, inside), ==, m->dirty[i]);
    }
    g_assert_cmpuint(hbitmap_count(p->hb), ==,
                     model_dirty_granules(m) * m->granularity);
    g_assert_cmpint(hbitmap_is_empty(p->hb), ==,
                    model_dirty_granules(m) == 0);
    g_assert_cmpstr(sha, ==, model_sha);
    check_searches(p, r);
    check_dirty_areas(p, r);
    check_serialization(p, r);
}

/* --- Random sequences --- */

typedef struct ModelCase {
    const char *name;
    uint64_t size;
    uint64_t granularity;
    int steps;
} ModelCase;

/* A granularity 2, 4 or 8 times coarser or finer, within [512, 2^31]. */
static uint64_t other_granularity(GRand *r, uint64_t g)
{
    int shift = g_rand_int_range(r, 1, 4);
    bool finer = g_rand_boolean(r);

    if (finer && g >> shift < 512) {
        finer = false;
    } else if (!finer && g << shift > 2 * GiB) {
        finer = true;
    }
    return finer ? g >> shift : g << shift;
}

static void merge_random_source(Pair *p, GRand *r, uint64_t granularity)
{
    Pair src;
    int writes = g_rand_int_range(r, 0, 6);

    pair_init(&src, p->m.size, granularity);
    for (int i = 0; i < writes; i++) {
        pair_set(&src, pick_offset(r, &src.m), pick_write_length(r, &src.m));
    }
    if (g_rand_boolean(r)) {
        pair_reset(&src, pick_offset(r, &src.m), pick_length(r, &src.m));
    }
    hbitmap_merge(p->hb, src.hb);
    model_merge(&p->m, &src.m);
    pair_destroy(&src);
}

/*
 * Mostly back to around the case's own size (its level boundaries), or
 * near the current one; sometimes anywhere up to @limit or tiny.
 */
static void truncate_randomly(Pair *p, GRand *r, uint64_t home,
                              uint64_t limit)
{
    uint64_t g = p->m.granularity;
    uint64_t size;

    int choice = g_rand_int_range(r, 0, 16);

    if (choice == 0) {
        size = g_rand_int_range(r, 0, 2);
    } else if (choice < 4) {
        size = jitter(r, p->m.size);
    } else if (choice < 10) {
        size = jitter(r, home);
    } else if (choice < 12) {
        size = jitter(r, rand_below(r, limit / g + 1) * g);
    } else {
        size = rand_below(r, limit + 1);
    }
    hbitmap_truncate(p->hb, size);
    model_truncate(&p->m, size);
}

static void deserialize_randomly(Pair *p, GRand *r)
{
    uint64_t total = model_serialized_bytes(&p->m);
    uint64_t start = rand_below(r, total + 1);
    uint64_t len = rand_below(r, MIN(total - start, 40) + 1);
    g_autofree uint8_t *buf = g_malloc(len);
    int fill = g_rand_int_range(r, 0, 4);

    for (uint64_t i = 0; i < len; i++) {
        buf[i] = fill == 0 ? 0 : fill == 1 ? 0xff : g_rand_int(r);
    }
    hbitmap_deserialize_part(p->hb, buf, start, len);
    model_deserialize(&p->m, buf, start, len);
}

static void random_step(Pair *p, GRand *r, uint64_t home, uint64_t limit)
{
    int op = g_rand_int_range(r, 0, 100);

    if (op < 35) {
        pair_set(p, pick_offset(r, &p->m), pick_write_length(r, &p->m));
    } else if (op < 60) {
        pair_reset(p, pick_offset(r, &p->m), pick_length(r, &p->m));
    } else if (op < 62) {
        hbitmap_reset_all(p->hb);
        memset(p->m.dirty, 0, p->m.granules);
    } else if (op < 70) {
        merge_random_source(p, r, p->m.granularity);
    } else if (op < 80) {
        merge_random_source(p, r, other_granularity(r, p->m.granularity));
    } else if (op < 82) {
        hbitmap_merge(p->hb, p->hb);
    } else if (op < 84) {
        HBitmap *copy = hbitmap_copy(p->hb);

        hbitmap_free(p->hb);
        p->hb = copy;
    } else if (op < 92) {
        truncate_randomly(p, r, home, limit);
    } else {
        deserialize_randomly(p, r);
    }
}

static void test_model(gconstpointer opaque)
{
    const ModelCase *c = opaque;
    g_autoptr(GRand) r = g_rand_new_with_seed(0x5eed + c->size);
    uint64_t size_limit = MAX(2 * c->size, 140 * c->granularity);
    Pair p;

    pair_init(&p, c->size, c->granularity);
    check_pair(&p, r);
    for (int step = 0; step < c->steps; step++) {
        random_step(&p, r, c->size, size_limit);
        check_pair(&p, r);
    }
    pair_destroy(&p);
}

static const ModelCase model_cases[] = {
    { "empty", 0, 512, 300 },
    { "one-byte", 1, 512, 300 },
    { "half-granule", 300, 64 * KiB, 300 },
    { "63-granules-and-a-bit", 63 * 4096 + 1, 4096, 300 },
    { "64-granules", 64 * 512, 512, 300 },
    { "64-granules-less-a-byte", 64 * 512 - 1, 512, 300 },
    { "65-granules", 65 * 64 * KiB, 64 * KiB, 300 },
    { "4095-granules", 4095 * 512 + 17, 512, 200 },
    { "4096-granules", 4096 * 64 * KiB, 64 * KiB, 200 },
    { "4097-granules", 4096 * 1 * MiB + 1, 1 * MiB, 200 },
    { "granularity-2g", 70 * 2 * GiB + 5, 2 * GiB, 300 },
    { "granularity-2g-4097", 4097 * 2 * GiB, 2 * GiB, 200 },
    { "four-levels", 300000 * 512ULL - 3, 512, 60 },
};

/* --- Explicit cases --- */

static HBitmap *all_dirty(uint64_t size, uint64_t granularity)
{
    HBitmap *hb = hbitmap_new(size, granularity);

    hbitmap_set(hb, 0, size);
    return hb;
}

/*
 * Granules 0..9 of 512 bytes; granule 9 holds only [4608, 4700).  A
 * reset clears the granules it covers whole; at the end of the bitmap
 * "whole" means up to the size.
 */
/*
 * hbitmap_next_dirty() from each granule after a dirty one finds the next
 * dirty granule that hbitmap_get() sees.  The search descends through
 * the summary levels, so a summary bit missing for a non-zero word makes
 * it skip that word's granules.
 */
static void assert_searches_see_all(const HBitmap *hb)
{
    uint64_t size = hbitmap_size(hb);
    uint64_t start = 0;

    for (;;) {
        uint64_t next = start;

        while (next < size && !hbitmap_get(hb, next)) {
            next++;
        }
        if (next == size) {
            g_assert_cmpint(hbitmap_next_dirty(hb, start, size - start), ==,
                            -1);
            return;
        }
        g_assert_cmpint(hbitmap_next_dirty(hb, start, size - start), ==,
                        next);
        start = next + 1;
    }
}

/*
 * hbitmap_set() stops climbing at the first level it leaves unchanged,
 * and returns at once when the granules are all set.  Each write below
 * lands where a wrong shortcut would stop too early: in a clean word (or
 * summary word) whose word one level up is non-zero for another bit, and
 * next to granules already set.  4 levels: 2 * 64^3 granules of 1 byte.
 */
static void test_set_summaries(void)
{
    const uint64_t w1 = 64, w2 = 64 * 64, w3 = 64 * 64 * 64;
    const uint64_t writes[][2] = {      /* offset, bytes */
        { 0, 1 },
        { 5 * w1 + 3, 1 },              /* clean word, summary word set */
        { 3 * w2 + 7, 1 },              /* clean summary word, level 2 set */
        { w3 + 1, 1 },                  /* clean level 2 word, top set */
        { 10 * w1, w1 },                /* a whole word ... */
        { 10 * w1, 2 * w1 + 6 },        /* ... then on into clean ones */
        { 3 * w2 + 8, 1 },              /* set word, another bit */
        { 3 * w2 + 8, 1 },              /* all set: changes nothing */
    };
    g_autoptr(HBitmap) hb = hbitmap_new(2 * w3, 1);
    uint64_t count = 0;

    for (size_t i = 0; i < G_N_ELEMENTS(writes); i++) {
        uint64_t offset = writes[i][0], bytes = writes[i][1];

        for (uint64_t g = offset; g < offset + bytes; g++) {
            count += !hbitmap_get(hb, g);
        }
        hbitmap_set(hb, offset, bytes);
        g_assert_cmpuint(hbitmap_count(hb), ==, count);
        for (uint64_t g = offset; g < offset + bytes; g++) {
            g_assert_true(hbitmap_get(hb, g));
        }
        assert_searches_see_all(hb);
    }
}

/*
 * hbitmap_set_many() works the range out once per run of bitmaps of one
 * size and granularity: with the runs broken in every way, each bitmap
 * must end up as hbitmap_set() alone makes its twin.
 */
static void test_set_many(void)
{
    static const struct {
        uint64_t size;
        uint32_t granularity;
    } shapes[] = {
        { 1 << 20, 512 }, { 1 << 20, 512 }, { 1 << 20, 4096 },
        { 1 << 20, 512 }, { 300000, 512 }, { 0, 512 }, { 1 << 20, 65536 },
    };
    enum { N = G_N_ELEMENTS(shapes) };
    g_autoptr(GRand) r = g_rand_new_with_seed(3);
    HBitmap *many[N], *twins[N];

    for (int i = 0; i < N; i++) {
        many[i] = hbitmap_new(shapes[i].size, shapes[i].granularity);
        twins[i] = hbitmap_new(shapes[i].size, shapes[i].granularity);
    }
    for (int w = 0; w < 2000; w++) {
        uint64_t offset = rand_below(r, (1 << 20) + 4096);
        uint64_t bytes = w % 10 ? rand_below(r, 9000) : rand_below(r, 1 << 20);

        hbitmap_set_many(many, N, offset, bytes);
        for (int i = 0; i < N; i++) {
            hbitmap_set(twins[i], offset, bytes);
        }
    }
    for (int i = 0; i < N; i++) {
        g_autofree char *got = hbitmap_sha256(many[i]);
        g_autofree char *want = hbitmap_sha256(twins[i]);

        g_assert_cmpstr(got, ==, want);
        g_assert_cmpuint(hbitmap_count(many[i]), ==, hbitmap_count(twins[i]));
        assert_searches_see_all(many[i]);
        hbitmap_free(many[i]);
        hbitmap_free(twins[i]);
    }
}

static void test_reset_rule(void)
{
    g_autoptr(HBitmap) hb = all_dirty(4700, 512);

    /* [100, 1100) covers granule 1 only. */
    hbitmap_reset(hb, 100, 1000);
    g_assert_true(hbitmap_get(hb, 0));
    g_assert_false(hbitmap_get(hb, 512));
    g_assert_true(hbitmap_get(hb, 1024));
    g_assert_cmpuint(hbitmap_count(hb), ==, 9 * 512);

    /* Inside one granule: nothing. */
    hbitmap_reset(hb, 2048 + 1, 510);
    g_assert_true(hbitmap_get(hb, 2048));

    /* The tail granule, not up to the end: stays dirty. */
    hbitmap_reset(hb, 4608, 91);
    g_assert_true(hbitmap_get(hb, 4608));
    /* Starting inside it, up to the end: stays dirty. */
    hbitmap_reset(hb, 4609, 91);
    g_assert_true(hbitmap_get(hb, 4699));
    /* Exactly its bytes: cleared. */
    hbitmap_reset(hb, 4608, 92);
    g_assert_false(hbitmap_get(hb, 4608));
    g_assert_cmpuint(hbitmap_count(hb), ==, 8 * 512);

    /* Past the end counts as reaching it: granules 8 and 9. */
    hbitmap_set(hb, 4608, 1);
    hbitmap_reset(hb, 4000, UINT64_MAX);
    g_assert_true(hbitmap_get(hb, 3584));
    g_assert_false(hbitmap_get(hb, 4096));
    g_assert_false(hbitmap_get(hb, 4699));
    g_assert_cmpint(hbitmap_next_dirty(hb, 3584, UINT64_MAX), ==, 3584);
    g_assert_cmpint(hbitmap_next_dirty(hb, 3585, UINT64_MAX), ==, 3585);
    g_assert_cmpint(hbitmap_next_dirty(hb, 4096, UINT64_MAX), ==, -1);

    /* A whole-bitmap reset. */
    hbitmap_reset(hb, 0, 4700);
    g_assert_true(hbitmap_is_empty(hb));
}

static void test_count_whole_granules(void)
{
    g_autoptr(HBitmap) hb = hbitmap_new(1000, 512);

    hbitmap_set(hb, 999, 1);
    g_assert_cmpuint(hbitmap_count(hb), ==, 512);
    hbitmap_set(hb, 0, 1);
    g_assert_cmpuint(hbitmap_count(hb), ==, 1024);
}

static void test_truncate_shrink_tiny(void)
{
    g_autoptr(HBitmap) hb = all_dirty(1 * MiB + 7, 4096);
    g_autoptr(HBitmap) expected = hbitmap_new(1 * MiB + 7, 4096);
    g_autofree char *sha = NULL;
    g_autofree char *expected_sha = NULL;
    uint8_t byte;

    hbitmap_truncate(hb, 1);
    g_assert_cmpuint(hbitmap_count(hb), ==, 4096);
    g_assert_cmpuint(hbitmap_serialized_bytes(hb), ==, 1);
    hbitmap_serialize_part(hb, &byte, 0, 1);
    g_assert_cmpuint(byte, ==, 1);

    /* Growing back brings clean granules, not the old bits. */
    hbitmap_truncate(hb, 1 * MiB + 7);
    hbitmap_set(expected, 0, 1);
    sha = hbitmap_sha256(hb);
    expected_sha = hbitmap_sha256(expected);
    g_assert_cmpstr(sha, ==, expected_sha);
    g_assert_cmpint(hbitmap_next_dirty(hb, 1, UINT64_MAX), ==, 1);
    g_assert_cmpint(hbitmap_next_dirty(hb, 4096, UINT64_MAX), ==, -1);
}

/* A copy shares nothing: changing either leaves the other alone. */
static void test_copy_independent(void)
{
    g_autoptr(HBitmap) hb = hbitmap_new(300000 * 512ULL, 512);
    g_autoptr(HBitmap) copy = NULL;

    hbitmap_set(hb, 1000 * 512, 512);
    copy = hbitmap_copy(hb);
    hbitmap_set(hb, 200000 * 512, 512);
    hbitmap_reset(copy, 1000 * 512, 512);
    hbitmap_set(copy, 7, 1);

    g_assert_cmpint(hbitmap_next_dirty(hb, 0, UINT64_MAX), ==, 1000 * 512);
    g_assert_cmpint(hbitmap_next_dirty(hb, 1001 * 512, UINT64_MAX), ==,
                    200000 * 512);
    g_assert_cmpuint(hbitmap_count(hb), ==, 2 * 512);
    g_assert_cmpint(hbitmap_next_dirty(copy, 512, UINT64_MAX), ==, -1);
    g_assert_cmpuint(hbitmap_count(copy), ==, 512);
}

/* Bits of @buf past the last granule are ignored, not stored. */
static void test_deserialize_ignores_tail(void)
{
    g_autoptr(HBitmap) hb = hbitmap_new(10 * 512, 512);
    const uint8_t ones[2] = { 0xff, 0xff };
    uint8_t out[2];

    hbitmap_deserialize_part(hb, ones, 0, 2);
    g_assert_cmpuint(hbitmap_count(hb), ==, 10 * 512);
    hbitmap_serialize_part(hb, out, 0, 2);
    g_assert_cmpuint(out[0], ==, 0xff);
    g_assert_cmpuint(out[1], ==, 0x03);
}

/* --- Digests --- */

/* SHA-256 of @n zero bytes, computed independently of hbitmap. */
static char *sha256_of_zeros(size_t n)
{
    g_autofree uint8_t *zeros = g_malloc0(n);

    return g_compute_checksum_for_data(G_CHECKSUM_SHA256, zeros, n);
}

static void assert_sha256(const HBitmap *hb, const char *expected)
{
    g_autofree char *sha = hbitmap_sha256(hb);

    g_assert_cmpstr(sha, ==, expected);
}

/*
 * SHA-256 of 8 zero bytes: one clean word.  qemu-storage-daemon 7.2
 * reports it for a new bitmap on a null-co node of 1 MiB or of 0 bytes.
 */
#define SHA256_ONE_CLEAN_WORD \
    "af5570f5a1810b7af78caf4bc70a660f0df51e42baf91d4de5b2328de0e83dfc"

static void test_sha256_empty(void)
{
    g_autoptr(HBitmap) small = hbitmap_new(1 * MiB, 64 * KiB);
    g_autoptr(HBitmap) nothing = hbitmap_new(0, 64 * KiB);
    g_autoptr(HBitmap) odd = hbitmap_new(65 * 512 - 1, 512);
    g_autoptr(HBitmap) large = hbitmap_new(1 * GiB, 512);
    g_autofree char *two_words = sha256_of_zeros(16);
    g_autofree char *large_words = sha256_of_zeros(1 * GiB / 512 / 8);

    /* 16 granules and no granule at all both hash one word. */
    assert_sha256(small, SHA256_ONE_CLEAN_WORD);
    assert_sha256(nothing, SHA256_ONE_CLEAN_WORD);
    /* 65 granules: two words, though 9 bytes would serialize them. */
    assert_sha256(odd, two_words);
    assert_sha256(odd, "374708fff7719dd5979ec875d56cd228"
                       "6f6d3cf7ec317a3b25632aab28ec37bb");
    assert_sha256(large, large_words);
}

/*
 * Words built by hand: granules 0, 1, 63, 64, 130 and 16383 of 1 GiB at
 * 64 KiB are bits of the words 0x8000000000000003, 0x1, 0x4, 0..., and
 * 0x8000000000000000 in the last of 256 words.  The literal digest is
 * what qemu-storage-daemon 7.2 (x86_64) reports for a bitmap on a null-co
 * node after 512-byte writes at those granules.
 */
static void test_sha256_words(void)
{
    g_autoptr(HBitmap) hb = hbitmap_new(1 * GiB, 64 * KiB);
    static const uint64_t granules[] = { 0, 1, 63, 64, 130, 16383 };
    uint64_t words[256] = { 0 };
    uint8_t le[sizeof(words)];
    g_autofree char *expected = NULL;

    for (size_t i = 0; i < G_N_ELEMENTS(granules); i++) {
        hbitmap_set(hb, granules[i] * 64 * KiB, 1);
    }
    words[0] = 0x8000000000000003ULL;
    words[1] = 0x1;
    words[2] = 0x4;
    words[255] = 0x8000000000000000ULL;
    for (size_t w = 0; w < G_N_ELEMENTS(words); w++) {
        for (int b = 0; b < 8; b++) {
            le[w * 8 + b] = words[w] >> (8 * b);
        }
    }
    expected = g_compute_checksum_for_data(G_CHECKSUM_SHA256, le,
                                           sizeof(le));
    assert_sha256(hb, expected);
    assert_sha256(hb, "e3ff0e267680d248822b74c76cff8c1f"
                      "fb49a0b1fbdd515b3870970ba7dbbd4e");
}

/*
 * 65 dirty granules, the last one partial: the second word holds one
 * bit, and the bits past it are zero.  The literal is again
 * qemu-storage-daemon 7.2's, after a write of the whole node.
 */
static void test_sha256_full_tail(void)
{
    g_autoptr(HBitmap) hb = all_dirty(65 * 512 - 1, 512);
    const uint8_t le[16] = {
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01,
    };
    g_autofree char *expected =
        g_compute_checksum_for_data(G_CHECKSUM_SHA256, le, sizeof(le));

    assert_sha256(hb, expected);
    assert_sha256(hb, "c9cb04ba987a95a535a8ba7d18b3815d"
                      "0f04b47add63f2b18ed0a66f9a6d617a");
}

/* --- Performance (-m perf) --- */

static void perf_report(const char *what)
{
    g_test_message("%-34s %8.3f ms", what, g_test_timer_elapsed() * 1000);
}

/* The offsets of random 4 KiB writes to 1 % of a 1 TiB disk. */
static uint64_t *perf_write_offsets(GRand *r, uint64_t *n)
{
    uint64_t blocks = 1 * TiB / (4 * KiB);
    uint64_t *offsets;

    *n = blocks / 100;
    offsets = g_new(uint64_t, *n);
    for (uint64_t i = 0; i < *n; i++) {
        offsets[i] = rand_below(r, blocks) * 4 * KiB;
    }
    return offsets;
}

static void perf_write(HBitmap *hb, const uint64_t *offsets, uint64_t n)
{
    for (uint64_t i = 0; i < n; i++) {
        hbitmap_set(hb, offsets[i], 4 * KiB);
    }
}

static void test_perf_1tib(void)
{
    g_autoptr(GRand) r = g_rand_new_with_seed(1);
    g_autoptr(HBitmap) hb = NULL;
    g_autoptr(HBitmap) merged = hbitmap_new(1 * TiB, 64 * KiB);
    g_autoptr(HBitmap) coarse = hbitmap_new(1 * TiB, 1 * MiB);
    g_autofree uint8_t *buf = NULL;
    g_autofree char *sha = NULL;
    g_autofree uint64_t *writes = NULL;
    HBitmap *sources[8];
    uint64_t offset = 0, start, bytes, areas = 0, count, nwrites;

    g_test_timer_start();
    hb = hbitmap_new(1 * TiB, 64 * KiB);
    perf_report("new");

    writes = perf_write_offsets(r, &nwrites);
    g_test_timer_start();
    perf_write(hb, writes, nwrites);
    perf_report("1 % random 4 KiB writes (2.7 M)");

    g_test_timer_start();
    count = hbitmap_count(hb);
    perf_report("count");
    g_test_message("dirty: %" PRIu64 " MiB", (uint64_t)(count / MiB));

    g_test_timer_start();
    while (hbitmap_next_dirty_area(hb, offset, UINT64_MAX, INT32_MAX,
                                   &start, &bytes)) {
        areas++;
        offset = start + bytes;
    }
    perf_report("iterate dirty areas");
    g_test_message("areas: %" PRIu64, areas);

    for (int i = 0; i < 8; i++) {
        sources[i] = hbitmap_new(1 * TiB, 64 * KiB);
        g_free(writes);
        writes = perf_write_offsets(r, &nwrites);
        perf_write(sources[i], writes, nwrites);
    }
    g_test_timer_start();
    for (int i = 0; i < 8; i++) {
        hbitmap_merge(merged, sources[i]);
    }
    perf_report("merge 8 bitmaps");
    g_test_timer_start();
    hbitmap_merge(coarse, merged);
    perf_report("merge into 1 MiB granularity");
    for (int i = 0; i < 8; i++) {
        hbitmap_free(sources[i]);
    }

    g_test_timer_start();
    sha = hbitmap_sha256(hb);
    perf_report("sha256");

    buf = g_malloc(hbitmap_serialized_bytes(hb));
    g_test_timer_start();
    hbitmap_serialize_part(hb, buf, 0, hbitmap_serialized_bytes(hb));
    perf_report("serialize");

    g_test_timer_start();
    for (uint64_t pos = 0; pos < hbitmap_serialized_bytes(hb);
         pos += 64 * KiB) {
        hbitmap_deserialize_part(merged, buf + pos, pos, 64 * KiB);
    }
    perf_report("deserialize in 64 KiB clusters");
    assert_sha256(merged, sha);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    for (size_t i = 0; i < G_N_ELEMENTS(model_cases); i++) {
        g_autofree char *path = g_strdup_printf("/hbitmap/model/%s",
                                                model_cases[i].name);

        g_test_add_data_func(path, &model_cases[i], test_model);
    }
    g_test_add_func("/hbitmap/set/summaries", test_set_summaries);
    g_test_add_func("/hbitmap/set/many", test_set_many);
    g_test_add_func("/hbitmap/reset/rule", test_reset_rule);
    g_test_add_func("/hbitmap/count/whole-granules",
                    test_count_whole_granules);
    g_test_add_func("/hbitmap/truncate/shrink/tiny",
                    test_truncate_shrink_tiny);
    g_test_add_func("/hbitmap/copy/independent", test_copy_independent);
    g_test_add_func("/hbitmap/deserialize/ignores-tail",
                    test_deserialize_ignores_tail);
    g_test_add_func("/hbitmap/sha256/empty", test_sha256_empty);
    g_test_add_func("/hbitmap/sha256/words", test_sha256_words);
    g_test_add_func("/hbitmap/sha256/full-tail", test_sha256_full_tail);
    if (g_test_perf()) {
        g_test_add_func("/hbitmap/perf/1tib", test_perf_1tib);
    }
    return g_test_run();
}
