/* Walking TPACKET_V3 ring blocks into classic pcap records + meta (see capture.h).
 *
 * Records come out as libpcap (pcap-linux.c, 1.10) hands them to tcpdump: nanosecond
 * timestamps from tp_sec/tp_nsec, origlen = tp_len, a VLAN tag the kernel took out of the
 * frame (TP_STATUS_VLAN_VALID or a non-zero tp_vlan_tci) put back after the MAC addresses
 * (Ethernet) or the first 14 bytes of the LINUX_SLL header (cooked), cooked frames prefixed
 * with a LINUX_SLL header built from their sockaddr_ll, and caplen cut to the snaplen. */
#include "capture.h" /* Python.h first: it sets the feature macros pcap.h needs */

#include <pcap/pcap.h>

void pw_block_begin(pw_block_cursor *c, const uint8_t *blk, size_t blk_size, pw_ring_counts *k)
{
    memset(c, 0, sizeof *c);
    c->blk = blk;
    if (blk_size < PW_BD_SIZE) {
        k->bad_blocks++;
        return;
    }
    uint32_t n = pw_le32(blk + PW_BD_NUM_PKTS);
    uint32_t len = pw_le32(blk + PW_BD_BLK_LEN);
    uint32_t first = pw_le32(blk + PW_BD_FIRST);
    int bad = 0;
    c->limit = blk_size;
    if (len < PW_BD_SIZE || len > blk_size)
        bad = 1; /* walk to the block's real end, checking every frame */
    else
        c->limit = len;
    if (first < PW_BD_SIZE || first > c->limit) {
        /* nowhere to start: every announced frame is lost (and counted) */
        k->bad_blocks++;
        k->bad_frames += n;
        return;
    }
    if (bad)
        k->bad_blocks++;
    c->n = n;
    c->off = first;
}

/* copy src[0..n) to dst at *pos, never past cap */
static inline void put(uint8_t *dst, uint32_t *pos, uint32_t cap, const uint8_t *src, uint32_t n)
{
    if (*pos >= cap)
        return;
    if (n > cap - *pos)
        n = cap - *pos;
    memcpy(dst + *pos, src, n);
    *pos += n;
}

enum { FR_DONE, FR_FULL };

