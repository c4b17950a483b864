/* pcapng: SHB (either byte order, several sections), IDB (if_tsresol, if_tsoffset), EPB,
 * SPB, obsolete PB; every other block is skipped. Packets come out as classic records with
 * nanosecond timestamps. Runs without the GIL. */
#include "reader.h"
#include <stdlib.h>


#define BT_SHB 0x0A0D0D0Au
#define BT_IDB 1u
#define BT_PB 2u
#define BT_SPB 3u
#define BT_NRB 4u
#define BT_ISB 5u
#define BT_EPB 6u
#define BT_SJE 9u
#define BT_DSB 10u
#define BT_CB 0x00000BADu
#define BT_CB_NOCOPY 0x40000BADu
#define BOM 0x1A2B3C4Du

static int known_block(uint32_t t)
{
    return t == BT_SHB || t == BT_IDB || t == BT_PB || t == BT_SPB || t == BT_NRB ||
           t == BT_ISB || t == BT_EPB || t == BT_SJE || t == BT_DSB || t == BT_CB ||
           t == BT_CB_NOCOPY;
}

/* block length limit: libpcap's 16 MiB, or an EPB with a maximal packet of a link type
 * seen in an IDB plus 128 KiB of options (MAX_BLOCKSIZE_FOR_SNAPLEN) */
static void raise_max_block(PwReader *r, uint32_t maxcap)
{
    uint32_t m = 28u + maxcap + 131072u + 4u;
    if (m > r->max_block)
        r->max_block = m;
}

/* Convert a pcapng timestamp to (seconds mod 2^32, nanoseconds). Resolutions finer than
 * 1 ns are truncated to ns. Returns 0 when the seconds do not fit the classic 32-bit field. */
static int ng_time(const pw_iface *f, uint64_t t, uint32_t *sec_out, uint32_t *ns_out)
{
    uint64_t sec, ns;
    if (f->is_bin) {
        unsigned sh = f->exp;
        uint64_t frac;
        if (sh >= 64) {
            sec = 0;
            frac = t;
        } else {
            sec = sh ? t >> sh : t;
            frac = sh ? t & ((1ULL << sh) - 1) : 0;
        }
        ns = (uint64_t)(((unsigned __int128)frac * 1000000000u) >> sh);
    } else if (f->exp <= 19) {
        uint64_t res = 1;
        for (unsigned i = 0; i < f->exp; i++)
            res *= 10;
        sec = t / res;
        uint64_t frac = t % res;
        if (f->exp <= 9) {
            uint64_t mul = 1;
            for (unsigned i = f->exp; i < 9; i++)
                mul *= 10;
            ns = frac * mul;
        } else {
            uint64_t div = 1;
            for (unsigned i = 9; i < f->exp; i++)
                div *= 10;
            ns = frac / div;
        }
    } else { /* 10^-20 .. 10^-127: less than one second in 2^64 units; below 1 ns each */
        sec = 0;
        ns = 0;
        unsigned e = f->exp - 9;
        if (e <= 19) {
            uint64_t div = 1;
            for (unsigned i = 0; i < e; i++)
                div *= 10;
            ns = t / div;
        }
    }
    __int128 s = (__int128)sec + f->tsoffset;
    *sec_out = (uint32_t)(uint64_t)s;
    *ns_out = (uint32_t)ns;
    return s >= 0 && s <= (__int128)UINT32_MAX;
}

