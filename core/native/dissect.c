/* Packet dissection into pw_meta: link layer, VLAN stack, the OUTERMOST IPv4/IPv6 header
 * (no tunnel decapsulation, so the flow key is the header a plain BPF host/port sees), IPv6
 * extension headers, fragments, and TCP/UDP/SCTP ports or ICMP type/code.
 *
 * `len` is the number of bytes libpcap would present (caplen clipped to snaplen); every
 * read is preceded by a check against it. */
#include "pcapwire_native.h"

#define ET_IPV4 0x0800u
#define ET_IPV6 0x86DDu

int pw_link_class(uint32_t linktype)
{
    switch (linktype) {
    case 1:
        return PW_LC_ETH;
    case 113:
        return PW_LC_SLL;
    case 276:
        return PW_LC_SLL2;
    case 101:
    case 12:
    case 14:
        return PW_LC_RAW;
    case 228:
        return PW_LC_IPV4;
    case 229:
        return PW_LC_IPV6;
    case 0:
        return PW_LC_NULL;
    case 108:
        return PW_LC_LOOP;
    default:
        return PW_LC_OTHER;
    }
}

static inline uint16_t clamp16(uint32_t v) { return v > 0xFFFFu ? 0xFFFFu : (uint16_t)v; }

/* L4 at `l4`; `end` = where the IP datagram ends inside the captured bytes (<= len). */
static void dissect_l4(const uint8_t *p, uint32_t len, uint32_t l4, uint32_t end, pw_meta *m)
{
    if (l4 > 0xFFFFu) {
        m->flags |= PW_F_MALFORMED;
        return;
    }
    if (l4 >= len) {
        m->flags |= PW_F_TRUNCATED;
        return;
    }
    uint32_t avail = len - l4;
    uint32_t hl = 0;
    m->l4_off = (uint16_t)l4;
    switch (m->proto) {
    case 6: /* TCP */
        if (avail < 4) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        m->sport = pw_be16(p + l4);
        m->dport = pw_be16(p + l4 + 2);
        if (avail < 20) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        m->tcp_seq = pw_be32(p + l4 + 4);
        m->tcp_ack = pw_be32(p + l4 + 8);
        m->tcp_flags = p[l4 + 13];
        hl = (uint32_t)(p[l4 + 12] >> 4) * 4u;
        if (hl < 20) {
            m->flags |= PW_F_MALFORMED;
            return;
        }
        break;
    case 17: /* UDP */
    case 132: /* SCTP: ports in the common header too */
        if (avail < 4) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        m->sport = pw_be16(p + l4);
        m->dport = pw_be16(p + l4 + 2);
        hl = m->proto == 17 ? 8u : 12u;
        break;
    case 1:  /* ICMP */
    case 58: /* ICMPv6 */
        if (avail < 2) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        m->icmp_type = p[l4];
        m->icmp_code = p[l4 + 1];
        hl = 8;
        break;
    default:
        return;
    }
    if (hl > avail) {
        m->flags |= PW_F_TRUNCATED;
        return;
    }
    uint32_t poff = l4 + hl;
    if (poff > 0xFFFFu)
        return;
    m->payload_off = (uint16_t)poff;
    m->payload_len = end > poff ? clamp16(end - poff) : 0;
}

static void dissect_ipv4(const uint8_t *p, uint32_t len, uint32_t off, pw_meta *m)
{
    m->ethertype = ET_IPV4;
    if (len < off || len - off < 20) {
        m->flags |= PW_F_TRUNCATED; /* not even the addresses: a non-IP flow of ethertype 0x0800 */
        return;
    }
    const uint8_t *ip = p + off;
    m->ipver = 4;
    m->l3_off = clamp16(off);
    m->proto = ip[9];
    memcpy(m->src, ip + 12, 4);
    memcpy(m->dst, ip + 16, 4);
    uint16_t fo = pw_be16(ip + 6);
    uint16_t foff = fo & 0x1FFFu;
    int more = (fo & 0x2000u) != 0;
    if (more || foff) {
        m->flags |= PW_F_FRAGMENT;
        m->frag_id = pw_be16(ip + 4);
        if (foff == 0)
            m->flags |= PW_F_FIRST_FRAGMENT;
        else if (!more)
            m->flags |= PW_F_LAST_FRAGMENT;
    }
    uint32_t ihl = (uint32_t)(ip[0] & 0x0Fu) * 4u;
    if ((ip[0] >> 4) != 4 || ihl < 20) {
        m->flags |= PW_F_MALFORMED;
        return;
    }
    if (ihl > 20)
        m->flags |= PW_F_IP_OPTIONS;
    uint32_t tot = pw_be16(ip + 2);
    uint32_t end = len;
    if (tot != 0) { /* 0: TSO/GSO capture, the length is the captured length */
        if (tot < ihl)
            m->flags |= PW_F_MALFORMED;
        else if (tot < len - off)
            end = off + tot;
    }
    if (foff != 0)
        return; /* non-first fragment: no L4 header */
    if (ihl > len - off) {
        m->flags |= PW_F_TRUNCATED;
        return;
    }
    dissect_l4(p, len, off + ihl, end, m);
}

