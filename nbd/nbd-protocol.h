/*
 * NBD wire protocol: constants and on-the-wire layouts.
 *
 * Everything here comes from the public protocol description
 * (NetworkBlockDevice/nbd, doc/proto.md).  All multi-byte fields travel in
 * network byte order; the packed structs below describe the layout only,
 * and code must convert with the helpers at the end of this file.
 *
 * The header has no dependency on the rest of blockd so that unit tests
 * and the fuzzer can build requests with it.
 */
#ifndef NBD_NBD_PROTOCOL_H
#define NBD_NBD_PROTOCOL_H

#include <stdint.h>
#include <string.h>
#include <endian.h>

/* Handshake magics. */
#define NBD_MAGIC                   UINT64_C(0x4e42444d41474943) /* NBDMAGIC */
#define NBD_OPTS_MAGIC              UINT64_C(0x49484156454f5054) /* IHAVEOPT */
#define NBD_REP_MAGIC               UINT64_C(0x0003e889045565a9)

/* Handshake flags (server, 16 bits) and client flags (32 bits). */
#define NBD_FLAG_FIXED_NEWSTYLE     (1u << 0)
#define NBD_FLAG_NO_ZEROES          (1u << 1)
#define NBD_FLAG_C_FIXED_NEWSTYLE   NBD_FLAG_FIXED_NEWSTYLE
#define NBD_FLAG_C_NO_ZEROES        NBD_FLAG_NO_ZEROES

/* Options. */
#define NBD_OPT_EXPORT_NAME         1
#define NBD_OPT_ABORT               2
#define NBD_OPT_LIST                3
#define NBD_OPT_PEEK_EXPORT         4
#define NBD_OPT_STARTTLS            5
#define NBD_OPT_INFO                6
#define NBD_OPT_GO                  7
#define NBD_OPT_STRUCTURED_REPLY    8
#define NBD_OPT_LIST_META_CONTEXT   9
#define NBD_OPT_SET_META_CONTEXT    10
#define NBD_OPT_EXTENDED_HEADERS    11

/* Option replies. */
#define NBD_REP_ACK                 1
#define NBD_REP_SERVER              2
#define NBD_REP_INFO                3
#define NBD_REP_META_CONTEXT        4
#define NBD_REP_FLAG_ERROR          (1u << 31)
#define NBD_REP_ERR_UNSUP           (NBD_REP_FLAG_ERROR | 1)
#define NBD_REP_ERR_POLICY          (NBD_REP_FLAG_ERROR | 2)
#define NBD_REP_ERR_INVALID         (NBD_REP_FLAG_ERROR | 3)
#define NBD_REP_ERR_PLATFORM        (NBD_REP_FLAG_ERROR | 4)
#define NBD_REP_ERR_TLS_REQD        (NBD_REP_FLAG_ERROR | 5)
#define NBD_REP_ERR_UNKNOWN         (NBD_REP_FLAG_ERROR | 6)
#define NBD_REP_ERR_SHUTDOWN        (NBD_REP_FLAG_ERROR | 7)
#define NBD_REP_ERR_BLOCK_SIZE_REQD (NBD_REP_FLAG_ERROR | 8)
#define NBD_REP_ERR_TOO_BIG         (NBD_REP_FLAG_ERROR | 9)

/* Information types in NBD_REP_INFO (and requested by INFO/GO). */
#define NBD_INFO_EXPORT             0
#define NBD_INFO_NAME               1
#define NBD_INFO_DESCRIPTION        2
#define NBD_INFO_BLOCK_SIZE         3

/* Transmission flags (16 bits). */
#define NBD_FLAG_HAS_FLAGS          (1u << 0)
#define NBD_FLAG_READ_ONLY          (1u << 1)
#define NBD_FLAG_SEND_FLUSH         (1u << 2)
#define NBD_FLAG_SEND_FUA           (1u << 3)
#define NBD_FLAG_ROTATIONAL         (1u << 4)
#define NBD_FLAG_SEND_TRIM          (1u << 5)
#define NBD_FLAG_SEND_WRITE_ZEROES  (1u << 6)
#define NBD_FLAG_SEND_DF            (1u << 7)
#define NBD_FLAG_CAN_MULTI_CONN     (1u << 8)
#define NBD_FLAG_SEND_RESIZE        (1u << 9)
#define NBD_FLAG_SEND_CACHE         (1u << 10)
#define NBD_FLAG_SEND_FAST_ZERO     (1u << 11)

/* Requests. */
#define NBD_REQUEST_MAGIC           0x25609513u

#define NBD_CMD_FLAG_FUA            (1u << 0)
#define NBD_CMD_FLAG_NO_HOLE        (1u << 1)
#define NBD_CMD_FLAG_DF             (1u << 2)
#define NBD_CMD_FLAG_REQ_ONE        (1u << 3)
#define NBD_CMD_FLAG_FAST_ZERO      (1u << 4)

#define NBD_CMD_READ                0
#define NBD_CMD_WRITE               1
#define NBD_CMD_DISC                2
#define NBD_CMD_FLUSH               3
#define NBD_CMD_TRIM                4
#define NBD_CMD_CACHE               5
#define NBD_CMD_WRITE_ZEROES        6
#define NBD_CMD_BLOCK_STATUS        7

