/*
 * Dirty bitmaps on a node (block/dirty-bitmap.c): write marking, the
 * successor protocol and the bitmap-mode table that a backup job applies
 * when it ends, checked against sets of granules.
 *
 * -m perf adds /dirty-bitmap/perf/{clean,dirty}/{0,1,8}: random 4 KiB
 * writes marked by bdrv_set_dirty() with that many recording bitmaps
 * (64 KiB granularity): "clean" spreads them over 1 TiB, so nearly every
 * write dirties a clean granule; "dirty" writes to a 1 GiB node whose
 * granules are all dirty already, the steady state of bench/bitmaps.  For
 * instruction counts, run one under valgrind --tool=callgrind
 * --toggle-collect=perf_mark_writes*.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/dirty-bitmap.h"
#include "util/coroutine.h"

enum {
    DISK_SIZE = 1024 * 1024,
    GRAN = 65536,
    GRANULES = DISK_SIZE / GRAN,
};

static int coroutine_fn disk_open(BlockDriverState *bs,
                                  BlockdevOptions *options, Error **errp)
{
    bs->total_bytes = DISK_SIZE;
    return 0;
}

static const BlockDriver disk_driver = {
    .format_name = "test-disk",
    .bdrv_open = disk_open,
};

typedef struct OpenArgs {
    BlockDriverState *bs;
} OpenArgs;

static void coroutine_fn open_entry(void *opaque)
{
    OpenArgs *args = opaque;

    args->bs = bdrv_new_open_driver(&disk_driver, "disk", false,
                                    &error_abort);
}

static BlockDriverState *open_disk(void)
{
    OpenArgs args = { 0 };

    co_run_sync(open_entry, &args);
    return args.bs;
}

/* The granules of @bitmap as a bit mask (bit g: granule g). */
static uint32_t granules_of(const BdrvDirtyBitmap *bitmap)
{
    uint32_t mask = 0;

    for (int g = 0; g < GRANULES; g++) {
        if (hbitmap_get(bdrv_dirty_bitmap_bits(bitmap), (uint64_t)g * GRAN)) {
            mask |= 1U << g;
        }
    }
    return mask;
}

/* A guest write to every granule in @mask. */
static void write_granules(BlockDriverState *bs, uint32_t mask)
{
    for (int g = 0; g < GRANULES; g++) {
        if (mask & (1U << g)) {
            bdrv_set_dirty(bs, (int64_t)g * GRAN + 100, 10);
        }
    }
}

