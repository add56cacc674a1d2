/*
 * qcow2 compressed clusters: encoding and decoding, off the main loop.
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
 *             (windowBits -12 both ways);
 *   zstd (1)  one zstd frame, decoded with the streaming API, which
 *             stops at the end of the frame; encoded in one call, which
 *             records the cluster size in the frame header.
 *
 * Encoding is asked to fit a buffer smaller than the cluster: a cluster
 * that does not shrink is -ENOSPC, and the caller stores it uncompressed.
 *
 * Coding a cluster costs up to a few hundred microseconds (decoding) or
 * milliseconds (encoding) for 2 MiB clusters, too long to run on the
 * main loop between I/O completions, so it runs on a worker of the
 * thread pool (thread_pool_co_submit()) while the calling coroutine
 * waits.  A job owns no state besides its buffers, which the caller
 * keeps alive until it returns.
 */
#include "block/qcow2/qcow2.h"
#include "util/aio.h"

#include <zlib.h>
#include <zstd.h>
#include <zstd_errors.h>

/* One encoding or decoding of @src into @dest, on a worker thread. */
typedef struct Qcow2CodecJob {
    int type;                       /* the image's compression type */
    uint8_t *dest;
    size_t dest_size;
    const uint8_t *src;
    size_t src_size;
} Qcow2CodecJob;

/* Deflate settings: QEMU's, which its reader and ours expect. */
enum {
    QCOW2_DEFLATE_WINDOW_BITS = -12,
    QCOW2_DEFLATE_MEM_LEVEL = 9,
};

static int qcow2_inflate(Qcow2CodecJob *job)
{
    z_stream strm = {
        .next_in = (Bytef *)job->src,
        .avail_in = job->src_size,
        .next_out = job->dest,
        .avail_out = job->dest_size,
    };
    int ret;

    if (inflateInit2(&strm, QCOW2_DEFLATE_WINDOW_BITS) != Z_OK) {
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

static int qcow2_zstd_decompress(Qcow2CodecJob *job)
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
    Qcow2CodecJob *job = opaque;

    return job->type == 1 ? qcow2_zstd_decompress(job)
                          : qcow2_inflate(job);
}

/* The compressed size, or -ENOSPC if it does not fit into @dest. */
static int qcow2_deflate(Qcow2CodecJob *job)
{
    z_stream strm = {
        .next_in = (Bytef *)job->src,
        .avail_in = job->src_size,
        .next_out = job->dest,
        .avail_out = job->dest_size,
    };
    int ret;

    if (deflateInit2(&strm, Z_DEFAULT_COMPRESSION, Z_DEFLATED,
                     QCOW2_DEFLATE_WINDOW_BITS, QCOW2_DEFLATE_MEM_LEVEL,
                     Z_DEFAULT_STRATEGY) != Z_OK) {
        return -ENOMEM;
    }
    ret = deflate(&strm, Z_FINISH);
    deflateEnd(&strm);
    /* Anything short of the whole stream means the output was full. */
    return ret == Z_STREAM_END ? (int)(job->dest_size - strm.avail_out)
                               : -ENOSPC;
}

static int qcow2_zstd_compress(Qcow2CodecJob *job)
{
    size_t ret = ZSTD_compress(job->dest, job->dest_size, job->src,
                               job->src_size, ZSTD_CLEVEL_DEFAULT);

    if (ZSTD_isError(ret)) {
        return ZSTD_getErrorCode(ret) == ZSTD_error_dstSize_tooSmall
               ? -ENOSPC : -EIO;
    }
    return ret;
}

static int qcow2_compress_run(void *opaque)
{
    Qcow2CodecJob *job = opaque;

    return job->type == 1 ? qcow2_zstd_compress(job) : qcow2_deflate(job);
}

/* Run @run on a worker thread with the image's compression type. */
static int coroutine_fn qcow2_co_codec(BlockDriverState *bs,
                                       ThreadPoolFunc *run, void *dest,
                                       size_t dest_size, const void *src,
                                       size_t src_size)
{
    BDRVQcow2State *s = bs->opaque;
    Qcow2CodecJob job = {
        .type = s->compression_type,
        .dest = dest,
        .dest_size = dest_size,
        .src = src,
        .src_size = src_size,
    };

    return thread_pool_co_submit(run, &job);
}

int coroutine_fn qcow2_co_compress(BlockDriverState *bs, void *dest,
                                   size_t dest_size, const void *src,
                                   size_t src_size)
{
    return qcow2_co_codec(bs, qcow2_compress_run, dest, dest_size, src,
                          src_size);
}

int coroutine_fn qcow2_co_decompress(BlockDriverState *bs, void *dest,
                                     size_t dest_size, const void *src,
                                     size_t src_size)
{
    return qcow2_co_codec(bs, qcow2_decompress_run, dest, dest_size, src,
                          src_size);
}