/* Replies. */
#define NBD_SIMPLE_REPLY_MAGIC      0x67446698u
#define NBD_STRUCTURED_REPLY_MAGIC  0x668e33efu

#define NBD_REPLY_FLAG_DONE         (1u << 0)

#define NBD_REPLY_TYPE_NONE         0
#define NBD_REPLY_TYPE_OFFSET_DATA  1
#define NBD_REPLY_TYPE_OFFSET_HOLE  2
#define NBD_REPLY_TYPE_BLOCK_STATUS 5
#define NBD_REPLY_TYPE_ERROR        ((1u << 15) + 1)
#define NBD_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* base:allocation status bits. */
#define NBD_STATE_HOLE              (1u << 0)
#define NBD_STATE_ZERO              (1u << 1)
/* qemu:dirty-bitmap:NAME */
#define NBD_STATE_DIRTY             (1u << 0)

/* Error values carried in replies (not the host's errno values). */
#define NBD_SUCCESS                 0
#define NBD_EPERM                   1
#define NBD_EIO                     5
#define NBD_ENOMEM                  12
#define NBD_EINVAL                  22
#define NBD_ENOSPC                  28
#define NBD_EOVERFLOW               75
#define NBD_ENOTSUP                 95
#define NBD_ESHUTDOWN               108

/* Limits. */
#define NBD_DEFAULT_PORT            10809
#define NBD_MAX_STRING_SIZE         4096        /* names, descriptions */
#define NBD_MAX_PAYLOAD_SIZE        (32u << 20) /* READ and WRITE */

/* The newstyle greeting the server sends first. */
typedef struct __attribute__((packed)) NBDGreeting {
    uint64_t magic;             /* NBD_MAGIC */
    uint64_t opts_magic;        /* NBD_OPTS_MAGIC */
    uint16_t handshake_flags;
} NBDGreeting;

typedef struct __attribute__((packed)) NBDOptionHeader {
    uint64_t magic;             /* NBD_OPTS_MAGIC */
    uint32_t option;
    uint32_t length;            /* of the data that follows */
} NBDOptionHeader;

typedef struct __attribute__((packed)) NBDOptionReply {
    uint64_t magic;             /* NBD_REP_MAGIC */
    uint32_t option;
    uint32_t type;
    uint32_t length;            /* of the data that follows */
} NBDOptionReply;

/*
 * Reply to NBD_OPT_EXPORT_NAME, followed by 124 zero bytes unless the
 * client set NBD_FLAG_C_NO_ZEROES.
 */
typedef struct __attribute__((packed)) NBDExportNameReply {
    uint64_t size;
    uint16_t flags;
} NBDExportNameReply;

typedef struct __attribute__((packed)) NBDRequestWire {
    uint32_t magic;             /* NBD_REQUEST_MAGIC */
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint64_t offset;
    uint32_t length;
} NBDRequestWire;

typedef struct __attribute__((packed)) NBDSimpleReply {
    uint32_t magic;             /* NBD_SIMPLE_REPLY_MAGIC */
    uint32_t error;
    uint64_t cookie;
} NBDSimpleReply;

typedef struct __attribute__((packed)) NBDStructuredReply {
    uint32_t magic;             /* NBD_STRUCTURED_REPLY_MAGIC */
    uint16_t flags;
    uint16_t type;
    uint64_t cookie;
    uint32_t length;            /* of the payload that follows */
} NBDStructuredReply;

typedef struct __attribute__((packed)) NBDExtent {
    uint32_t length;
    uint32_t flags;
} NBDExtent;

_Static_assert(sizeof(NBDGreeting) == 18, "greeting layout");
_Static_assert(sizeof(NBDOptionHeader) == 16, "option header layout");
_Static_assert(sizeof(NBDOptionReply) == 20, "option reply layout");
_Static_assert(sizeof(NBDRequestWire) == 28, "request layout");
_Static_assert(sizeof(NBDSimpleReply) == 16, "simple reply layout");
_Static_assert(sizeof(NBDStructuredReply) == 20, "structured reply layout");

/* Unaligned big-endian accessors, for parsing option payloads. */
static inline uint16_t nbd_ld16(const void *p)
{
    uint16_t v;

    memcpy(&v, p, sizeof(v));
    return be16toh(v);
}

static inline uint32_t nbd_ld32(const void *p)
{
    uint32_t v;

    memcpy(&v, p, sizeof(v));
    return be32toh(v);
}

static inline uint64_t nbd_ld64(const void *p)
{
    uint64_t v;

    memcpy(&v, p, sizeof(v));
    return be64toh(v);
}

static inline void nbd_st16(void *p, uint16_t v)
{
    v = htobe16(v);
    memcpy(p, &v, sizeof(v));
}

static inline void nbd_st32(void *p, uint32_t v)
{
    v = htobe32(v);
    memcpy(p, &v, sizeof(v));
}

static inline void nbd_st64(void *p, uint64_t v)
{
    v = htobe64(v);
    memcpy(p, &v, sizeof(v));
}

#endif /* NBD_NBD_PROTOCOL_H */
