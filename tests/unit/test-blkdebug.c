/*
 * The blkdebug filter (block/blkdebug.c): which requests its rules fail,
 * and when.
 *
 * Each test opens blkdebug over a null-co node from JSON options (through
 * the generated visitor, as blockdev-add does), raises debug events with
 * bdrv_debug_event() and checks the result of requests made through a
 * BlockBackend on the blkdebug node.
 */
#undef NDEBUG
#include "block/block_int.h"
#include "block/block-backend.h"
#include "qapi/qapi-visit.h"
#include "qapi/qobject-input-visitor.h"
#include "util/main-loop.h"

typedef struct Fixture {
    BlockDriverState *bs;
    BlockBackend *blk;
} Fixture;

typedef struct OpenArgs {
    BlockdevOptions *options;
    BlockDriverState *bs;
} OpenArgs;

static void coroutine_fn open_entry(void *opaque)
{
    OpenArgs *args = opaque;

    args->bs = bdrv_open_blockdev(args->options, false, &error_abort);
}

/* Open blkdebug "d" over a 1 MiB null-co with @rules (JSON members). */
static void fixture_open(Fixture *f, const char *rules)
{
    g_autofree char *text = g_strdup_printf(
        "{\"driver\": \"blkdebug\", \"node-name\": \"d\", "
        "\"image\": {\"driver\": \"null-co\", \"size\": 1048576, "
        "\"read-zeroes\": true}%s%s}", *rules ? ", " : "", rules);
    json_object *obj = json_tokener_parse(text);
    Visitor *v;
    OpenArgs args = { 0 };

    g_assert_nonnull(obj);
    v = qobject_input_visitor_new(obj);
    json_object_put(obj);
    visit_type_BlockdevOptions(v, NULL, &args.options, &error_abort);
    visit_free(v);
    co_run_sync(open_entry, &args);
    qapi_free_BlockdevOptions(args.options);
    f->bs = args.bs;
    f->blk = blk_new_with_bs(f->bs, "test", BLK_PERM_CONSISTENT_READ |
                             BLK_PERM_WRITE, BLK_PERM_ALL, &error_abort);
}

static void fixture_close(Fixture *f)
{
    blk_unref(f->blk);
    bdrv_unref(f->bs);
}

typedef enum { OP_READ, OP_WRITE, OP_FLUSH } Op;

typedef struct Request {
    BlockBackend *blk;
    Op op;
    int64_t offset;
    int64_t bytes;
    int ret;
    bool done;
} Request;

static void coroutine_fn request_entry(void *opaque)
{
    Request *r = opaque;
    g_autofree uint8_t *buf = g_malloc0(MAX(r->bytes, 1));

    switch (r->op) {
    case OP_READ:
        r->ret = blk_co_pread(r->blk, r->offset, r->bytes, buf, 0);
        break;
    case OP_WRITE:
        r->ret = blk_co_pwrite(r->blk, r->offset, r->bytes, buf, 0);
        break;
    case OP_FLUSH:
        r->ret = blk_co_flush(r->blk);
        break;
    }
    r->done = true;
}

static int request(Fixture *f, Op op, int64_t offset, int64_t bytes)
{
    Request r = { .blk = f->blk, .op = op, .offset = offset,
                  .bytes = bytes };

    co_run_sync(request_entry, &r);
    g_assert_true(r.done);
    return r.ret;
}

static void test_once(void)
{
    Fixture f;

    fixture_open(&f, "\"inject-error\": [{\"event\": \"read_aio\", "
                 "\"once\": true}]");
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    bdrv_debug_event(f.bs, BLKDBG_READ_AIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -EIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    /* The rule is gone: the event does not bring it back. */
    bdrv_debug_event(f.bs, BLKDBG_READ_AIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    fixture_close(&f);
}

static void test_event_replaces_active_rules(void)
{
    Fixture f;

    fixture_open(&f, "\"inject-error\": ["
                 "{\"event\": \"l1_update\", \"iotype\": \"read\"}, "
                 "{\"event\": \"l2_load\", \"iotype\": \"write\", "
                 "\"errno\": 28}]");
    bdrv_debug_event(f.bs, BLKDBG_L1_UPDATE);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -EIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -EIO);
    g_assert_cmpint(request(&f, OP_WRITE, 0, 512), ==, 0);
    /* An event without rules leaves the active set alone. */
    bdrv_debug_event(f.bs, BLKDBG_L2_UPDATE);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -EIO);
    bdrv_debug_event(f.bs, BLKDBG_L2_LOAD);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    g_assert_cmpint(request(&f, OP_WRITE, 0, 512), ==, -ENOSPC);
    fixture_close(&f);
}