static void ng_idb(PwReader *r, const uint8_t *blk, uint32_t blen, uint64_t at, int sw)
{
    if (blen < 20) {
        pw_msg_add(&r->errors, at, "interface description block of %u bytes is too short "
                   "(20 at least); interface ignored", blen);
        return;
    }
    if (r->nifs >= PW_MAX_PCAPNG_INTERFACES) {
        pw_msg_add(&r->errors, at, "more than %u interfaces in one section; interface ignored",
                   PW_MAX_PCAPNG_INTERFACES);
        return;
    }
    if (r->nifs == r->ifs_cap) {
        uint32_t nc = r->ifs_cap ? r->ifs_cap * 2 : 8;
        pw_iface *v = realloc(r->ifs, (size_t)nc * sizeof(pw_iface));
        if (!v) {
            pw_msg_add(&r->errors, at, "out of memory for interface %u; interface ignored",
                       r->nifs);
            return;
        }
        r->ifs = v;
        r->ifs_cap = nc;
    }
    pw_iface f;
    f.linktype = pw_canonical_linktype(pw_rd16(sw, blk + 8));
    f.lclass = pw_link_class(f.linktype);
    f.maxcap = pw_max_snaplen_for_linktype(f.linktype);
    f.snaplen = pw_adjust_snaplen(f.linktype, pw_rd32(sw, blk + 12));
    f.is_bin = 0;
    f.exp = 6;
    f.tsoffset = 0;
    raise_max_block(r, f.maxcap);
    /* options: bounds-checked, malformed ones reported and ignored */
    uint32_t o = 16, end = blen - 4;
    int saw_res = 0, saw_off = 0;
    while (o < end) {
        if (end - o < 4) {
            pw_msg_add(&r->warnings, at, "interface %u: option header cut short; options ignored "
                       "from byte %u of the block", r->nifs, o);
            break;
        }
        uint16_t code = pw_rd16(sw, blk + o), olen = pw_rd16(sw, blk + o + 2);
        uint32_t padded = ((uint32_t)olen + 3u) & ~3u;
        if (padded > end - o - 4) {
            pw_msg_add(&r->warnings, at, "interface %u: option %u of %u bytes overruns the block; "
                       "options ignored from there", r->nifs, code, olen);
            break;
        }
        const uint8_t *v = blk + o + 4;
        if (code == 0)
            break;
        if (code == 9) { /* if_tsresol */
            if (olen != 1 || saw_res)
                pw_msg_add(&r->warnings, at, "interface %u: %s if_tsresol option ignored",
                           r->nifs, saw_res ? "repeated" : "malformed");
            else {
                saw_res = 1;
                f.is_bin = (v[0] & 0x80u) != 0;
                f.exp = v[0] & 0x7Fu;
                if ((f.is_bin && f.exp > 63) || (!f.is_bin && f.exp > 19))
                    pw_msg_add(&r->warnings, at, "interface %u: if_tsresol %s-%u is finer than "
                               "libpcap reads; timestamps are truncated to ns", r->nifs,
                               f.is_bin ? "2^" : "10^", f.exp);
            }
        } else if (code == 14) { /* if_tsoffset */
            if (olen != 8 || saw_off)
                pw_msg_add(&r->warnings, at, "interface %u: %s if_tsoffset option ignored",
                           r->nifs, saw_off ? "repeated" : "malformed");
            else {
                uint64_t raw = pw_le64(v);
                saw_off = 1;
                f.tsoffset = (int64_t)(sw ? __builtin_bswap64(raw) : raw);
            }
        }
        o += 4 + padded;
    }
    r->ifs[r->nifs++] = f;
}

