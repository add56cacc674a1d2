/*
 * A test-only command line front end to qcow2 bitmap storage: it opens
 * an image as a node, works on the node's dirty bitmaps (loaded at open,
 * stored at close: include/block/dirty-bitmap.h) and closes it again.
 * The iotest tests/qemu-iotests/test_qcow2_bitmaps.py runs it on an
 * image and then lets qemu-img validate the on-disk result; it reaches
 * cases (granularities, bit patterns) faster than QMP would.
 *
 *   qcow2-bitmap-tool [-r] IMAGE list
 *   qcow2-bitmap-tool [-r] IMAGE load NAME
 *   qcow2-bitmap-tool IMAGE store NAME GRANULARITY auto|manual [RANGES]
 *   qcow2-bitmap-tool IMAGE remove NAME
 *   qcow2-bitmap-tool IMAGE write OFFSET LENGTH
 *
 * RANGES is "all" or a comma-separated list of bit ranges FIRST-LAST
 * (inclusive); the default is an empty bitmap.  load prints the
 * granularity, the number of bits and the set bits as the same kind of
 * ranges; list prints one "name granularity in_use auto" line per
 * bitmap in the directory on disk.  store creates (or replaces) a
 * persistent bitmap, recording writes if "auto".  write writes LENGTH bytes of 0x5a at OFFSET through the
 * qcow2 node (a guest write).  -r opens the image read-only.  Errors go
 * to stderr with exit status 1.
 */
#include "block/qcow2-bitmap.h"
#include "block/dirty-bitmap.h"
#include "block/block-backend.h"
#include "qapi/qapi-types.h"

typedef struct Tool {
    const char *image;
    bool read_only;
    char **argv;
    int argc;
    int status;
} Tool;

static void print_ranges(const uint8_t *bits, uint64_t nbits)
{
    g_autoptr(GString) out = g_string_new(NULL);
    uint64_t i = 0;

    while (i < nbits) {
        uint64_t j;

        if (!(bits[i / 8] & (1U << (i % 8)))) {
            i++;
            continue;
        }
        for (j = i; j + 1 < nbits && (bits[(j + 1) / 8] &
                                      (1U << ((j + 1) % 8))); j++) {
            /* extend the run */
        }
        g_string_append_printf(out, "%s%" PRIu64 "-%" PRIu64,
                               out->len ? "," : "", i, j);
        i = j + 1;
    }
    printf("%s\n", out->len ? out->str : "none");
}

static bool parse_ranges(const char *spec, uint8_t *bits, uint64_t nbits,
                         Error **errp)
{
    g_auto(GStrv) parts = NULL;

    if (!strcmp(spec, "all")) {
        for (uint64_t i = 0; i < nbits; i++) {
            bits[i / 8] |= 1U << (i % 8);
        }
        return true;
    }
    parts = g_strsplit(spec, ",", -1);
    for (int k = 0; parts[k]; k++) {
        uint64_t a, b;

        if (sscanf(parts[k], "%" SCNu64 "-%" SCNu64, &a, &b) != 2 ||
            a > b || b >= nbits) {
            error_setg(errp, "bad range '%s'", parts[k]);
            return false;
        }
        for (uint64_t i = a; i <= b; i++) {
            bits[i / 8] |= 1U << (i % 8);
        }
    }
    return true;
}

static BdrvDirtyBitmap *stored_bitmap(BlockDriverState *bs, const char *name,
                                      Error **errp)
{
    BdrvDirtyBitmap *bitmap = bdrv_find_dirty_bitmap(bs, name);

    if (!bitmap) {
        error_setg(errp, "Bitmap '%s' not found in the image", name);
    }
    return bitmap;
}

