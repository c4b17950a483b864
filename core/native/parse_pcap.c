/* Classic pcap: file header and records, with resynchronisation after damage.
 * Runs without the GIL; touches only the PwReader and the buffer it is given. */
#include "reader.h"

#define NONE SIZE_MAX

#define MAGIC_US 0xA1B2C3D4u
#define MAGIC_NS 0xA1B23C4Du
#define MAGIC_KUZNETZOV 0xA1B2CD34u /* patched Linux libpcap: 24-byte record headers */
#define MAGIC_PCAPNG 0x0A0D0D0Au

static uint32_t bswap32(uint32_t v) { return __builtin_bswap32(v); }

size_t pw_parse_pcap_header(PwReader *r, const uint8_t *b, size_t n, int final)
{
    if (n < 4) {
        if (final) {
            if (r->total_in == 0)
                pw_msg_add(&r->errors, 0, "empty input (0 bytes): not a pcap or pcapng file");
            else
                pw_msg_add(&r->errors, 0,
                           "truncated file header: only %zu bytes, not a pcap or pcapng file", n);
            r->format = FMT_INVALID;
            return n;
        }
        r->want = 4;
        return 0;
    }
    uint32_t magic = pw_le32(b);
    if (magic == MAGIC_PCAPNG) {
        r->format = FMT_PCAPNG;
        r->want = 12;
        return 0;
    }
    int sw = 0;
    if (magic != MAGIC_US && magic != MAGIC_NS && magic != MAGIC_KUZNETZOV) {
        magic = bswap32(magic);
        sw = 1;
        if (magic != MAGIC_US && magic != MAGIC_NS && magic != MAGIC_KUZNETZOV) {
            pw_msg_add(&r->errors, 0, "not a pcap or pcapng file (magic 0x%02x%02x%02x%02x)",
                       b[0], b[1], b[2], b[3]);
            r->format = FMT_INVALID;
            return n;
        }
    }
    if (n < 24) {
        if (final) {
            pw_msg_add(&r->errors, 0, "truncated pcap file header: %zu of 24 bytes", n);
            r->format = FMT_INVALID;
            return n;
        }
        r->want = 24;
        return 0;
    }
    uint16_t vmaj = pw_rd16(sw, b + 4), vmin = pw_rd16(sw, b + 6);
    if (vmaj == 2) {
        r->lenswap = vmin < 3 ? 1 : (vmin == 3 ? 2 : 0);
        if (vmin > 4)
            pw_msg_add(&r->warnings, 4, "pcap version 2.%u is newer than 2.4; read as 2.4", vmin);
    } else if (vmaj == 543 && vmin == 0) { /* DG/UX tcpdump */
        r->lenswap = 1;
    } else {
        pw_msg_add(&r->errors, 4, "unsupported pcap savefile version %u.%u", vmaj, vmin);
        r->format = FMT_INVALID;
        return n;
    }
    r->swapped = sw;
    r->tsprec = magic == MAGIC_NS ? 9 : 6;
    r->frac_limit = r->tsprec == 9 ? 1000000000u : 1000000u;
    r->hdrsize = magic == MAGIC_KUZNETZOV ? 24 : 16;
    r->file_snaplen = pw_rd32(sw, b + 16);
    r->linktype = pw_canonical_linktype(pw_rd32(sw, b + 20) & 0x03FFFFFFu);
    r->lclass = pw_link_class(r->linktype);
    r->maxcap = pw_max_snaplen_for_linktype(r->linktype);
    r->snaplen = pw_adjust_snaplen(r->linktype, r->file_snaplen);
    if (magic == MAGIC_KUZNETZOV && r->linktype == 1) /* as libpcap: cooked-mode headroom */
        r->snaplen += 14;
    r->format = FMT_PCAP;
    r->hold = 0;
    r->want = r->hdrsize;
    return 24;
}

static inline void rd_hdr(const PwReader *r, const uint8_t *h, uint32_t *sec, uint32_t *frac,
                          uint32_t *cap, uint32_t *len)
{
    int sw = r->swapped;
    uint32_t c = pw_rd32(sw, h + 8), l = pw_rd32(sw, h + 12);
    *sec = pw_rd32(sw, h);
    *frac = pw_rd32(sw, h + 4);
    if (r->lenswap == 1 || (r->lenswap == 2 && c > l)) {
        uint32_t t = c;
        c = l;
        l = t;
    }
    *cap = c;
    *len = l;
}

static inline int64_t ts_of(const PwReader *r, uint32_t sec, uint32_t frac)
{
    return (int64_t)sec * 1000000000LL + (r->tsprec == 6 ? (int64_t)frac * 1000 : (int64_t)frac);
}

static int hdr_plausible(const PwReader *r, uint32_t sec, uint32_t frac, uint32_t cap,
                         uint32_t len, int have_ref, int64_t ref)
{
    uint32_t maxlen = r->maxcap > PW_RESYNC_MAX_ORIGLEN ? r->maxcap : PW_RESYNC_MAX_ORIGLEN;
    if (cap > r->maxcap || len < cap || len == 0 || len > maxlen || frac >= r->frac_limit)
        return 0;
    if (have_ref) {
        int64_t d = ts_of(r, sec, frac) - ref;
        if (d < 0)
            d = -d;
        if (d > PW_RESYNC_TS_WINDOW_NS)
            return 0;
    }
    return 1;
}

