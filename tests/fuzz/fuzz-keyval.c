/*
 * libFuzzer harness for command-line option parsing: the keyval parser
 * and the keyval-mode input visitor, through the same entry point
 * --blockdev uses.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "qapi/qmp-option.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    g_autofree char *arg = g_strndup((const char *)data, size);
    BlockdevOptions *opts;

    opts = qmp_option_parse_BlockdevOptions(arg, "driver", NULL);
    qapi_free_BlockdevOptions(opts);
    return 0;
}
