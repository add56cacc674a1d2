/*
 * Building the QAPI descriptions of nodes.
 */
#include "block/qapi.h"
#include "block/block_int.h"

static ImageInfo *bdrv_image_info(BlockDriverState *bs)
{
    ImageInfo *info = g_new0(ImageInfo, 1);
    BlockDriverState *storage = bs;

    info->filename = g_strdup(bs->filename);
    info->format = g_strdup(bs->drv->format_name);
    info->virtual_size = bs->total_bytes;
    /* A format node's footprint is its file's. */
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
    return info;
}

BlockDeviceInfo *bdrv_block_device_info(BlockDriverState *bs, bool flat)
{
    BlockDeviceInfo *info = g_new0(BlockDeviceInfo, 1);

    (void)flat;   /* no backing chains yet: flat and full views agree */
    info->file = g_strdup(bs->filename);
    info->ro = bs->read_only;
    info->drv = g_strdup(bs->drv->format_name);
    info->node_name = g_strdup(bs->node_name);
    info->encrypted = false;
    info->detect_zeroes = BLOCKDEV_DETECT_ZEROES_OPTIONS_OFF;
    info->image = bdrv_image_info(bs);
    info->cache = g_new0(BlockdevCacheInfo, 1);
    info->cache->writeback = true;
    info->cache->direct = bs->cache_direct;
    info->cache->no_flush = bs->cache_no_flush;
    return info;
}
