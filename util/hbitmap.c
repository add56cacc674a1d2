/*
 * Hierarchical bitmap; the contract is in include/util/hbitmap.h.
 *
 * Layout.  levels[0], the bottom, holds one bit per granule in 64-bit
 * words: granule i is bit i % 64 of word i / 64.  Each level above holds
 * one bit per word of the level below, set exactly when that word is
 * non-zero.  Levels are stacked until one fits in a single word, so N
 * granules take about log64(N) levels, and the levels above the bottom
 * add 1/63 to its memory.
 *
 * Invariants (tests/unit/test-hbitmap.c checks them against a naive
 * model after every operation):
 * - the bits past the last granule are zero, so the last bottom word can
 *   be hashed and serialized as it is;
 * - a bit of levels[l + 1] is set if and only if the word of levels[l]
 *   it stands for is non-zero;
 * - count is the number of set bits in levels[0], so hbitmap_count() is
 *   O(1).
 *
 * Costs.  Setting or resetting a range touches each bottom word of the
 * range once, with a mask, then brings the summary bits of those words
 * up to date, climbing only while a summary word changes: a write into a
 * granule that is already dirty stops at the bottom.  Setting needs no
 * look at the words below a summary (they all end up non-zero), so each
 * level above is one masked OR per word; resetting recomputes the
 * summary bits from the words below.  The search for the
 * next dirty granule climbs until a word shows a set bit ahead and
 * descends with one count-trailing-zeros per level, so a clean stretch of
 * 64^l granules costs one step at level l.  The search for the next clean
 * granule scans bottom words for one that is not all ones: the summaries
 * say "not empty", never "full", so they cannot help it.
 *
 * Byte order.  Words are host-endian in memory.  Serialization and the
 * digest convert a whole word at a time with GUINT64_TO_LE, which costs
 * nothing on little-endian hosts, so every host runs the same code.
 */
#include "util/hbitmap.h"

#define BITS_PER_WORD 64

/* 64^11 > 2^64: enough levels for any number of granules. */
#define HBITMAP_MAX_LEVELS 11

/* What the searches return when there is no such granule. */
#define NOT_FOUND UINT64_MAX

struct HBitmap {
    uint64_t size;                          /* bytes covered */
    uint32_t granularity;                   /* bytes per granule */
    unsigned granularity_bits;              /* log2(granularity) */
    uint64_t granules;                      /* bits of levels[0], >= 1 */
    uint64_t count;                         /* set bits of levels[0] */
    unsigned nlevels;
    uint64_t *levels[HBITMAP_MAX_LEVELS];   /* [0] is the bottom */
    uint64_t nwords[HBITMAP_MAX_LEVELS];    /* words of each level */
};

static uint64_t words_for_bits(uint64_t bits)
{
    return bits / BITS_PER_WORD + (bits % BITS_PER_WORD != 0);
}

/* Bits @lo to @hi of a word (0 <= @lo <= @hi < 64). */
static uint64_t word_mask(unsigned lo, unsigned hi)
{
    return (~0ULL << lo) & (~0ULL >> (BITS_PER_WORD - 1 - hi));
}

/* The bits of the last bottom word that stand for granules. */
static uint64_t last_word_mask(const HBitmap *hb)
{
    return word_mask(0, (hb->granules - 1) % BITS_PER_WORD);
}

static uint64_t granules_for(uint64_t size, unsigned granularity_bits)
{
    uint64_t in_granule = size & ((1ULL << granularity_bits) - 1);
    uint64_t granules = (size >> granularity_bits) + (in_granule != 0);

    return MAX(granules, 1);
}

/*
 * The granules that [@offset, @offset + @bytes) touches once clipped to
 * the size: @first to @last.  False if the clipped range is empty.
 */
static bool touched_granules(const HBitmap *hb, uint64_t offset,
                             uint64_t bytes, uint64_t *first, uint64_t *last)
{
    if (offset >= hb->size || bytes == 0) {
        return false;
    }
    bytes = MIN(bytes, hb->size - offset);
    *first = offset >> hb->granularity_bits;
    *last = (offset + bytes - 1) >> hb->granularity_bits;
    return true;
}

/*
 * The number of set bits of @word.  A word with one bit, which is what a
 * write of one granule changes, is answered without popcount: compiled
 * for baseline x86-64 (no -mpopcnt), __builtin_popcountll is a library
 * call that costs as much as the rest of marking a granule.
 */
