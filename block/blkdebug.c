/*
 * The "blkdebug" filter driver: fault injection for tests.
 *
 * The node passes every request through to its "image" child, unless an
 * error rule is active.  Rules come from the options and are kept per
 * debug event (see bdrv_debug_event() in block_int.h); the node has a
 * state, a number that starts at 1.
 *
 * When an event reaches the node, the rules of that event whose state
 * is 0 (any) or the current state are processed in option order:
 *  - inject-error rules become the active rules, replacing the ones an
 *    earlier event activated (only the first such rule clears the set);
 *  - set-state rules choose the state the node moves to once all rules
 *    of the event have been looked at (the last matching one wins).
 * Every request on the node is then checked against the active rules,
 * the rule activated last first: a rule matches when the request is of
 * one of its I/O types and covers its sector (or the rule has none).
 * The request fails with the rule's -errno, after yielding to the main
 * loop once unless the rule says "immediately"; a "once" rule is deleted
 * when it has failed one request.
 *
 * This follows QEMU's blkdebug; its "config" file is not supported.
 */
#include "block/block_int.h"
#include "qapi/qapi-types.h"

enum {
    BLKDEBUG_SECTOR_SIZE = 512,
};

typedef struct BlkdebugRule {
    BlkdebugEvent event;
    int64_t state;                  /* 0: any state */
    bool inject;                    /* an inject-error rule, else set-state */
    /* inject-error */
    uint64_t iotype_mask;           /* 1 << BlkdebugIOType */
    int error;                      /* errno; 0 fails nothing */
    int64_t offset;                 /* byte the request must cover; -1: any */
    bool once;
    bool immediately;
    /* set-state */
    int64_t new_state;
} BlkdebugRule;

/* Main loop only, like the requests and events that use it. */
typedef struct BDRVBlkdebugState {
    int64_t state;
    GList *rules[BLKDBG__MAX];      /* BlkdebugRule *, in option order */
    GList *active;                  /* activated by the last event */
} BDRVBlkdebugState;

/* The byte a request must cover for the rule to fail it; -1: any. */
static int64_t blkdebug_sector_offset(const BlkdebugInjectErrorOptions *o)
{
    if (!o->has_sector || o->sector == -1) {
        return -1;
    }
    /* Sectors before or after any node never match. */
    if (o->sector < 0) {
        return INT64_MIN;
    }
    if (o->sector > INT64_MAX / BLKDEBUG_SECTOR_SIZE) {
        return INT64_MAX;
    }
    return o->sector * BLKDEBUG_SECTOR_SIZE;
}

static void blkdebug_add_inject_rule(BDRVBlkdebugState *s,
                                     BlkdebugInjectErrorOptions *o)
{
    BlkdebugRule *rule = g_new0(BlkdebugRule, 1);

    rule->event = o->event;
    rule->state = o->has_state ? o->state : 0;
    rule->inject = true;
    rule->iotype_mask = o->has_iotype ? 1ULL << o->iotype
                                      : (1ULL << BLKDEBUG_IO_TYPE__MAX) - 1;
    /* QEMU keeps errno in an int too; below 1 it fails nothing. */
    rule->error = o->has_q_errno ? (int)MIN(MAX(o->q_errno, 0), INT_MAX)
                                 : EIO;
    rule->offset = blkdebug_sector_offset(o);
    rule->once = o->has_once && o->once;
    rule->immediately = o->has_immediately && o->immediately;
    s->rules[rule->event] = g_list_append(s->rules[rule->event], rule);
}

static void blkdebug_add_set_state_rule(BDRVBlkdebugState *s,
                                        BlkdebugSetStateOptions *o)
{
    BlkdebugRule *rule = g_new0(BlkdebugRule, 1);

    rule->event = o->event;
    rule->state = o->has_state ? o->state : 0;
    rule->new_state = o->new_state;
    s->rules[rule->event] = g_list_append(s->rules[rule->event], rule);
}

static void blkdebug_remove_rule(BDRVBlkdebugState *s, BlkdebugRule *rule)
{
    s->active = g_list_remove(s->active, rule);
    s->rules[rule->event] = g_list_remove(s->rules[rule->event], rule);
    g_free(rule);
}

/*
 * QEMU reads these options as sizes, so it refuses negative values with
 * this message; the other limits follow QEMU's checks and messages.
 */
static bool blkdebug_check_size(const char *name, int64_t value,
                                Error **errp)
{
    if (value < 0) {
        error_setg(errp, "Parameter '%s' expects a non-negative number "
                   "below 2^64", name);
        return false;
    }
    return true;
}

