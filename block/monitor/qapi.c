/*
 * Building the QAPI descriptions of nodes (query-named-block-nodes), as
 * QEMU 7.2 builds them: the node's own fields, then an ImageInfo with the
 * driver's facts (bdrv_get_info), its format-specific part, and the
 * backing chain, nested through backing-image unless the query is flat.
 */
#include "block/qapi.h"
#include "block/block_int.h"
#include "block/dirty-bitmap.h"

/* A format node's footprint is its file's. */
static void image_info_actual_size(BlockDriverState *bs, ImageInfo *info)
{
    BlockDriverState *storage = bs;

    while (!storage->drv->bdrv_get_allocated_file_size && storage->file) {
        storage = storage->file->bs;
    }
    if (storage->drv->bdrv_get_allocated_file_size) {
        int64_t size = storage->drv->bdrv_get_allocated_file_size(storage);

        if (size >= 0) {
            info->has_actual_size = true;
            info->actual_size = size;
        }
    }
}

/* What the image header says about its backing file. */
static void image_info_backing(BlockDriverState *bs, ImageInfo *info)
{
    if (!bs->backing_file) {
        return;
    }
    info->backing_filename = g_strdup(bs->backing_file);
    info->full_backing_filename = bs->backing
                                  ? g_strdup(bs->backing->bs->filename)
                                  : bdrv_full_backing_filename(bs);
    info->backing_filename_format = g_strdup(bs->backing_format);
}

static ImageInfo *bdrv_image_info(BlockDriverState *bs, bool flat)
{
    ImageInfo *info = g_new0(ImageInfo, 1);
    BlockDriverInfo bdi;

    info->filename = g_strdup(bs->filename);
    info->format = g_strdup(bs->drv->format_name);
    /*
     * QEMU 7.2 keeps node lengths in 512-byte sectors, rounding a file's
     * odd length up; report it the same way.
     */
    info->virtual_size = ALIGN_UP(bs->total_bytes, 512);
    image_info_actual_size(bs, info);
    if (bdrv_get_info(bs, &bdi) >= 0) {
        if (bdi.cluster_size) {
            info->has_cluster_size = true;
            info->cluster_size = bdi.cluster_size;
        }
        info->has_dirty_flag = true;
        info->dirty_flag = bdi.is_dirty;
    }
    if (bs->drv->bdrv_get_specific_info) {
        info->format_specific = bs->drv->bdrv_get_specific_info(bs);
    }
    image_info_backing(bs, info);
    if (!flat && bs->backing) {
        info->backing_image = bdrv_image_info(bs->backing->bs, false);
    }
    return info;
}

BlockDeviceInfo *bdrv_block_device_info(BlockDriverState *bs, bool flat)
{
    BlockDeviceInfo *info = g_new0(BlockDeviceInfo, 1);

    info->file = g_strdup(bs->filename);
    info->ro = bs->read_only;
    info->drv = g_strdup(bs->drv->format_name);
    info->node_name = g_strdup(bs->node_name);
    if (bs->backing) {
        info->backing_file = g_strdup(bs->backing->bs->filename);
    }
    /* QEMU 7.2 counts the chain only when it describes it (not flat). */
    info->backing_file_depth = flat ? 0 : bdrv_backing_file_depth(bs);
    info->encrypted = false;
    info->detect_zeroes = bs->detect_zeroes;
    info->image = bdrv_image_info(bs, flat);
    info->cache = g_new0(BlockdevCacheInfo, 1);
    info->cache->writeback = true;
    info->cache->direct = bs->cache_direct;
    info->cache->no_flush = bs->cache_no_flush;
    info->dirty_bitmaps = bdrv_query_dirty_bitmaps(bs);
    return info;
}
