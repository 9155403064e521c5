/*
 * frame.c - parse and build frame headers of the TCP protocol (see frame.h).
 */
#include "frame.h"

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) << 32 | get32(p + 4);
}

static void put32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

long qk_frame_parse(const uint8_t *buf, size_t n, size_t max_payload, qk_frame *f,
                    const char **why)
{
    if (n < QK_FRAME_HEADER)
        return 0;
    /* Type, flags and reserved bytes first: a header that is wrong there
     * is garbage, whatever length it announces. */
    uint8_t type = buf[4];
    if (type == 0 || type > QK_FRAME_TYPE_MAX || buf[5] != 0 || buf[6] != 0 || buf[7] != 0) {
        *why = "unknown frame type or flags";
        return QK_FRAME_MALFORMED;
    }
    uint32_t len = get32(buf);
    if (len < QK_FRAME_HEADER - 4) {
        *why = "frame shorter than its header";
        return QK_FRAME_MALFORMED;
    }
    size_t payload = len - (QK_FRAME_HEADER - 4);
    if (payload > max_payload) {
        *why = "frame larger than the maximum message size";
        return QK_FRAME_TOO_BIG;
    }
    if (n < 4 + (size_t)len)
        return 0;
    f->type = type;
    f->id = get64(buf + 8);
    f->payload = buf + QK_FRAME_HEADER;
    f->len = payload;
    return (long)(4 + (size_t)len);
}

void qk_frame_header(uint8_t out[QK_FRAME_HEADER], uint8_t type, uint64_t id, size_t len)
{
    put32(out, (uint32_t)(len + QK_FRAME_HEADER - 4));
    out[4] = type;
    out[5] = out[6] = out[7] = 0;
    put32(out + 8, (uint32_t)(id >> 32));
    put32(out + 12, (uint32_t)id);
}