static bool blkdebug_set_limits(BlockDriverState *bs,
                                BlockdevOptionsBlkdebug *opts, Error **errp)
{
    int64_t align = opts->has_align ? opts->align : 0;
    int64_t max_transfer = opts->has_max_transfer ? opts->max_transfer : 0;
    int64_t min_align;

    if (!blkdebug_check_size("align", align, errp) ||
        !blkdebug_check_size("max-transfer", max_transfer, errp)) {
        return false;
    }
    if (align && (align >= INT_MAX || !IS_POWER_OF_2(align))) {
        error_setg(errp, "Cannot meet constraints with align %" PRId64,
                   align);
        return false;
    }
    min_align = MAX(align, (int64_t)bs->file->bs->bl.request_alignment);
    if (max_transfer && (max_transfer >= INT_MAX ||
                         !IS_ALIGNED(max_transfer, min_align))) {
        error_setg(errp, "Cannot meet constraints with max-transfer %"
                   PRId64, max_transfer);
        return false;
    }
    /*
     * Without "align" the alignment stays 1 and the child does any
     * read-modify-write itself (see raw-format.c for why).
     */
    bs->bl.request_alignment = align ? align : 1;
    bs->bl.max_transfer = max_transfer ? max_transfer
                                       : bs->file->bs->bl.max_transfer;
    return true;
}

static void blkdebug_close(BlockDriverState *bs)
{
    BDRVBlkdebugState *s = bs->opaque;

    g_list_free(s->active);
    s->active = NULL;
    for (int i = 0; i < BLKDBG__MAX; i++) {
        g_list_free_full(s->rules[i], g_free);
        s->rules[i] = NULL;
    }
}

static void blkdebug_debug_event(BlockDriverState *bs, BlkdebugEvent event)
{
    BDRVBlkdebugState *s = bs->opaque;
    int64_t new_state = s->state;
    bool injected = false;

    for (GList *l = s->rules[event]; l; l = l->next) {
        BlkdebugRule *rule = l->data;

        if (rule->state && rule->state != s->state) {
            continue;
        }
        if (!rule->inject) {
            new_state = rule->new_state;
            continue;
        }
        if (!injected) {
            g_list_free(s->active);
            s->active = NULL;
            injected = true;
        }
        s->active = g_list_prepend(s->active, rule);
    }
    s->state = new_state;
}

static int coroutine_fn blkdebug_open(BlockDriverState *bs,
                                      BlockdevOptions *options, Error **errp)
{
    BDRVBlkdebugState *s = bs->opaque;
    BlockdevOptionsBlkdebug *opts = &options->u.blkdebug;

    if (opts->config) {
        /* QEMU's message when the file cannot be read. */
        if (access(opts->config, R_OK) < 0) {
            error_setg_errno(errp, errno,
                             "Could not read blkdebug config file");
        } else {
            error_setg(errp, "blkdebug config files are not supported; "
                       "use inject-error and set-state");
        }
        return -EINVAL;
    }
    if (!bdrv_open_child(bs, opts->image, "image",
                         BDRV_CHILD_FILTERED | BDRV_CHILD_PRIMARY, errp)) {
        return -EINVAL;
    }
    if (!blkdebug_set_limits(bs, opts, errp)) {
        return -EINVAL;
    }
    bs->total_bytes = bdrv_getlength(bs->file->bs);

    for (BlkdebugInjectErrorOptionsList *l = opts->inject_error; l;
         l = l->next) {
        blkdebug_add_inject_rule(s, l->value);
    }
    for (BlkdebugSetStateOptionsList *l = opts->set_state; l; l = l->next) {
        blkdebug_add_set_state_rule(s, l->value);
    }
    s->state = 1;
    blkdebug_debug_event(bs, BLKDBG_NONE);
    return 0;
}

static bool blkdebug_rule_matches(const BlkdebugRule *rule, int64_t offset,
                                  int64_t bytes, BlkdebugIOType iotype)
{
    if (!(rule->iotype_mask & (1ULL << iotype))) {
        return false;
    }
    return rule->offset == -1 ||
           (bytes && rule->offset >= offset && rule->offset - offset < bytes);
}

/* 0, or the -errno an active rule fails this request with. */
static int coroutine_fn blkdebug_check_request(BlockDriverState *bs,
                                               int64_t offset, int64_t bytes,
                                               BlkdebugIOType iotype)
{
    BDRVBlkdebugState *s = bs->opaque;
    BlkdebugRule *rule = NULL;
    bool immediately;
    int error;

    for (GList *l = s->active; l; l = l->next) {
        if (blkdebug_rule_matches(l->data, offset, bytes, iotype)) {
            rule = l->data;
            break;
        }
    }
    if (!rule || rule->error <= 0) {
        return 0;
    }
    error = rule->error;
    immediately = rule->immediately;
    if (rule->once) {
        blkdebug_remove_rule(s, rule);
    }
    if (!immediately) {
        /* Complete later, as a failed request to a real device does. */
        coroutine_wake(coroutine_self());
        coroutine_yield();
    }
    return -error;
}

