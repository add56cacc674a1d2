/*
 * libFuzzer harness for the NBD server.
 *
 * Each input is the byte stream a client sends: it is written into one
 * end of a socketpair whose other end the real server serves as an
 * accepted connection (nbd_server_add_client), then the write side is
 * shut down.  The harness runs the main loop, discarding what the server
 * sends, until the server closes the connection, so every input exercises
 * the handshake, the transmission phase and the teardown path.
 *
 * The exported node is a 1 MiB in-memory node (fuzz-mem.c), writable,
 * under the empty (default) export name, with both meta contexts, so that
 * short inputs reach every command.  A seed input is a recorded client
 * session (e.g. captured from qemu-io or nbdsh).
 *
 * Build with clang: -fsanitize=fuzzer,address and link against libblockd.
 */
#include "util/osdep.h"
#include "util/coroutine.h"
#include "util/main-loop.h"
#include "block/block_int.h"
#include "block/export.h"
#include "nbd/nbd.h"
#include "fuzz-mem.h"

#include <sys/socket.h>

#define FUZZ_DISK_SIZE (1 << 20)

static void coroutine_fn fuzz_setup_entry(void *opaque)
{
    char *sock_path = opaque;
    SocketAddress addr = {
        .type = SOCKET_ADDRESS_TYPE_UNIX,
        .u.q_unix.path = sock_path,
    };
    BlockExportOptions opts = {
        .type = BLOCK_EXPORT_TYPE_NBD,
        .id = (char *)"e0",
        .node_name = (char *)"fuzz0",
        .has_writable = true,
        .writable = true,
        .u.nbd.name = (char *)"",
        .u.nbd.description = (char *)"fuzz export",
        .u.nbd.has_allocation_depth = true,
        .u.nbd.allocation_depth = true,
    };

    g_autofree uint8_t *zeroes = g_malloc0(FUZZ_DISK_SIZE);

    fuzz_mem_open_node("fuzz0", zeroes, FUZZ_DISK_SIZE, FUZZ_DISK_SIZE);
    nbd_server_start(&addr, NULL, NULL, 0, &error_abort);
    blk_exp_add(&opts, &error_abort);
}

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    g_autofree char *dir = g_dir_make_tmp("fuzz-nbd-XXXXXX", NULL);
    g_autofree char *sock_path = NULL;

    g_assert(dir);
    sock_path = g_build_filename(dir, "nbd.sock", NULL);
    signal(SIGPIPE, SIG_IGN);
    co_run_sync(fuzz_setup_entry, sock_path);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t sink[64 * 1024];
    size_t written = 0;
    bool shut = false;
    int sv[2];

    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0) {
        abort();
    }
    fd_set_nonblocking(sv[1]);
    nbd_server_add_client(sv[0], &error_abort);

    for (;;) {
        ssize_t n;

        if (written < size) {
            n = write(sv[1], data + written, size - written);
            if (n > 0) {
                written += n;
            }
        }
        if (written == size && !shut) {
            shutdown(sv[1], SHUT_WR);
            shut = true;
        }
        n = read(sv[1], sink, sizeof(sink));
        if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR)) {
            break;      /* the server closed the connection */
        }
        main_loop_wait(false);
    }
    close(sv[1]);
    /* Let deferred work (bottom halves) of the teardown run. */
    while (main_loop_wait(false)) {
        /* nothing */
    }
    return 0;
}