static uint64_t count_ones(uint64_t word)
{
    return word & (word - 1) ? __builtin_popcountll(word) : word != 0;
}

/*
 * Set (@set true) or clear bits @first to @last of @words; returns how
 * many changed.  Always inlined: callers pass a constant @set, which
 * folds away, and marking a write is a few instructions more than the
 * call would be.
 */
static inline G_ALWAYS_INLINE uint64_t change_bits(uint64_t *words,
                                                   uint64_t first,
                                                   uint64_t last, bool set)
{
    uint64_t first_word = first / BITS_PER_WORD;
    uint64_t last_word = last / BITS_PER_WORD;
    uint64_t changed = 0;

    for (uint64_t w = first_word; w <= last_word; w++) {
        unsigned lo = w == first_word ? first % BITS_PER_WORD : 0;
        unsigned hi = w == last_word ? last % BITS_PER_WORD : 63;
        uint64_t flip = word_mask(lo, hi) & (set ? ~words[w] : words[w]);

        words[w] ^= flip;
        changed += count_ones(flip);
    }
    return changed;
}

/*
 * Words @first to @last of levels[@level] may have changed: recompute
 * the summary bits that stand for them, and the ones above those, until
 * a level comes out unchanged.
 */
static void update_summaries(HBitmap *hb, unsigned level, uint64_t first,
                             uint64_t last)
{
    for (; level + 1 < hb->nlevels; level++) {
        const uint64_t *below = hb->levels[level];
        uint64_t *above = hb->levels[level + 1];
        bool changed = false;

        for (uint64_t w = first / BITS_PER_WORD; w <= last / BITS_PER_WORD;
             w++) {
            uint64_t lo = MAX(first, w * BITS_PER_WORD);
            uint64_t hi = MIN(last, w * BITS_PER_WORD + BITS_PER_WORD - 1);
            uint64_t mask = word_mask(lo % BITS_PER_WORD,
                                      hi % BITS_PER_WORD);
            uint64_t summary = 0;
            uint64_t old = above[w];

            for (uint64_t i = lo; i <= hi; i++) {
                summary |= (uint64_t)(below[i] != 0) << (i % BITS_PER_WORD);
            }
            above[w] = (old & ~mask) | summary;
            changed |= above[w] != old;
        }
        if (!changed) {
            return;
        }
        first /= BITS_PER_WORD;
        last /= BITS_PER_WORD;
    }
}

/* Replace every level above the bottom with a clean one sized for it. */
static void alloc_summaries(HBitmap *hb)
{
    for (unsigned l = 1; l < hb->nlevels; l++) {
        g_clear_pointer(&hb->levels[l], g_free);
    }
    hb->nlevels = 1;
    while (hb->nwords[hb->nlevels - 1] > 1) {
        unsigned l = hb->nlevels++;

        g_assert(l < HBITMAP_MAX_LEVELS);
        hb->nwords[l] = words_for_bits(hb->nwords[l - 1]);
        hb->levels[l] = g_new0(uint64_t, hb->nwords[l]);
    }
}

HBitmap *hbitmap_new(uint64_t size, uint32_t granularity)
{
    HBitmap *hb = g_new0(HBitmap, 1);

    g_assert(IS_POWER_OF_2(granularity));
    hb->size = size;
    hb->granularity = granularity;
    hb->granularity_bits = __builtin_ctz(granularity);
    hb->granules = granules_for(size, hb->granularity_bits);
    hb->nwords[0] = words_for_bits(hb->granules);
    hb->levels[0] = g_new0(uint64_t, hb->nwords[0]);
    hb->nlevels = 1;
    alloc_summaries(hb);
    return hb;
}

void hbitmap_free(HBitmap *hb)
{
    if (!hb) {
        return;
    }
    for (unsigned l = 0; l < hb->nlevels; l++) {
        g_free(hb->levels[l]);
    }
    g_free(hb);
}

HBitmap *hbitmap_copy(const HBitmap *hb)
{
    HBitmap *copy = g_memdup2(hb, sizeof(*hb));

    for (unsigned l = 0; l < hb->nlevels; l++) {
        copy->levels[l] = g_memdup2(hb->levels[l],
                                    hb->nwords[l] * sizeof(uint64_t));
    }
    return copy;
}