static int coroutine_fn blkdebug_co_preadv(BlockDriverState *bs,
                                           int64_t offset, int64_t bytes,
                                           IOVector *qiov,
                                           BdrvRequestFlags flags)
{
    int64_t child_len = bdrv_getlength(bs->file->bs);
    int64_t n = MAX(MIN(bytes, child_len - offset), 0);
    int ret = blkdebug_check_request(bs, offset, bytes,
                                     BLKDEBUG_IO_TYPE_READ);
    IOVector part;

    if (ret < 0) {
        return ret;
    }
    /* "align" may round a request up past the child's end: zeroes. */
    iovector_memset(qiov, n, 0, bytes - n);
    if (n == 0) {
        return 0;
    }
    iovector_init_slice(&part, qiov, 0, n);
    ret = bdrv_co_preadv(bs->file, offset, n, &part, flags);
    iovector_destroy(&part);
    return ret;
}

static int coroutine_fn blkdebug_co_pwritev(BlockDriverState *bs,
                                            int64_t offset, int64_t bytes,
                                            IOVector *qiov,
                                            BdrvRequestFlags flags)
{
    int ret = blkdebug_check_request(bs, offset, bytes,
                                     BLKDEBUG_IO_TYPE_WRITE);

    return ret < 0 ? ret
                   : bdrv_co_pwritev(bs->file, offset, bytes, qiov, flags);
}

static int coroutine_fn blkdebug_co_pwrite_zeroes(BlockDriverState *bs,
                                                  int64_t offset,
                                                  int64_t bytes,
                                                  BdrvRequestFlags flags)
{
    int ret = blkdebug_check_request(bs, offset, bytes,
                                     BLKDEBUG_IO_TYPE_WRITE_ZEROES);

    return ret < 0 ? ret
                   : bdrv_co_pwrite_zeroes(bs->file, offset, bytes, flags);
}

static int coroutine_fn blkdebug_co_pdiscard(BlockDriverState *bs,
                                             int64_t offset, int64_t bytes)
{
    int ret = blkdebug_check_request(bs, offset, bytes,
                                     BLKDEBUG_IO_TYPE_DISCARD);

    return ret < 0 ? ret : bdrv_co_pdiscard(bs->file, offset, bytes);
}

/* The core flushes the child afterwards. */
static int coroutine_fn blkdebug_co_flush(BlockDriverState *bs)
{
    return blkdebug_check_request(bs, 0, 0, BLKDEBUG_IO_TYPE_FLUSH);
}

static int coroutine_fn blkdebug_co_block_status(BlockDriverState *bs,
                                                 int64_t offset,
                                                 int64_t bytes,
                                                 int64_t *pnum, int64_t *map,
                                                 BlockDriverState **file)
{
    int ret = blkdebug_check_request(bs, offset, bytes,
                                     BLKDEBUG_IO_TYPE_BLOCK_STATUS);

    if (ret < 0) {
        return ret;
    }
    *pnum = bytes;
    *map = offset;
    *file = bs->file->bs;
    return BDRV_BLOCK_RAW;
}

static int blkdebug_get_info(BlockDriverState *bs, BlockDriverInfo *bdi)
{
    return bdrv_get_info(bs->file->bs, bdi);
}

static const BlockDriver bdrv_blkdebug = {
    .format_name = "blkdebug",
    .can_reopen_read_only = true,
    .instance_size = sizeof(BDRVBlkdebugState),
    .is_filter = true,
    /* A format driver above allocates by writing past the end. */
    .has_variable_length = true,
    .bdrv_open = blkdebug_open,
    .bdrv_close = blkdebug_close,
    .bdrv_co_preadv = blkdebug_co_preadv,
    .bdrv_co_pwritev = blkdebug_co_pwritev,
    .bdrv_co_pwrite_zeroes = blkdebug_co_pwrite_zeroes,
    .bdrv_co_pdiscard = blkdebug_co_pdiscard,
    .bdrv_co_flush = blkdebug_co_flush,
    .bdrv_co_block_status = blkdebug_co_block_status,
    .bdrv_get_info = blkdebug_get_info,
    .bdrv_debug_event = blkdebug_debug_event,
    .supported_write_flags = BDRV_REQ_FUA,
    .supported_zero_flags = BDRV_REQ_FUA | BDRV_REQ_MAY_UNMAP |
                            BDRV_REQ_NO_FALLBACK,
};

static void __attribute__((constructor)) blkdebug_register(void)
{
    bdrv_register(&bdrv_blkdebug);
}