static bool coroutine_fn run_command(Tool *t, BlockDriverState *bs, Error **errp)
{
    const char *cmd = t->argv[0];

    if (!strcmp(cmd, "list") && t->argc == 1) {
        GList *list = qcow2_list_bitmaps(bs);

        for (GList *l = list; l; l = l->next) {
            Qcow2StoredBitmap *info = l->data;

            printf("%s %" PRIu32 " %d %d\n", info->name, info->granularity,
                   info->in_use, info->auto_enabled);
        }
        g_list_free_full(list, (GDestroyNotify)qcow2_stored_bitmap_free);
        return true;
    }
    if (!strcmp(cmd, "load") && t->argc == 2) {
        BdrvDirtyBitmap *bitmap = stored_bitmap(bs, t->argv[1], errp);
        const HBitmap *hb = bitmap ? bdrv_dirty_bitmap_bits(bitmap) : NULL;
        g_autofree uint8_t *bits = NULL;
        uint32_t gran;

        if (!bitmap || !bdrv_dirty_bitmap_check(bitmap,
                                                BDRV_BITMAP_INCONSISTENT,
                                                errp)) {
            return false;
        }
        gran = hbitmap_granularity(hb);
        bits = g_malloc(hbitmap_serialized_bytes(hb));
        hbitmap_serialize_part(hb, bits, 0, hbitmap_serialized_bytes(hb));
        printf("%" PRIu32 " %" PRIu64 " ", gran,
               DIV_ROUND_UP((uint64_t)bs->total_bytes, gran));
        print_ranges(bits, DIV_ROUND_UP((uint64_t)bs->total_bytes, gran));
        return true;
    }
    if (!strcmp(cmd, "store") && (t->argc == 4 || t->argc == 5)) {
        uint64_t gran = g_ascii_strtoull(t->argv[2], NULL, 0);
        BdrvDirtyBitmap *old = bdrv_find_dirty_bitmap(bs, t->argv[1]);
        BdrvDirtyBitmap *bitmap;
        uint64_t nbits, nbytes;
        g_autofree uint8_t *bits = NULL;

        if (old) {
            if (!bdrv_co_remove_persistent_dirty_bitmap(bs, t->argv[1],
                                                        errp)) {
                return false;
            }
            bdrv_release_dirty_bitmap(old);
        }
        if (gran > UINT32_MAX ||
            !bdrv_can_store_new_dirty_bitmap(bs, t->argv[1], gran, errp)) {
            return false;
        }
        nbits = DIV_ROUND_UP((uint64_t)bs->total_bytes, gran);
        nbytes = DIV_ROUND_UP(nbits, 8) + 1;
        bits = g_malloc0(nbytes);
        if (t->argc == 5 && !parse_ranges(t->argv[4], bits, nbits, errp)) {
            return false;
        }
        bitmap = bdrv_create_dirty_bitmap(bs, gran, t->argv[1], errp);
        if (!bitmap) {
            return false;
        }
        bdrv_dirty_bitmap_deserialize_part(bitmap, bits, 0, nbytes - 1);
        bdrv_dirty_bitmap_set_persistence(bitmap, true);
        if (strcmp(t->argv[3], "auto")) {
            bdrv_disable_dirty_bitmap(bitmap);
        }
        return true;
    }
    if (!strcmp(cmd, "remove") && t->argc == 2) {
        BdrvDirtyBitmap *bitmap = stored_bitmap(bs, t->argv[1], errp);

        if (!bitmap || !bdrv_co_remove_persistent_dirty_bitmap(bs, t->argv[1],
                                                               errp)) {
            return false;
        }
        bdrv_release_dirty_bitmap(bitmap);
        return true;
    }
    if (!strcmp(cmd, "write") && t->argc == 3) {
        int64_t off = g_ascii_strtoll(t->argv[1], NULL, 0);
        int64_t len = g_ascii_strtoll(t->argv[2], NULL, 0);
        g_autofree uint8_t *buf = g_malloc(len);
        BlockBackend *blk = blk_new_with_bs(bs, "qcow2-bitmap-tool",
                                            BLK_PERM_CONSISTENT_READ |
                                            BLK_PERM_WRITE, BLK_PERM_ALL,
                                            errp);
        int ret;

        if (!blk) {
            return false;
        }
        memset(buf, 0x5a, len);
        ret = blk_co_pwrite(blk, off, len, buf, 0);
        blk_unref(blk);
        if (ret < 0) {
            error_setg_errno(errp, -ret, "write failed");
            return false;
        }
        return true;
    }
    error_setg(errp, "unknown command or wrong arguments: %s", cmd);
    return false;
}

static void coroutine_fn tool_entry(void *opaque)
{
    Tool *t = opaque;
    g_autoptr(BlockdevOptions) opts = g_new0(BlockdevOptions, 1);
    BlockdevRef *file = g_new0(BlockdevRef, 1);
    Error *err = NULL;
    BlockDriverState *bs;

    file->type = QTYPE_QDICT;
    file->u.definition.driver = BLOCKDEV_DRIVER_FILE;
    file->u.definition.u.file.filename = g_strdup(t->image);
    opts->driver = BLOCKDEV_DRIVER_QCOW2;
    opts->node_name = g_strdup("tool");
    opts->has_read_only = true;
    opts->read_only = t->read_only;
    opts->u.qcow2.file = file;
    bs = bdrv_open_blockdev(opts, false, &err);
    if (bs) {
        run_command(t, bs, &err);
    }
    if (err) {
        error_report_err(err);
        t->status = 1;
    }
    if (bs) {
        bdrv_unref(bs);
    }
}

int main(int argc, char **argv)
{
    Tool t = { 0 };
    int i = 1;

    if (argc > 1 && !strcmp(argv[1], "-r")) {
        t.read_only = true;
        i++;
    }
    if (argc - i < 2) {
        fprintf(stderr, "usage: %s [-r] IMAGE COMMAND [ARGS...]\n", argv[0]);
        return 2;
    }
    t.image = argv[i];
    t.argv = argv + i + 1;
    t.argc = argc - i - 1;
    co_run_sync(tool_entry, &t);
    return t.status;
}
