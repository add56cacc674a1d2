/*
 * Streaming JSON parser with QEMU's syntax and error messages.
 *
 * Accepts RFC 8259 JSON plus QEMU's extensions: strings may be quoted
 * with ' as well as ", and \' is a valid escape.  Everything else is
 * strict: no trailing commas, no duplicate keys, no comments.  Values
 * are json-c objects; the JSON null is the NULL pointer, as in json-c.
 *
 * Strings are valid UTF-8 without NUL bytes: U+0000 (written \u0000)
 * is stored as the two bytes C0 80, as QEMU does ("modified UTF-8");
 * qapi_json_to_gstring() writes it back as \u0000.
 *
 * Integers are int64 if they fit, else uint64, else double.
 */
#ifndef UTIL_JSON_PARSER_H
#define UTIL_JSON_PARSER_H

#include "util/osdep.h"
#include "util/error.h"
#include <json-c/json.h>

/* Deepest nesting of arrays and objects (QEMU's limit) */
#define JSON_MAX_DEPTH          1024

/* Most tokens in one top-level value (QEMU's limit) */
#define JSON_MAX_TOKENS         (2 * 1024 * 1024)

/*
 * Most bytes in the tokens of one top-level value (whitespace does not
 * count).  A single token is capped by the same limit: strings are the
 * only tokens that grow large, and a smaller cap would only refuse
 * strings that QEMU accepts (its limit is 64 MiB).
 */
#define JSON_MAX_VALUE_SIZE     (16 * 1024 * 1024)
#define JSON_MAX_TOKEN_SIZE     JSON_MAX_VALUE_SIZE

typedef struct JsonStreamer JsonStreamer;

/*
 * Called once per complete top-level value and once per error, in input
 * order.  Exactly one of @value and @err is meaningful: on success @err
 * is NULL and @value is a new reference (NULL for the JSON null); on
 * failure @value is NULL and @err is set.  The callee owns both.
 */
typedef void JsonEmitFunc(void *opaque, json_object *value, Error *err);

/*
 * json_streamer_new:
 * @emit: called for each value or error
 * @opaque: passed to @emit
 *
 * Create a parser for a stream of JSON values, with optional whitespace
 * between them.
 *
 * Error recovery follows qemu-storage-daemon: after a syntax error in a
 * value, input is consumed up to the point where the value's brackets
 * balance (or one too many is closed), then one error is reported.
 * After a lexical error ("stray ..."), input is skipped up to the next
 * structural character ('{', '}', '[', ']', ',' or ':') or control
 * character other than tab, where lexing starts afresh.
 *
 * After a limit error (size, token count or depth), the rest of the line
 * is discarded without being stored, up to and including the next
 * newline.  So memory use is bounded by the limits above whatever the
 * input, and a client can always resynchronise by sending a newline.
 * (QEMU continues inside the unclosed structure instead.)
 */
JsonStreamer *json_streamer_new(JsonEmitFunc *emit, void *opaque);

/*
 * json_streamer_feed:
 * @buf, @len: the next @len bytes of input, in any split
 *
 * Parse the bytes, calling the emit callback for every value or error
 * they complete.  The result does not depend on how the input is split
 * into calls.  The callback must not call json_streamer_feed(),
 * json_streamer_flush() or json_streamer_free() on @s.
 */
void json_streamer_feed(JsonStreamer *s, const char *buf, size_t len);

/*
 * json_streamer_flush:
 *
 * End of input: complete a pending number or keyword, and report a value
 * left unfinished ("JSON parse error, premature EOI", or the first error
 * found in it).  The streamer is then ready for new input.
 */
void json_streamer_flush(JsonStreamer *s);

void json_streamer_free(JsonStreamer *s);
G_DEFINE_AUTOPTR_CLEANUP_FUNC(JsonStreamer, json_streamer_free)

/*
 * json_parse_string:
 * @str: JSON text (the argument of a command-line option)
 *
 * Parse @str, which must hold exactly one JSON value.  Returns a new
 * reference, or NULL with @errp set.  Since the JSON null is also NULL,
 * callers that accept any value must check @errp.
 */
json_object *json_parse_string(const char *str, Error **errp);

#endif /* UTIL_JSON_PARSER_H */