static void test_marking(void)
{
    BlockDriverState *bs = open_disk();
    BdrvDirtyBitmap *on = bdrv_create_dirty_bitmap(bs, GRAN, "on",
                                                   &error_abort);
    BdrvDirtyBitmap *off = bdrv_create_dirty_bitmap(bs, 4096, "off",
                                                    &error_abort);
    Error *err = NULL;

    bdrv_disable_dirty_bitmap(off);
    /* A range over a granule boundary marks both granules. */
    bdrv_set_dirty(bs, GRAN - 1, 2);
    g_assert_cmphex(granules_of(on), ==, 0x3);
    g_assert_cmpuint(bdrv_dirty_bitmap_count(on), ==, 2 * GRAN);
    g_assert_cmpuint(bdrv_dirty_bitmap_count(off), ==, 0);
    g_assert_null(bdrv_create_dirty_bitmap(bs, GRAN, "on", &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Bitmap already exists: on");
    error_free(err);
    /* Newest first. */
    g_assert(bdrv_dirty_bitmaps(bs)->data == off);
    bdrv_unref(bs);
}

/*
 * The node keeps what each write needs of its bitmaps (the enabled ones,
 * whether one is read-only) up to date through every change of state.
 */
static void test_write_path_follows_state(void)
{
    BlockDriverState *bs = open_disk();
    BdrvDirtyBitmap *a = bdrv_create_dirty_bitmap(bs, GRAN, "a",
                                                  &error_abort);
    BdrvDirtyBitmap *b = bdrv_create_dirty_bitmap(bs, GRAN, "b",
                                                  &error_abort);

    write_granules(bs, 0x1);
    bdrv_disable_dirty_bitmap(a);
    write_granules(bs, 0x2);
    bdrv_enable_dirty_bitmap(a);
    write_granules(bs, 0x4);
    bdrv_disable_dirty_bitmap(b);
    write_granules(bs, 0x8);
    g_assert_cmphex(granules_of(a), ==, 0xd);
    g_assert_cmphex(granules_of(b), ==, 0x7);

    g_assert(!bdrv_has_readonly_bitmaps(bs));
    bdrv_dirty_bitmap_set_readonly(b, true);
    g_assert(bdrv_has_readonly_bitmaps(bs));
    bdrv_dirty_bitmap_set_readonly(b, false);
    g_assert(!bdrv_has_readonly_bitmaps(bs));
    bdrv_dirty_bitmap_set_readonly(b, true);
    bdrv_release_dirty_bitmap(b);
    g_assert(!bdrv_has_readonly_bitmaps(bs));

    /* Found in_use: disabled with it. */
    bdrv_dirty_bitmap_set_inconsistent(a);
    write_granules(bs, 0x10);
    g_assert_cmphex(granules_of(a), ==, 0xd);
    bdrv_release_dirty_bitmap(a);
    write_granules(bs, 0x20);
    g_assert_null(bdrv_dirty_bitmaps(bs));
    bdrv_unref(bs);
}

static void test_successor(void)
{
    BlockDriverState *bs = open_disk();
    BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(bs, GRAN, "b",
                                                   &error_abort);
    g_autoptr(BlockDirtyInfoList) info = NULL;
    Error *err = NULL;

    write_granules(bs, 0x1);
    g_assert(bdrv_dirty_bitmap_create_successor(bm, &error_abort));
    g_assert(!bdrv_dirty_bitmap_enabled(bm));
    g_assert(bdrv_dirty_bitmap_recording(bm));
    g_assert(bdrv_dirty_bitmap_busy(bm));
    g_assert(!bdrv_dirty_bitmap_check(bm, BDRV_BITMAP_DEFAULT, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Bitmap 'b' is currently in "
                    "use by another operation and cannot be used");
    g_clear_pointer(&err, error_free);
    g_assert(!bdrv_dirty_bitmap_create_successor(bm, &err));
    g_assert_cmpstr(error_get_pretty(err), ==, "Cannot create a successor "
                    "for a bitmap that already has one");
    g_clear_pointer(&err, error_free);
    /* New writes go to the successor only; the parent is a manifest. */
    write_granules(bs, 0x2);
    g_assert_cmphex(granules_of(bm), ==, 0x1);
    /* Query: the anonymous successor first, without a name. */
    info = bdrv_query_dirty_bitmaps(bs);
    g_assert_null(info->value->name);
    g_assert_cmpuint(info->value->count, ==, GRAN);
    g_assert_cmpstr(info->next->value->name, ==, "b");
    g_assert(info->next->value->recording && info->next->value->busy);
    g_assert_null(info->next->next);
    bdrv_unref(bs);
}

typedef struct ModeCase {
    BitmapSyncMode mode;
    bool success;
    bool disabled;                  /* the bitmap before the job */
    uint32_t expected;              /* granules after the job */
} ModeCase;

/*
 * Before the job: granules 0x0f; during it: writes to 0x30; not copied
 * when the job ends (for always): 0xc0.  The table of reference §2.2.
 */
static const ModeCase mode_cases[] = {
    { BITMAP_SYNC_MODE_ON_SUCCESS, true, false, 0x30 },
    { BITMAP_SYNC_MODE_ON_SUCCESS, false, false, 0x3f },
    { BITMAP_SYNC_MODE_NEVER, true, false, 0x3f },
    { BITMAP_SYNC_MODE_NEVER, false, false, 0x3f },
    { BITMAP_SYNC_MODE_ALWAYS, true, false, 0x30 },
    { BITMAP_SYNC_MODE_ALWAYS, false, false, 0xf0 },
    /* A disabled bitmap records nothing during the job either. */
    { BITMAP_SYNC_MODE_ON_SUCCESS, true, true, 0x00 },
    { BITMAP_SYNC_MODE_ON_SUCCESS, false, true, 0x0f },
};

static void test_bitmap_modes(void)
{
    for (size_t i = 0; i < G_N_ELEMENTS(mode_cases); i++) {
        const ModeCase *c = &mode_cases[i];
        BlockDriverState *bs = open_disk();
        BdrvDirtyBitmap *bm = bdrv_create_dirty_bitmap(bs, GRAN, "b",
                                                       &error_abort);
        g_autoptr(HBitmap) remaining = hbitmap_new(DISK_SIZE, GRAN);
        BdrvDirtyBitmap *result;

        bdrv_dirty_bitmap_set_persistence(bm, true);
        bdrv_set_dirty_bitmap(bm, 0, 4 * GRAN);
        if (c->disabled) {
            bdrv_disable_dirty_bitmap(bm);
        }
        g_assert(bdrv_dirty_bitmap_create_successor(bm, &error_abort));
        write_granules(bs, 0x30);
        hbitmap_set(remaining, 6 * GRAN, 2 * GRAN);
        result = bdrv_dirty_bitmap_end_job(bm, c->mode, c->success,
                                           remaining);
        g_assert_cmphex(granules_of(result), ==, c->expected);
        /* One bitmap left, with the name, persistence and state. */
        g_assert(bdrv_find_dirty_bitmap(bs, "b") == result);
        g_assert_cmpuint(g_list_length(bdrv_dirty_bitmaps(bs)), ==, 1);
        g_assert(bdrv_dirty_bitmap_persistent(result));
        g_assert(!bdrv_dirty_bitmap_busy(result));
        g_assert(!bdrv_dirty_bitmap_has_successor(result));
        g_assert(bdrv_dirty_bitmap_enabled(result) == !c->disabled);
        bdrv_unref(bs);
    }
}

static void test_transactional_clear_and_merge(void)
{
    BlockDriverState *bs = open_disk();
    BdrvDirtyBitmap *a = bdrv_create_dirty_bitmap(bs, GRAN, "a",
                                                  &error_abort);
    BdrvDirtyBitmap *fine = bdrv_create_dirty_bitmap(bs, 512, "fine",
                                                     &error_abort);
    HBitmap *backup = NULL;

    bdrv_disable_dirty_bitmap(fine);
    write_granules(bs, 0x5);
    bdrv_set_dirty_bitmap(fine, 3 * GRAN + 512, 512);
    bdrv_clear_dirty_bitmap(a, &backup);
    g_assert_cmphex(granules_of(a), ==, 0);
    bdrv_restore_dirty_bitmap(a, backup);
    g_assert_cmphex(granules_of(a), ==, 0x5);
    /* A finer source marks the coarser granule that holds it. */
    g_assert(bdrv_merge_dirty_bitmap(a, fine, &backup, &error_abort));
    g_assert_cmphex(granules_of(a), ==, 0xd);
    bdrv_restore_dirty_bitmap(a, backup);
    g_assert_cmphex(granules_of(a), ==, 0x5);
    bdrv_unref(bs);
}

/* --- Performance (-m perf) --- */

#define PERF_WRITES (1 << 20)
#define PERF_WRITE_SIZE 4096

typedef struct PerfCase {
    const char *name;
    int bitmaps;
    bool dirty;         /* every granule dirty before the writes */
} PerfCase;

static const PerfCase perf_cases[] = {
    { "clean/0", 0, false },
    { "clean/1", 1, false },
    { "clean/8", 8, false },
    { "dirty/0", 0, true },
    { "dirty/1", 1, true },
    { "dirty/8", 8, true },
};

/* Never inlined: callgrind's --toggle-collect needs the function. */
static G_GNUC_NO_INLINE void perf_mark_writes(BlockDriverState *bs, const int64_t *offsets, int n)
{
    for (int i = 0; i < n; i++) {
        bdrv_set_dirty(bs, offsets[i], PERF_WRITE_SIZE);
    }
}

static void test_perf_set_dirty(const void *opaque)
{
    const PerfCase *c = opaque;
    BlockDriverState *bs = open_disk();
    g_autoptr(GRand) r = g_rand_new_with_seed(1);
    g_autofree int64_t *offsets = g_new(int64_t, PERF_WRITES);
    int64_t size = c->dirty ? 1LL << 30 : 1LL << 40;
    double seconds;

    /* The test driver's node is small; the bitmaps take this size. */
    bs->total_bytes = size;
    for (int i = 0; i < c->bitmaps; i++) {
        g_autofree char *name = g_strdup_printf("bm%d", i);

        bdrv_create_dirty_bitmap(bs, GRAN, name, &error_abort);
    }
    if (c->dirty) {
        bdrv_set_dirty(bs, 0, size);
    }
    for (int i = 0; i < PERF_WRITES; i++) {
        offsets[i] = (int64_t)g_rand_int_range(r, 0, size / PERF_WRITE_SIZE) *
                     PERF_WRITE_SIZE;
    }
    g_test_timer_start();
    perf_mark_writes(bs, offsets, PERF_WRITES);
    seconds = g_test_timer_elapsed();
    g_test_message("%d writes, %d bitmaps, %s: %.1f ns per write",
                   PERF_WRITES, c->bitmaps, c->dirty ? "dirty" : "clean",
                   seconds * 1e9 / PERF_WRITES);
    bdrv_unref(bs);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    bdrv_register(&disk_driver);
    g_test_add_func("/dirty-bitmap/marking", test_marking);
    g_test_add_func("/dirty-bitmap/write-path-follows-state",
                    test_write_path_follows_state);
    g_test_add_func("/dirty-bitmap/successor", test_successor);
    g_test_add_func("/dirty-bitmap/bitmap-modes", test_bitmap_modes);
    g_test_add_func("/dirty-bitmap/clear-merge-restore",
                    test_transactional_clear_and_merge);
    if (g_test_perf()) {
        for (size_t i = 0; i < G_N_ELEMENTS(perf_cases); i++) {
            g_autofree char *path =
                g_strdup_printf("/dirty-bitmap/perf/%s", perf_cases[i].name);

            g_test_add_data_func(path, &perf_cases[i], test_perf_set_dirty);
        }
    }
    return g_test_run();
}