uint64_t hbitmap_size(const HBitmap *hb)
{
    return hb->size;
}

uint32_t hbitmap_granularity(const HBitmap *hb)
{
    return hb->granularity;
}

/*
 * hbitmap_set() of granules @first to @last, not all of them set: out of
 * line, which keeps the fast path of hbitmap_set_many() a short loop.
 */
static G_GNUC_NO_INLINE void set_granules(HBitmap *hb, uint64_t first,
                                          uint64_t last)
{
    uint64_t changed = change_bits(hb->levels[0], first, last, true);

    hb->count += changed;
    /*
     * Every word of the range is non-zero now, so the bits that stand
     * for those words are a range to set one level up, and so on.  A
     * level where nothing changed had those words non-zero already, and
     * the levels above it are right as they are.
     */
    for (unsigned l = 1; changed && l < hb->nlevels; l++) {
        first /= BITS_PER_WORD;
        last /= BITS_PER_WORD;
        changed = change_bits(hb->levels[l], first, last, true);
    }
}

void hbitmap_set(HBitmap *hb, uint64_t offset, uint64_t bytes)
{
    hbitmap_set_many(&hb, 1, offset, bytes);
}

void hbitmap_set_many(HBitmap *const *hbs, unsigned n, uint64_t offset,
                      uint64_t bytes)
{
    /*
     * The range in granules for bitmaps of this size and granularity.
     * Before the first bitmap, as for one of size 0: nothing is touched.
     */
    uint64_t size = 0;
    unsigned granularity_bits = 0;
    bool touched = false;
    uint64_t first = 0, last = 0;
    uint64_t word = 0, mask = 0;    /* the range, if it is in one word */
    bool one_word = false;

    for (unsigned i = 0; i < n; i++) {
        HBitmap *hb = hbs[i];

        /* The bitmaps of a node mostly share size and granularity. */
        if (hb->size != size || hb->granularity_bits != granularity_bits) {
            size = hb->size;
            granularity_bits = hb->granularity_bits;
            touched = touched_granules(hb, offset, bytes, &first, &last);
            word = first / BITS_PER_WORD;
            one_word = word == last / BITS_PER_WORD;
            mask = word_mask(first % BITS_PER_WORD, last % BITS_PER_WORD);
        }
        /* Granules that are all dirty already: the usual case of a write. */
        if (!touched ||
            (one_word && (hb->levels[0][word] & mask) == mask)) {
            continue;
        }
        set_granules(hb, first, last);
    }
}

void hbitmap_reset(HBitmap *hb, uint64_t offset, uint64_t bytes)
{
    uint64_t granule_mask = hb->granularity - 1;
    uint64_t first, end, removed;   /* granules [first, end) are covered */

    if (offset >= hb->size || bytes == 0) {
        return;
    }
    first = (offset >> hb->granularity_bits) + ((offset & granule_mask) != 0);
    if (bytes >= hb->size - offset) {
        end = hb->granules;
    } else {
        end = (offset + bytes) >> hb->granularity_bits;
    }
    if (first >= end) {
        return;
    }
    removed = change_bits(hb->levels[0], first, end - 1, false);
    if (removed) {
        hb->count -= removed;
        update_summaries(hb, 0, first / BITS_PER_WORD,
                         (end - 1) / BITS_PER_WORD);
    }
}

void hbitmap_reset_all(HBitmap *hb)
{
    for (unsigned l = 0; l < hb->nlevels; l++) {
        memset(hb->levels[l], 0, hb->nwords[l] * sizeof(uint64_t));
    }
    hb->count = 0;
}

bool hbitmap_get(const HBitmap *hb, uint64_t offset)
{
    uint64_t granule = offset >> hb->granularity_bits;

    g_assert(offset < hb->size);
    return (hb->levels[0][granule / BITS_PER_WORD] >>
            (granule % BITS_PER_WORD)) & 1;
}

uint64_t hbitmap_count(const HBitmap *hb)
{
    return hb->count << hb->granularity_bits;
}

bool hbitmap_is_empty(const HBitmap *hb)
{
    return hb->count == 0;
}

