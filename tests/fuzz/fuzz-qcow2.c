/*
 * libFuzzer harness for the qcow2 driver: the input is the image file.
 *
 * Each input becomes an in-memory node (fuzz-mem.c) that may grow to
 * 16 MiB; a qcow2 node is opened on it with no backing file (a fuzzed
 * header must never make us open a path it names).  If the open
 * succeeds, the harness reads the first 4 MiB of the virtual disk in
 * uneven pieces, asks for block status, then writes, zeroes and
 * discards a little at offsets taken from the input, and closes the node
 * (which flushes the metadata caches).  Every step may fail; none may
 * crash, hang or leak.
 */
#include "util/osdep.h"
#include "util/coroutine.h"
#include "util/main-loop.h"
#include "block/block_int.h"
#include "block/block-backend.h"
#include "qapi/qmp-option.h"
#include "fuzz-mem.h"

enum {
    FUZZ_MAX_FILE = 16 << 20,
    FUZZ_READ_LIMIT = 4 << 20,
};

typedef struct FuzzRun {
    const uint8_t *data;
    size_t size;
} FuzzRun;

static void coroutine_fn fuzz_exercise(BlockBackend *blk, const FuzzRun *run)
{
    int64_t len = MIN(blk_getlength(blk), FUZZ_READ_LIMIT);
    g_autofree uint8_t *buf = g_malloc(65536 + 511);
    uint64_t seed = run->size > 8 ? ((const uint64_t *)run->data)[0] : 1;
    int64_t pnum;

    for (int64_t off = 0; off < len; off += 65536 + 511) {
        int64_t n = MIN(65536 + 511, len - off);

        blk_co_pread(blk, off, n, buf, 0);
        blk_co_block_status(blk, off, n, &pnum, NULL);
    }
    if (len <= 0) {
        return;
    }
    memset(buf, 0xa5, 65536);
    blk_co_pwrite(blk, seed % len, MIN(4096 + 7, len - seed % len), buf, 0);
    blk_co_pwrite_zeroes(blk, (seed >> 20) % len,
                         MIN(65536, len - (seed >> 20) % len),
                         BDRV_REQ_MAY_UNMAP);
    blk_co_pdiscard(blk, (seed >> 40) % len,
                    MIN(131072, len - (seed >> 40) % len));
    blk_co_pread(blk, 0, MIN(65536, len), buf, 0);
    blk_co_flush(blk);
}

static void coroutine_fn fuzz_entry(void *opaque)
{
    const FuzzRun *run = opaque;
    BlockDriverState *file, *qcow2;
    g_autoptr(BlockdevOptions) opts = NULL;
    BlockBackend *blk;

    file = fuzz_mem_open_node("img", run->data, run->size, FUZZ_MAX_FILE);
    opts = qmp_option_parse_BlockdevOptions(
        "{\"driver\": \"qcow2\", \"node-name\": \"q\", \"file\": \"img\","
        " \"backing\": null}", NULL, &error_abort);
    qcow2 = bdrv_open_blockdev(opts, false, NULL);
    if (qcow2) {
        blk = blk_new_with_bs(qcow2, "fuzzer", BLK_PERM_CONSISTENT_READ |
                              BLK_PERM_WRITE, BLK_PERM_ALL, NULL);
        if (blk) {
            fuzz_exercise(blk, run);
            blk_unref(blk);
        }
        bdrv_unref(qcow2);
    }
    bdrv_unref(file);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FuzzRun run = { .data = data, .size = size };

    co_run_sync(fuzz_entry, &run);
    return 0;
}