/* A packet block (EPB/PB/SPB). Returns an EM_* code. */
static int ng_packet(PwReader *r, uint32_t type, const uint8_t *blk, uint32_t blen, uint64_t at,
                     int sw)
{
    uint32_t iface, cap, len, room;
    uint64_t t = 0;
    const uint8_t *data;
    const char *what = type == BT_EPB ? "enhanced packet block" :
                       type == BT_PB ? "packet block" : "simple packet block";
    if (type == BT_SPB) {
        if (blen < 16) {
            pw_msg_add(&r->errors, at, "%s of %u bytes is too short; skipped", what, blen);
            return EM_OK;
        }
        iface = 0;
        len = pw_rd32(sw, blk + 8);
        data = blk + 12;
        room = blen - 16;
        cap = len;
    } else {
        if (blen < 32) {
            pw_msg_add(&r->errors, at, "%s of %u bytes is too short; skipped", what, blen);
            return EM_OK;
        }
        iface = type == BT_EPB ? pw_rd32(sw, blk + 8) : pw_rd16(sw, blk + 8);
        t = ((uint64_t)pw_rd32(sw, blk + 12) << 32) | pw_rd32(sw, blk + 16);
        cap = pw_rd32(sw, blk + 20);
        len = pw_rd32(sw, blk + 24);
        data = blk + 28;
        room = blen - 32;
    }
    if (iface >= r->nifs) {
        pw_msg_add(&r->errors, at, "%s on interface %u, but the section has %u interface "
                   "description block(s); packet skipped", what, iface, r->nifs);
        return EM_OK;
    }
    const pw_iface *f = &r->ifs[iface];
    if (type == BT_SPB) {
        if (cap > f->snaplen)
            cap = f->snaplen;
        if (cap > room)
            cap = room;
    } else if (cap > room) {
        pw_msg_add(&r->errors, at, "%s: captured length %u exceeds the %u bytes of packet data "
                   "in the block; packet skipped", what, cap, room);
        return EM_OK;
    }
    if (cap > f->maxcap) {
        pw_msg_add(&r->errors, at, "invalid packet capture length %u, bigger than snaplen of %u; "
                   "packet skipped", cap, f->snaplen);
        return EM_OK;
    }
    uint32_t sec, ns;
    int in_range = ng_time(f, t, &sec, &ns);
    int rc = pw_emit(r, f->linktype, f->snaplen, 9, f->lclass, at, sec, ns, cap, len, data);
    if (rc != EM_OK)
        return rc;
    if (!in_range)
        pw_warn_count(r, W_TS_RANGE, at);
    if (cap > f->snaplen)
        pw_warn_count(r, W_CAPLEN_GT_SNAPLEN, at);
    if (cap > len)
        pw_warn_count(r, W_CAPLEN_GT_ORIGLEN, at);
    r->last_ts = (int64_t)sec * 1000000000LL + ns;
    r->have_last_ts = 1;
    return EM_OK;
}

/* Block framing at p: 1 valid (sets *type, *len, *sw), 0 invalid (error recorded unless
 * quiet), -1 need more data (*need), -2 invalid and fewer than 12 bytes left at the end. */
static int ng_frame(PwReader *r, const uint8_t *b, size_t n, size_t p, int final, int quiet,
                    uint32_t *type_out, uint32_t *len_out, int *sw_out, size_t *need)
{
    uint64_t at = r->consumed + p;
    size_t avail = n - p;
    if (avail < 12) {
        if (final)
            return -2;
        *need = 12;
        return -1;
    }
    uint32_t type = pw_le32(b + p);
    int sw = r->ng_swapped;
    if (type == BT_SHB) {
        uint32_t bom = pw_le32(b + p + 8);
        if (bom == BOM)
            sw = 0;
        else if (bom == __builtin_bswap32(BOM))
            sw = 1;
        else {
            if (!quiet)
                pw_msg_add(&r->errors, at, "section header block with a bad byte-order magic "
                           "0x%08x", bom);
            return 0;
        }
    } else {
        type = pw_rd32(sw, b + p);
    }
    uint32_t blen = pw_rd32(sw, b + p + 4);
    if (blen < 12 || blen % 4 != 0 || blen > r->max_block || (type == BT_SHB && blen < 28)) {
        if (!quiet)
            pw_msg_add(&r->errors, at, "block of type 0x%08x has an invalid length %u (%s)", type,
                       blen, blen % 4 ? "not a multiple of 4" :
                       blen > r->max_block ? "larger than the block size limit" : "too short");
        return 0;
    }
    if (avail < blen) {
        if (final) {
            if (!quiet)
                pw_msg_add(&r->errors, at, "block of type 0x%08x has a length of %u bytes, "
                           "larger than the rest of the file (%zu bytes)", type, blen, avail);
            return 0;
        }
        *need = blen;
        return -1;
    }
    uint32_t trail = pw_rd32(sw, b + p + blen - 4);
    if (trail != blen) {
        if (!quiet)
            pw_msg_add(&r->errors, at, "block of type 0x%08x: trailing length %u does not match "
                       "the leading length %u", type, trail, blen);
        return 0;
    }
    *type_out = type;
    *len_out = blen;
    *sw_out = sw;
    return 1;
}