static void dissect_ipv6(const uint8_t *p, uint32_t len, uint32_t off, pw_meta *m)
{
    m->ethertype = ET_IPV6;
    if (len < off || len - off < 40) {
        m->flags |= PW_F_TRUNCATED;
        return;
    }
    const uint8_t *ip = p + off;
    m->ipver = 6;
    m->l3_off = clamp16(off);
    memcpy(m->src, ip + 8, 16);
    memcpy(m->dst, ip + 24, 16);
    if ((ip[0] >> 4) != 6)
        m->flags |= PW_F_MALFORMED;
    uint32_t plen = pw_be16(ip + 4);
    uint32_t end = len;
    if (plen != 0 && plen < len - off - 40) /* 0: jumbogram or TSO capture */
        end = off + 40 + plen;
    uint8_t nh = ip[6];
    uint32_t cur = off + 40;
    unsigned count = 0;
    for (;;) {
        if (nh != 0 && nh != 43 && nh != 44 && nh != 60 && nh != 51 && nh != 135)
            break;
        m->flags |= PW_F_IPV6_EXT;
        if (count++ == PW_MAX_IPV6_EXT_HEADERS) {
            m->flags |= PW_F_MALFORMED;
            m->proto = nh;
            return;
        }
        if (cur >= len || len - cur < 8) { /* every extension header is at least 8 bytes */
            m->flags |= PW_F_TRUNCATED;
            m->proto = nh;
            return;
        }
        const uint8_t *h = p + cur;
        if (nh == 44) { /* fragment header */
            uint16_t fo = pw_be16(h + 2);
            int more = fo & 1u;
            m->flags |= PW_F_FRAGMENT;
            m->frag_id = pw_be32(h + 4);
            if ((fo & 0xFFF8u) != 0) {
                m->proto = h[0]; /* the fragmentable part's first header; no L4 here */
                if (!more)
                    m->flags |= PW_F_LAST_FRAGMENT;
                return;
            }
            m->flags |= PW_F_FIRST_FRAGMENT;
            nh = h[0];
            cur += 8;
            continue;
        }
        uint32_t hl = nh == 51 ? ((uint32_t)h[1] + 2u) * 4u : ((uint32_t)h[1] + 1u) * 8u;
        nh = h[0];
        cur += hl;
    }
    m->proto = nh;
    if (nh == 50 || nh == 59) /* ESP, no next header: nothing more to read */
        return;
    if (cur > len) {
        m->flags |= PW_F_TRUNCATED;
        return;
    }
    dissect_l4(p, len, cur, end < cur ? cur : end, m);
}

static void dissect_l3(const uint8_t *p, uint32_t len, uint32_t off, uint16_t et, pw_meta *m)
{
    unsigned depth = 0;
    while (et == 0x8100u || et == 0x88A8u || et == 0x9100u) {
        if (depth == PW_MAX_VLAN_DEPTH) {
            m->flags |= PW_F_MALFORMED;
            m->ethertype = et;
            return;
        }
        if (len < off || len - off < 4) {
            m->flags |= PW_F_TRUNCATED;
            m->ethertype = et;
            return;
        }
        if (depth == 0)
            m->vlan_id = pw_be16(p + off) & 0x0FFFu;
        depth++;
        m->flags |= PW_F_VLAN;
        m->vlan_count = (uint8_t)depth;
        et = pw_be16(p + off + 2);
        off += 4;
    }
    m->ethertype = et;
    if (et == ET_IPV4)
        dissect_ipv4(p, len, off, m);
    else if (et == ET_IPV6)
        dissect_ipv6(p, len, off, m);
}

static int af_is_inet6(uint32_t af)
{
    /* Linux 10, NetBSD/OpenBSD/BSD 24, FreeBSD 28, Darwin 30 */
    return af == 10 || af == 24 || af == 28 || af == 30;
}

static void dissect_family(const uint8_t *p, uint32_t len, int loop, pw_meta *m)
{
    if (len < 4) {
        m->flags |= PW_F_TRUNCATED;
        return;
    }
    /* NULL: host order of the capturing machine (either); LOOP: network order */
    uint32_t a = pw_be32(p), b = loop ? a : pw_le32(p);
    if (a == 2 || b == 2)
        dissect_ipv4(p, len, 4, m);
    else if (af_is_inet6(a) || af_is_inet6(b))
        dissect_ipv6(p, len, 4, m);
}

void pw_dissect(int lc, const uint8_t *p, uint32_t len, pw_meta *m)
{
    switch (lc) {
    case PW_LC_ETH:
        if (len < 14) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        dissect_l3(p, len, 14, pw_be16(p + 12), m);
        return;
    case PW_LC_SLL:
        if (len < 16) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        dissect_l3(p, len, 16, pw_be16(p + 14), m);
        return;
    case PW_LC_SLL2:
        if (len < 20) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        dissect_l3(p, len, 20, pw_be16(p), m);
        return;
    case PW_LC_RAW:
        if (len < 1) {
            m->flags |= PW_F_TRUNCATED;
            return;
        }
        if ((p[0] >> 4) == 4)
            dissect_ipv4(p, len, 0, m);
        else if ((p[0] >> 4) == 6)
            dissect_ipv6(p, len, 0, m);
        return;
    case PW_LC_IPV4:
        dissect_ipv4(p, len, 0, m);
        return;
    case PW_LC_IPV6:
        dissect_ipv6(p, len, 0, m);
        return;
    case PW_LC_NULL:
        dissect_family(p, len, 0, m);
        return;
    case PW_LC_LOOP:
        dissect_family(p, len, 1, m);
        return;
    default:
        return;
    }
}
