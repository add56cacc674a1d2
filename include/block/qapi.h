/*
 * Describing nodes in QMP terms (query-named-block-nodes).
 */
#ifndef BLOCK_QAPI_H
#define BLOCK_QAPI_H

#include "block/block-common.h"
#include "qapi/qapi-types.h"

/*
 * The BlockDeviceInfo of @bs.  Unless @flat, the image information
 * includes the backing chain.
 */
BlockDeviceInfo *bdrv_block_device_info(BlockDriverState *bs, bool flat);

#endif /* BLOCK_QAPI_H */