/* A resync candidate: a known block type, consistent lengths, and sane fixed fields. */
static int ng_candidate(PwReader *r, const uint8_t *b, size_t n, size_t p, int final,
                        size_t *need)
{
    uint32_t type, blen;
    int sw;
    int v = ng_frame(r, b, n, p, final, 1, &type, &blen, &sw, need);
    if (v == -2)
        return 2;
    if (v <= 0)
        return v;
    if (!known_block(type))
        return 0;
    const uint8_t *blk = b + p;
    switch (type) {
    case BT_SHB:
        return pw_rd16(sw, blk + 12) == 1;
    case BT_IDB:
        return blen >= 20;
    case BT_EPB:
    case BT_PB: {
        if (blen < 32)
            return 0;
        uint32_t iface = type == BT_EPB ? pw_rd32(sw, blk + 8) : pw_rd16(sw, blk + 8);
        return iface < r->nifs && pw_rd32(sw, blk + 20) <= blen - 32;
    }
    case BT_SPB:
        return blen >= 16 && r->nifs > 0;
    default:
        return 1;
    }
}

size_t pw_parse_pcapng(PwReader *r, const uint8_t *b, size_t n, int final, int *status)
{
    size_t p = 0, need = 12;
    *status = ST_OK;
    r->hold = 0;
    for (;;) {
        if (r->resync) {
            int v;
            for (;;) {
                uint64_t abs = r->consumed + p;
                if (abs & 3u) {
                    size_t pad = 4 - (size_t)(abs & 3u);
                    p = n - p < pad ? n : p + pad;
                }
                v = ng_candidate(r, b, n, p, final, &need);
                if (v)
                    break;
                p = n - p < 4 ? n : p + 4;
            }
            if (v < 0) {
                r->want = need;
                return p;
            }
            if (v == 2) {
                pw_end_resync(r, r->consumed + n, 0);
                r->want = 12;
                return n;
            }
            pw_end_resync(r, r->consumed + p, 1);
        }
        uint32_t type, blen;
        int sw;
        int v = ng_frame(r, b, n, p, final, 0, &type, &blen, &sw, &need);
        if (v == -1)
            break;
        if (v == -2) {
            if (n > p)
                pw_msg_add(&r->errors, r->consumed + p, "truncated block header: the file ends "
                           "%zu bytes into a block", n - p);
            r->want = 12;
            return n;
        }
        if (v == 0) {
            pw_start_resync(r, r->consumed + p, 0);
            p += 4;
            continue;
        }
        uint64_t at = r->consumed + p;
        const uint8_t *blk = b + p;
        if (type == BT_SHB) {
            uint16_t vmaj = pw_rd16(sw, blk + 12), vmin = pw_rd16(sw, blk + 14);
            if (vmaj != 1 || (vmin != 0 && vmin != 2))
                pw_msg_add(&r->warnings, at, "pcapng section version %u.%u (1.0 expected); read "
                           "as 1.0", vmaj, vmin);
            r->ng_swapped = sw;
            r->ng_have_shb = 1;
            r->nifs = 0;
        } else if (type == BT_IDB) {
            ng_idb(r, blk, blen, at, sw);
        } else if (type == BT_EPB || type == BT_PB || type == BT_SPB) {
            int rc = ng_packet(r, type, blk, blen, at, sw);
            if (rc != EM_OK) {
                *status = rc == EM_BREAK ? ST_BREAK : ST_NOMEM;
                r->want = blen;
                return p;
            }
        }
        p += blen;
    }
    r->want = need;
    return p;
}
