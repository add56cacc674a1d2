/*
 * Definitions shared by every user of the block layer: permissions,
 * request flags and block-status bits.
 */
#ifndef BLOCK_BLOCK_COMMON_H
#define BLOCK_BLOCK_COMMON_H

#include "util/osdep.h"
#include "util/error.h"

typedef struct BlockDriver BlockDriver;
typedef struct BlockDriverState BlockDriverState;
typedef struct BdrvChild BdrvChild;
typedef struct BlockBackend BlockBackend;
typedef struct BdrvDirtyBitmap BdrvDirtyBitmap;

/*
 * Permissions a parent takes on a child node.  A parent also says which
 * permissions it lets other parents hold at the same time ("shared").
 */
enum {
    BLK_PERM_CONSISTENT_READ = 0x01,  /* reads return consistent data */
    BLK_PERM_WRITE           = 0x02,  /* may change what is visible */
    BLK_PERM_WRITE_UNCHANGED = 0x04,  /* writes that do not change data */
    BLK_PERM_RESIZE          = 0x08,
    BLK_PERM_ALL             = 0x0f,
};

/* Flags on an I/O request. */
typedef enum BdrvRequestFlags {
    BDRV_REQ_FUA         = 0x1,  /* written data is stable on return */
    BDRV_REQ_MAY_UNMAP   = 0x2,  /* write-zeroes may deallocate */
    BDRV_REQ_NO_FALLBACK = 0x4,  /* write-zeroes: -ENOTSUP unless fast */
    /*
     * Writes and write-zeroes: wait for every earlier overlapping request
     * of the node, and make every later one wait (io.c).  Never reaches
     * a driver.
     */
    BDRV_REQ_SERIALISING = 0x8,
    /*
     * Writes: store the data compressed (qcow2 compressed clusters).
     * Whole clusters only (the image's last one may be partial), and
     * only to a node whose driver lists the flag in
     * supported_write_flags; elsewhere the write fails with -ENOTSUP.
     */
    BDRV_REQ_WRITE_COMPRESSED = 0x10,
} BdrvRequestFlags;

/* Bits returned by block-status. */
enum {
    BDRV_BLOCK_DATA      = 0x01, /* reads come from stored data */
    BDRV_BLOCK_ZERO      = 0x02, /* reads return zeroes */
    BDRV_BLOCK_ALLOCATED = 0x04, /* this node (not a backing file) has it */
};

/* Buffers suitable for O_DIRECT on any node (aligned to 4 KiB). */
void *blk_memalign(size_t size);   /* aligned to 4096; free with blk_vfree */
void blk_vfree(void *ptr);

#endif /* BLOCK_BLOCK_COMMON_H */