/* The first dirty granule from @start on, or NOT_FOUND. */
static uint64_t find_dirty_granule(const HBitmap *hb, uint64_t start)
{
    unsigned level = 0;
    uint64_t pos = start;   /* a bit of levels[level] */
    uint64_t word;

    /* Climb until a word has a set bit at or after pos. */
    for (;;) {
        if (pos / BITS_PER_WORD >= hb->nwords[level]) {
            return NOT_FOUND;
        }
        word = hb->levels[level][pos / BITS_PER_WORD] &
               (~0ULL << (pos % BITS_PER_WORD));
        if (word) {
            break;
        }
        if (++level == hb->nlevels) {
            return NOT_FOUND;
        }
        /* The words after this one are the bits after this one above. */
        pos = pos / BITS_PER_WORD + 1;
    }
    pos = pos / BITS_PER_WORD * BITS_PER_WORD + __builtin_ctzll(word);

    /* Descend: a set summary bit promises a non-zero word below it. */
    while (level-- > 0) {
        pos = pos * BITS_PER_WORD + __builtin_ctzll(hb->levels[level][pos]);
    }
    return pos;
}

/*
 * The first clean granule from @start on, looking no further than the
 * word that holds @last; NOT_FOUND if there is none.
 */
static uint64_t find_clean_granule(const HBitmap *hb, uint64_t start,
                                   uint64_t last)
{
    const uint64_t *words = hb->levels[0];
    uint64_t w = start / BITS_PER_WORD;
    uint64_t clean = ~words[w] & (~0ULL << (start % BITS_PER_WORD));

    while (!clean) {
        if (++w > last / BITS_PER_WORD) {
            return NOT_FOUND;
        }
        clean = ~words[w];
    }
    return w * BITS_PER_WORD + __builtin_ctzll(clean);
}

/* A granule found in [offset, ...) as the offset the searches return. */
static int64_t found_offset(const HBitmap *hb, uint64_t granule,
                            uint64_t last, uint64_t offset)
{
    if (granule == NOT_FOUND || granule > last) {
        return -1;
    }
    return MAX(granule << hb->granularity_bits, offset);
}

int64_t hbitmap_next_dirty(const HBitmap *hb, uint64_t offset,
                           uint64_t bytes)
{
    uint64_t first, last;

    if (!touched_granules(hb, offset, bytes, &first, &last)) {
        return -1;
    }
    return found_offset(hb, find_dirty_granule(hb, first), last, offset);
}

int64_t hbitmap_next_clean(const HBitmap *hb, uint64_t offset,
                           uint64_t bytes)
{
    uint64_t first, last;

    if (!touched_granules(hb, offset, bytes, &first, &last)) {
        return -1;
    }
    return found_offset(hb, find_clean_granule(hb, first, last), last,
                        offset);
}

bool hbitmap_next_dirty_area(const HBitmap *hb, uint64_t offset,
                             uint64_t end, uint64_t max_bytes,
                             uint64_t *area_start, uint64_t *area_bytes)
{
    int64_t start, clean;
    uint64_t limit;

    g_assert(max_bytes > 0);
    end = MIN(end, hb->size);
    if (offset >= end) {
        return false;
    }
    start = hbitmap_next_dirty(hb, offset, end - offset);
    if (start < 0) {
        return false;
    }
    limit = start + MIN(max_bytes, end - start);
    clean = hbitmap_next_clean(hb, start, limit - start);
    *area_start = start;
    *area_bytes = (clean < 0 ? limit : (uint64_t)clean) - start;
    return true;
}

/* Equal granularity: the levels of @dst | @src are the ORs of theirs. */
static void merge_words(HBitmap *dst, const HBitmap *src)
{
    for (uint64_t w = 0; w < dst->nwords[0]; w++) {
        dst->count += __builtin_popcountll(src->levels[0][w] &
                                           ~dst->levels[0][w]);
        dst->levels[0][w] |= src->levels[0][w];
    }
    for (unsigned l = 1; l < dst->nlevels; l++) {
        for (uint64_t w = 0; w < dst->nwords[l]; w++) {
            dst->levels[l][w] |= src->levels[l][w];
        }
    }
}

/* Different granularities: set in @dst the bytes of each dirty area. */
static void merge_areas(HBitmap *dst, const HBitmap *src)
{
    uint64_t offset = 0;
    uint64_t start, bytes;

    while (hbitmap_next_dirty_area(src, offset, src->size, UINT64_MAX,
                                   &start, &bytes)) {
        hbitmap_set(dst, start, bytes);
        offset = start + bytes;
    }
}