static void test_last_activated_first(void)
{
    Fixture f;

    fixture_open(&f, "\"inject-error\": ["
                 "{\"event\": \"cow_read\", \"errno\": 5}, "
                 "{\"event\": \"cow_read\", \"errno\": 28, \"once\": true}]");
    bdrv_debug_event(f.bs, BLKDBG_COW_READ);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -ENOSPC);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -EIO);
    fixture_close(&f);
}

static void test_state(void)
{
    Fixture f;

    fixture_open(&f,
                 "\"set-state\": [{\"event\": \"write_aio\", \"state\": 1, "
                 "\"new_state\": 2}], "
                 "\"inject-error\": [{\"event\": \"write_aio\", "
                 "\"state\": 2}]");
    /* Rules see the state the event found: the inject rule waits. */
    bdrv_debug_event(f.bs, BLKDBG_WRITE_AIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    bdrv_debug_event(f.bs, BLKDBG_WRITE_AIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, -EIO);
    fixture_close(&f);
}

static void test_sector(void)
{
    Fixture f;

    /* "none" is raised when the node opens: the rule is active at once. */
    fixture_open(&f, "\"inject-error\": [{\"event\": \"none\", "
                 "\"iotype\": \"read\", \"sector\": 8}]");
    g_assert_cmpint(request(&f, OP_READ, 0, 4096), ==, 0);
    g_assert_cmpint(request(&f, OP_READ, 4096, 512), ==, -EIO);
    g_assert_cmpint(request(&f, OP_READ, 3584, 1024), ==, -EIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 65536), ==, -EIO);
    /* The rule names the sector's first byte, as in QEMU. */
    g_assert_cmpint(request(&f, OP_READ, 4097, 100), ==, 0);
    g_assert_cmpint(request(&f, OP_WRITE, 4096, 512), ==, 0);
    /* A flush covers no sector. */
    g_assert_cmpint(request(&f, OP_FLUSH, 0, 0), ==, 0);
    fixture_close(&f);
}

/* Whether the failing read completes before the main loop runs. */
static bool fails_without_main_loop(const char *immediately)
{
    g_autofree char *rules = g_strdup_printf(
        "\"inject-error\": [{\"event\": \"none\", \"immediately\": %s}]",
        immediately);
    Fixture f;
    Request r;
    bool synchronous;

    fixture_open(&f, rules);
    r = (Request) { .blk = f.blk, .op = OP_READ, .bytes = 512 };
    coroutine_enter(coroutine_create(request_entry, &r));
    synchronous = r.done;
    while (!r.done) {
        main_loop_wait(true);
    }
    g_assert_cmpint(r.ret, ==, -EIO);
    fixture_close(&f);
    return synchronous;
}

static void test_immediately(void)
{
    g_assert_true(fails_without_main_loop("true"));
    g_assert_false(fails_without_main_loop("false"));
}

static void test_flush(void)
{
    Fixture f;

    fixture_open(&f, "\"inject-error\": [{\"event\": \"flush_to_disk\", "
                 "\"iotype\": \"flush\"}]");
    /*
     * Flushing the blkdebug node raises flush_to_disk on its child, not
     * on itself: only a layer above activates the rule.
     */
    g_assert_cmpint(request(&f, OP_FLUSH, 0, 0), ==, 0);
    bdrv_debug_event(f.bs, BLKDBG_FLUSH_TO_DISK);
    g_assert_cmpint(request(&f, OP_FLUSH, 0, 0), ==, -EIO);
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    fixture_close(&f);
}

static void test_pwritev_fails_its_own_write(void)
{
    Fixture f;

    fixture_open(&f, "\"inject-error\": [{\"event\": \"pwritev\", "
                 "\"once\": true}]");
    g_assert_cmpint(request(&f, OP_READ, 0, 512), ==, 0);
    g_assert_cmpint(request(&f, OP_WRITE, 0, 512), ==, -EIO);
    g_assert_cmpint(request(&f, OP_WRITE, 0, 512), ==, 0);
    fixture_close(&f);
}

int main(int argc, char **argv)
{
    g_test_init(&argc, &argv, NULL);
    g_test_add_func("/blkdebug/once", test_once);
    g_test_add_func("/blkdebug/event-replaces-active-rules",
                    test_event_replaces_active_rules);
    g_test_add_func("/blkdebug/last-activated-first",
                    test_last_activated_first);
    g_test_add_func("/blkdebug/state", test_state);
    g_test_add_func("/blkdebug/sector", test_sector);
    g_test_add_func("/blkdebug/immediately", test_immediately);
    g_test_add_func("/blkdebug/flush", test_flush);
    g_test_add_func("/blkdebug/pwritev-fails-its-own-write",
                    test_pwritev_fails_its_own_write);
    return g_test_run();
}
