/*
 * libFuzzer harness for the JSON parser that reads QMP input and JSON
 * command-line options.
 *
 * Each input is fed to a streamer in pieces whose sizes come from the
 * input's first byte, so the fuzzer also explores how values are split
 * across socket reads; then the same bytes go through the one-shot
 * parser.  Every emitted value is serialised again, which walks it.
 */
#include "util/osdep.h"
#include "util/error.h"
#include "util/json-parser.h"
#include "qapi/util.h"

static void fuzz_emit(void *opaque, json_object *value, Error *err)
{
    unsigned *count = opaque;

    (*count)++;
    if (value) {
        g_string_free(qapi_json_to_gstring(value, false), TRUE);
        json_object_put(value);
    }
    error_free(err);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    unsigned count = 0;
    size_t chunk = size ? (data[0] % 16) + 1 : 1;
    JsonStreamer *streamer = json_streamer_new(fuzz_emit, &count);
    g_autofree char *str = g_strndup((const char *)data, size);
    json_object *value;

    for (size_t off = 0; off < size; off += chunk) {
        json_streamer_feed(streamer, (const char *)data + off,
                           MIN(chunk, size - off));
    }
    json_streamer_flush(streamer);
    json_streamer_free(streamer);

    value = json_parse_string(str, NULL);
    if (value) {
        json_object_put(value);
    }
    return 0;
}
