/*
 * qcow2 compressed clusters: decoding, off the main loop.
 *
 * A compressed cluster is stored as a byte run of the image file that
 * starts anywhere and is described by its L2 entry in whole 512-byte
 * sectors (qcow2_compressed_range()), so the run usually carries some
 * bytes past the end of the compressed stream.  Decoding therefore
 * succeeds once exactly one cluster has been produced, whatever follows
 * the stream; producing less is corruption (-EIO).
 *
 * Two encodings, chosen per image by the compression type header field:
 *
 *   zlib (0)  raw deflate, no zlib header or checksum, 4 KiB window
 *             (inflateInit2 with windowBits -12);
 *   zstd (1)  one zstd frame, decoded with the streaming API, which
 *             stops at the end of the frame.
 *
 * Decoding a cluster costs up to a few hundred microseconds for 2 MiB
 * clusters, too long to run on the main loop between I/O completions, so
 * it runs on a worker of the thread pool (thread_pool_co_submit()) while
 * the calling coroutine waits.  The job owns no state besides its
 * buffers, which the caller keeps alive until it returns.
 */
#include "block/qcow2/qcow2.h"
#include "util/aio.h"

#include <zlib.h>
#include <zstd.h>

typedef struct Qcow2DecompressJob {
    int type;
    uint8_t *dest;
    size_t dest_size;
    const uint8_t *src;
    size_t src_size;
} Qcow2DecompressJob;

static int qcow2_inflate(Qcow2DecompressJob *job)
{
    z_stream strm = {
        .next_in = (Bytef *)job->src,
        .avail_in = job->src_size,
        .next_out = job->dest,
        .avail_out = job->dest_size,
    };
    int ret;

    if (inflateInit2(&strm, -12) != Z_OK) {
        return -ENOMEM;
    }
    ret = inflate(&strm, Z_FINISH);
    inflateEnd(&strm);
    /*
     * Z_BUF_ERROR: the output is full before the stream's end marker,
     * which a writer may leave out; only a full cluster counts.
     */
    if ((ret == Z_STREAM_END || ret == Z_BUF_ERROR || ret == Z_OK) &&
        strm.avail_out == 0) {
        return 0;
    }
    return -EIO;
}

static int qcow2_zstd_decompress(Qcow2DecompressJob *job)
{
    ZSTD_DCtx *dctx = ZSTD_createDCtx();
    ZSTD_inBuffer in = { .src = job->src, .size = job->src_size };
    ZSTD_outBuffer out = { .dst = job->dest, .size = job->dest_size };
    int ret = -EIO;

    if (!dctx) {
        return -ENOMEM;
    }
    while (out.pos < out.size && in.pos < in.size) {
        size_t zret = ZSTD_decompressStream(dctx, &out, &in);

        if (ZSTD_isError(zret)) {
            break;
        }
        if (zret == 0 && out.pos < out.size) {
            break;                      /* the frame ended early */
        }
    }
    if (out.pos == out.size) {
        ret = 0;
    }
    ZSTD_freeDCtx(dctx);
    return ret;
}

static int qcow2_decompress_run(void *opaque)
{
    Qcow2DecompressJob *job = opaque;

    return job->type == 1 ? qcow2_zstd_decompress(job)
                          : qcow2_inflate(job);
}

int coroutine_fn qcow2_co_decompress(BlockDriverState *bs, void *dest,
                                     size_t dest_size, const void *src,
                                     size_t src_size)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2DecompressJob job = {
        .type = s->compression_type,
        .dest = dest,
        .dest_size = dest_size,
        .src = src,
        .src_size = src_size,
    };

    return thread_pool_co_submit(qcow2_decompress_run, &job);
}