/* One valid frame (tp_mac >= PW_T3_HDRLEN, tp_mac + tp_snaplen inside the block). */
static int emit(const pw_ring_cfg *cfg, const uint8_t *f, uint8_t *out, size_t out_cap,
                size_t *out_len, pw_meta *meta, size_t meta_cap, size_t *meta_n,
                pw_ring_counts *k)
{
    const uint8_t *ll = f + PW_LL_OFF;
    if (cfg->lo_ifindex >= 0 && ll[PW_LL_PKTTYPE] == PW_PACKET_OUTGOING &&
        (int64_t)(int32_t)pw_le32(ll + PW_LL_IFINDEX) == cfg->lo_ifindex) {
        k->filtered++; /* libpcap drops these: loopback shows every packet twice */
        return FR_DONE;
    }
    uint32_t snap = pw_le32(f + PW_T3_SNAPLEN), wire = pw_le32(f + PW_T3_LEN);
    uint32_t status = pw_le32(f + PW_T3_STATUS);
    uint32_t tci = pw_le32(f + PW_T3_VLAN_TCI);
    uint16_t tpid = pw_le16(f + PW_T3_VLAN_TPID);
    const uint8_t *data = f + pw_le16(f + PW_T3_MAC);
    uint32_t hl = cfg->cooked ? PW_SLL_HDR_LEN : 0;
    uint32_t vlan_off = cfg->cooked ? 14u : (cfg->linktype == 1 ? 12u : 0u);
    int vlan = vlan_off && (tci != 0 || (status & PW_TP_STATUS_VLAN_VALID)) &&
               (uint64_t)hl + snap >= vlan_off;
    uint64_t full = (uint64_t)hl + snap + (vlan ? PW_VLAN_TAG_LEN : 0);
    uint64_t wl = (uint64_t)hl + wire + (vlan ? PW_VLAN_TAG_LEN : 0);
    uint32_t caplen = full > cfg->snaplen ? cfg->snaplen : (uint32_t)full;
    uint32_t origlen = wl > UINT32_MAX ? UINT32_MAX : (uint32_t)wl;
    size_t need = 16u + (size_t)caplen;
    if (*out_len > out_cap || out_cap - *out_len < need || *meta_n >= meta_cap)
        return FR_FULL;

    uint8_t *o = out + *out_len;
    uint8_t *d = o + 16;
    uint8_t sll[PW_SLL_HDR_LEN], tag[PW_VLAN_TAG_LEN];
    if (cfg->cooked) {
        uint8_t pkttype = ll[PW_LL_PKTTYPE], halen = ll[PW_LL_HALEN];
        uint16_t hatype = pw_le16(ll + PW_LL_HATYPE);
        sll[0] = 0;
        sll[1] = pkttype;
        sll[2] = (uint8_t)(hatype >> 8);
        sll[3] = (uint8_t)hatype;
        sll[4] = 0;
        sll[5] = halen;
        memcpy(sll + 6, ll + PW_LL_ADDR, 8);
        memcpy(sll + 14, ll + PW_LL_PROTOCOL, 2); /* already in network order */
    }
    if (vlan) {
        uint16_t t = (tpid || (status & PW_TP_STATUS_VLAN_TPID_VALID)) ? tpid : 0x8100u;
        tag[0] = (uint8_t)(t >> 8);
        tag[1] = (uint8_t)t;
        tag[2] = (uint8_t)(tci >> 8);
        tag[3] = (uint8_t)tci;
    }
    uint32_t pos = 0;
    if (cfg->cooked) {
        put(d, &pos, caplen, sll, vlan ? 14u : PW_SLL_HDR_LEN);
        if (vlan) {
            put(d, &pos, caplen, tag, PW_VLAN_TAG_LEN);
            put(d, &pos, caplen, sll + 14, 2);
        }
        put(d, &pos, caplen, data, snap);
    } else if (vlan) { /* snap >= 12 here */
        put(d, &pos, caplen, data, vlan_off);
        put(d, &pos, caplen, tag, PW_VLAN_TAG_LEN);
        put(d, &pos, caplen, data + vlan_off, snap - vlan_off);
    } else {
        put(d, &pos, caplen, data, snap);
    }
    /* pos == caplen: the pieces add up to `full` >= caplen */
    uint32_t sec = pw_le32(f + PW_T3_SEC), nsec = pw_le32(f + PW_T3_NSEC);
    if (cfg->uprog) {
        struct pcap_pkthdr h;
        h.ts.tv_sec = (time_t)sec;
        h.ts.tv_usec = (suseconds_t)(nsec / 1000u);
        h.caplen = caplen;
        h.len = origlen;
        if (!pcap_offline_filter(cfg->uprog, &h, d)) {
            k->filtered++;
            return FR_DONE;
        }
    }
    pw_wr32(o, sec);
    pw_wr32(o + 4, nsec);
    pw_wr32(o + 8, caplen);
    pw_wr32(o + 12, origlen);
    pw_record_meta(&meta[*meta_n], cfg->lclass, cfg->snaplen, 9, (uint32_t)*out_len, sec, nsec,
                   caplen, origlen, d);
    *out_len += need;
    (*meta_n)++;
    k->packets++;
    return FR_DONE;
}

int pw_block_walk(const pw_ring_cfg *cfg, pw_block_cursor *c, uint8_t *out, size_t out_cap,
                  size_t *out_len, pw_meta *meta, size_t meta_cap, size_t *meta_n,
                  pw_ring_counts *k)
{
    while (c->i < c->n) {
        size_t off = c->off;
        if (off > c->limit || c->limit - off < PW_T3_HDRLEN) {
            k->bad_frames += c->n - c->i; /* the block ends before this frame's header */
            c->i = c->n;
            break;
        }
        const uint8_t *f = c->blk + off;
        size_t avail = c->limit - off;
        uint32_t mac = pw_le16(f + PW_T3_MAC);
        uint32_t snap = pw_le32(f + PW_T3_SNAPLEN);
        int ok = mac >= PW_T3_HDRLEN && (uint64_t)mac + snap <= avail;
        if (ok) {
            if (emit(cfg, f, out, out_cap, out_len, meta, meta_cap, meta_n, k) == FR_FULL)
                return 0; /* same frame again, into the next buffer */
        } else {
            k->bad_frames++; /* tp_mac/tp_snaplen point outside the block */
        }
        c->i++;
        if (c->i == c->n)
            break;
        /* frames never overlap: the next one starts after this one's data */
        uint64_t extent = ok ? (uint64_t)mac + snap : PW_T3_HDRLEN;
        uint32_t next = pw_le32(f + PW_T3_NEXT);
        if (next < PW_T3_HDRLEN || next < extent || next > avail) {
            k->bad_frames += c->n - c->i;
            c->i = c->n;
            break;
        }
        c->off = off + next;
    }
    return 1;
}