void hbitmap_merge(HBitmap *dst, const HBitmap *src)
{
    g_assert(dst->size == src->size);
    if (dst->granularity == src->granularity) {
        merge_words(dst, src);
    } else {
        merge_areas(dst, src);
    }
}

void hbitmap_truncate(HBitmap *hb, uint64_t size)
{
    uint64_t granules = granules_for(size, hb->granularity_bits);
    uint64_t nwords = words_for_bits(granules);
    uint64_t old_nwords = hb->nwords[0];

    if (granules < hb->granules) {
        hb->count -= change_bits(hb->levels[0], granules, hb->granules - 1,
                                false);
    }
    hb->levels[0] = g_renew(uint64_t, hb->levels[0], nwords);
    if (nwords > old_nwords) {
        memset(hb->levels[0] + old_nwords, 0,
               (nwords - old_nwords) * sizeof(uint64_t));
    }
    hb->size = size;
    hb->granules = granules;
    hb->nwords[0] = nwords;
    alloc_summaries(hb);
    update_summaries(hb, 0, 0, nwords - 1);
}

uint64_t hbitmap_serialized_bytes(const HBitmap *hb)
{
    return hb->granules / 8 + (hb->granules % 8 != 0);
}

static void check_serialized_range(const HBitmap *hb, uint64_t start,
                                   uint64_t len)
{
    uint64_t total = hbitmap_serialized_bytes(hb);

    g_assert(start <= total && len <= total - start);
}

/*
 * The serialized array is the bottom words stored little-endian, cut
 * after the byte of the last granule.  Each step of the loops below
 * handles the bytes of [start, start + len) that fall in one word.
 */
void hbitmap_serialize_part(const HBitmap *hb, uint8_t *buf,
                            uint64_t start, uint64_t len)
{
    uint64_t pos = start;
    uint64_t end = start + len;

    check_serialized_range(hb, start, len);
    while (pos < end) {
        unsigned skip = pos % sizeof(uint64_t);
        unsigned n = MIN(sizeof(uint64_t) - skip, end - pos);
        uint64_t le = GUINT64_TO_LE(hb->levels[0][pos / sizeof(uint64_t)]);

        memcpy(buf + (pos - start), (uint8_t *)&le + skip, n);
        pos += n;
    }
}

void hbitmap_deserialize_part(HBitmap *hb, const uint8_t *buf,
                              uint64_t start, uint64_t len)
{
    uint64_t *words = hb->levels[0];
    uint64_t pos = start;
    uint64_t end = start + len;

    check_serialized_range(hb, start, len);
    if (len == 0) {
        return;
    }
    while (pos < end) {
        uint64_t w = pos / sizeof(uint64_t);
        unsigned skip = pos % sizeof(uint64_t);
        unsigned n = MIN(sizeof(uint64_t) - skip, end - pos);
        uint64_t le = GUINT64_TO_LE(words[w]);
        uint64_t word;

        memcpy((uint8_t *)&le + skip, buf + (pos - start), n);
        word = GUINT64_FROM_LE(le);
        if (w == hb->nwords[0] - 1) {
            word &= last_word_mask(hb);
        }
        hb->count -= __builtin_popcountll(words[w]);
        hb->count += __builtin_popcountll(word);
        words[w] = word;
        pos += n;
    }
    update_summaries(hb, 0, start / sizeof(uint64_t),
                     (end - 1) / sizeof(uint64_t));
}

char *hbitmap_sha256(const HBitmap *hb)
{
    g_autoptr(GChecksum) sha = g_checksum_new(G_CHECKSUM_SHA256);
    uint64_t le[512];

    for (uint64_t w = 0; w < hb->nwords[0]; w += G_N_ELEMENTS(le)) {
        uint64_t n = MIN(G_N_ELEMENTS(le), hb->nwords[0] - w);

        for (uint64_t i = 0; i < n; i++) {
            le[i] = GUINT64_TO_LE(hb->levels[0][w + i]);
        }
        g_checksum_update(sha, (const guchar *)le, n * sizeof(le[0]));
    }
    return g_strdup(g_checksum_get_string(sha));
}
