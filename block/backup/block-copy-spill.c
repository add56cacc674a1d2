/*
 * The spill file of block-copy write-behind, a blockd extension
 * (BlockCopyOptions.write_behind_spill_bytes; docs/devel/block-copy.rst).
 *
 * When the write-behind memory is taken, a task going behind parks its
 * old data here instead and frees its buffer; its target write reads the
 * data back later (block-copy-behind.c).  This file holds the file and
 * its space, nothing about tasks.
 *
 * The file has no name: it is opened with O_TMPFILE, or, where the file
 * system lacks it, created and unlinked at once, so that nothing is left
 * behind after a crash.  Nothing in it needs to survive the process, so
 * it is never flushed.  It grows (sparse) up to the highest byte used,
 * at most its size, and goes when the block-copy state is freed.
 *
 * Space: a list of the free extents, sorted by offset, never two of them
 * adjacent.  An allocation takes the start of the first extent large
 * enough (first fit); a release puts its extent back and merges it with
 * the neighbours it touches.  All sizes are whole units (the copy
 * cluster), so that extents stay aligned.  A task that finds no extent
 * large enough does not spill, even if the free space in pieces would
 * hold it: it waits for its target write, as when the spill is full.
 *
 * I/O goes through the daemon's I/O engine (util/aio.h), so that the main
 * loop never blocks on the file system.
 */
#include "block/backup/block-copy-int.h"
#include "util/aio.h"

#include <fcntl.h>

typedef struct SpillExtent {
    int64_t offset;
    int64_t bytes;
} SpillExtent;

struct BlockCopySpill {
    int fd;
    int64_t unit;                   /* every extent is whole units */
    GList *free_extents;            /* SpillExtent *, sorted, apart */
};

/*
 * An unnamed file in @dir: O_TMPFILE, or a named file unlinked at once
 * when the file system has no O_TMPFILE (EOPNOTSUPP; EISDIR from kernels
 * that do not know the flag).
 */
static int block_copy_spill_open(const char *dir, Error **errp)
{
    g_autofree char *path = NULL;
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);

    if (fd >= 0) {
        return fd;
    }
    if (errno == EOPNOTSUPP || errno == EISDIR) {
        path = g_build_filename(dir, "blockd-spill-XXXXXX", NULL);
        fd = g_mkstemp_full(path, O_RDWR | O_CLOEXEC, 0600);
        if (fd >= 0) {
            unlink(path);
            return fd;
        }
    }
    error_setg_errno(errp, errno, "Could not create a write-behind spill "
                     "file in '%s'", dir);
    return -1;
}

BlockCopySpill *block_copy_spill_new(const char *dir, int64_t bytes,
                                     int64_t unit, Error **errp)
{
    BlockCopySpill *spill;
    SpillExtent *all;
    int fd;

    g_assert(unit > 0 && bytes >= unit);
    fd = block_copy_spill_open(dir, errp);
    if (fd < 0) {
        return NULL;
    }
    spill = g_new0(BlockCopySpill, 1);
    spill->fd = fd;
    spill->unit = unit;
    all = g_new(SpillExtent, 1);
    *all = (SpillExtent) { .offset = 0,
                           .bytes = ALIGN_DOWN(bytes, unit) };
    spill->free_extents = g_list_append(NULL, all);
    return spill;
}

void block_copy_spill_free(BlockCopySpill *spill)
{
    if (!spill) {
        return;
    }
    close(spill->fd);
    g_list_free_full(spill->free_extents, g_free);
    g_free(spill);
}

int64_t block_copy_spill_alloc(BlockCopySpill *spill, int64_t bytes)
{
    bytes = ALIGN_UP(bytes, spill->unit);
    for (GList *l = spill->free_extents; l; l = l->next) {
        SpillExtent *e = l->data;
        int64_t offset = e->offset;

        if (e->bytes < bytes) {
            continue;
        }
        e->offset += bytes;
        e->bytes -= bytes;
        if (e->bytes == 0) {
            g_free(e);
            spill->free_extents = g_list_delete_link(spill->free_extents,
                                                     l);
        }
        return offset;
    }
    return -ENOSPC;
}

void block_copy_spill_release(BlockCopySpill *spill, int64_t offset,
                              int64_t bytes)
{
    GList *next = spill->free_extents;
    GList *prev = NULL;
    SpillExtent *e;

    bytes = ALIGN_UP(bytes, spill->unit);
    while (next && ((SpillExtent *)next->data)->offset < offset) {
        prev = next;
        next = next->next;
    }
    if (prev) {
        e = prev->data;
        g_assert(e->offset + e->bytes <= offset);
        if (e->offset + e->bytes == offset) {
            /* Grow the extent before; perhaps it now touches the next. */
            e->bytes += bytes;
            if (next && ((SpillExtent *)next->data)->offset ==
                        e->offset + e->bytes) {
                e->bytes += ((SpillExtent *)next->data)->bytes;
                g_free(next->data);
                spill->free_extents =
                    g_list_delete_link(spill->free_extents, next);
            }
            return;
        }
    }
    if (next) {
        e = next->data;
        g_assert(offset + bytes <= e->offset);
        if (offset + bytes == e->offset) {
            e->offset = offset;
            e->bytes += bytes;
            return;
        }
    }
    e = g_new(SpillExtent, 1);
    *e = (SpillExtent) { .offset = offset, .bytes = bytes };
    spill->free_extents = g_list_insert_before(spill->free_extents, next, e);
}

/* All of [@offset, +@bytes), resubmitting the rest after a short one. */
static int coroutine_fn block_copy_spill_transfer(BlockCopySpill *spill,
                                                  AioOp op, int64_t offset,
                                                  void *buf, int64_t bytes)
{
    int64_t done = 0;

    while (done < bytes) {
        AioRequest req = {
            .op = op, .fd = spill->fd, .buf = (uint8_t *)buf + done,
            .len = bytes - done, .offset = offset + done,
        };
        ssize_t n = aio_co_submit(&req);

        if (n == -EINTR || n == -EAGAIN) {
            continue;
        }
        if (n < 0) {
            return n;
        }
        if (n == 0) {
            /* A write that made no progress, or a read past our data. */
            return -EIO;
        }
        done += n;
    }
    return 0;
}

int coroutine_fn block_copy_spill_pwrite(BlockCopySpill *spill,
                                         int64_t offset, void *buf,
                                         int64_t bytes)
{
    return block_copy_spill_transfer(spill, AIO_OP_WRITE, offset, buf,
                                     bytes);
}

int coroutine_fn block_copy_spill_pread(BlockCopySpill *spill,
                                        int64_t offset, void *buf,
                                        int64_t bytes)
{
    return block_copy_spill_transfer(spill, AIO_OP_READ, offset, buf,
                                     bytes);
}