/* Is there a plausible record at p whose successor is plausible too (or the end of the
 * file)? 1 yes, 0 no, -1 need more data (*need = bytes from p), 2 end of input. */
static int candidate(const PwReader *r, const uint8_t *b, size_t n, size_t p, int final,
                     size_t *need)
{
    const size_t hs = r->hdrsize;
    uint32_t sec, frac, cap, len;
    if (n - p < hs) {
        if (final)
            return 2;
        *need = hs;
        return -1;
    }
    rd_hdr(r, b + p, &sec, &frac, &cap, &len);
    if (!hdr_plausible(r, sec, frac, cap, len, r->have_last_ts, r->last_ts))
        return 0;
    size_t e = p + hs + cap;
    if (e > n) {
        if (final)
            return 0;
        *need = hs + cap + hs;
        return -1;
    }
    if (n - e < hs) {
        if (final)
            return 1; /* ends the file (a partial header after it is reported on its own) */
        *need = hs + cap + hs;
        return -1;
    }
    uint32_t sec2, frac2, cap2, len2;
    rd_hdr(r, b + e, &sec2, &frac2, &cap2, &len2);
    return hdr_plausible(r, sec2, frac2, cap2, len2, 1, ts_of(r, sec, frac));
}

size_t pw_parse_pcap(PwReader *r, const uint8_t *b, size_t n, int final, int *status)
{
    const size_t hs = r->hdrsize;
    size_t p = r->hold < n ? r->hold : n;
    size_t prev = p ? 0 : NONE; /* start of the previous (emitted) record in b */
    size_t need = hs;
    *status = ST_OK;
    for (;;) {
        if (r->resync) {
            int v;
            for (;;) {
                v = candidate(r, b, n, p, final, &need);
                if (v)
                    break;
                p++;
            }
            if (v < 0) {
                r->hold = 0;
                r->want = need;
                return p;
            }
            if (v == 2) {
                pw_end_resync(r, r->consumed + n, 0);
                r->hold = 0;
                r->want = hs;
                return n;
            }
            pw_end_resync(r, r->consumed + p, 1);
            prev = NONE;
        }
        size_t avail = n - p;
        if (avail < hs) {
            if (final) {
                if (avail)
                    pw_msg_add(&r->errors, r->consumed + p,
                               "truncated record header: the file ends %zu bytes into a "
                               "%zu-byte record header", avail, hs);
                r->hold = 0;
                r->want = hs;
                return n;
            }
            need = hs;
            break;
        }
        uint32_t sec, frac, cap, len;
        rd_hdr(r, b + p, &sec, &frac, &cap, &len);
        if (cap > r->maxcap) {
            if (cap > r->snaplen)
                pw_msg_add(&r->errors, r->consumed + p,
                           "invalid packet capture length %u, bigger than snaplen of %u", cap,
                           r->snaplen);
            else
                pw_msg_add(&r->errors, r->consumed + p,
                           "invalid packet capture length %u, bigger than maximum of %u", cap,
                           r->maxcap);
            pw_start_resync(r, r->consumed + p, 0);
            size_t s = p + 1;
            if (prev != NONE) { /* the previous record's length may be what was wrong */
                size_t lo = prev + hs;
                if (p - lo > PW_RESYNC_BACKTRACK)
                    lo = p - PW_RESYNC_BACKTRACK;
                if (lo < s)
                    s = lo;
            }
            p = s;
            continue;
        }
        size_t rl = hs + cap;
        if (avail < rl) {
            if (final) {
                pw_msg_add(&r->errors, r->consumed + p,
                           "truncated record: header says %u bytes, file ends after %zu", cap,
                           avail - hs);
                pw_start_resync(r, r->consumed + p, 1);
                p++;
                continue;
            }
            need = rl;
            break;
        }
        uint64_t at = r->consumed + p;
        int rc = pw_emit(r, r->linktype, r->snaplen, r->tsprec, r->lclass, at, sec, frac, cap,
                         len, b + p + hs);
        if (rc != EM_OK) {
            *status = rc == EM_BREAK ? ST_BREAK : ST_NOMEM;
            size_t c = prev != NONE ? prev : p;
            r->hold = p - c;
            r->want = r->hold + rl;
            return c;
        }
        if (cap > r->snaplen)
            pw_warn_count(r, W_CAPLEN_GT_SNAPLEN, at);
        if (cap > len)
            pw_warn_count(r, W_CAPLEN_GT_ORIGLEN, at);
        if (frac >= r->frac_limit)
            pw_warn_count(r, W_FRAC_RANGE, at);
        r->last_ts = ts_of(r, sec, frac);
        r->have_last_ts = 1;
        prev = p;
        p += rl;
    }
    /* need more input: keep the previous record (for backtracking) and the partial one */
    size_t c = prev != NONE ? prev : p;
    r->hold = p - c;
    r->want = r->hold + need;
    return c;
}
