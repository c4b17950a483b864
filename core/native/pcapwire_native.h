/* pcapwire._native: shared definitions.
 *
 * Every function that reads packet or file bytes takes an explicit length and checks it
 * before each access; nothing here trusts a length field from the input.
 * See README.md in this directory for the formats, the meta layout and every limit.
 */
#ifndef PCAPWIRE_NATIVE_H
#define PCAPWIRE_NATIVE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#if !defined(__BYTE_ORDER__) || __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "pcapwire._native emits little-endian records and meta structs: little-endian hosts only"
#endif

/* ---- limits (all exported to Python under the same names) ----------------------------- */
#define PW_MAX_CAPLEN 262144u            /* libpcap MAXIMUM_SNAPLEN (ordinary link types) */
#define PW_MAX_VLAN_DEPTH 8              /* 802.1Q/802.1ad tags followed before giving up */
#define PW_MAX_IPV6_EXT_HEADERS 8        /* IPv6 extension headers followed */
#define PW_MAX_PCAPNG_INTERFACES 65536u  /* IDBs per section */
#define PW_MAX_PCAPNG_BLOCK (16u << 20)  /* libpcap INITIAL_MAX_BLOCKSIZE; raised per link type */
#define PW_MAX_MESSAGES 1000             /* errors (and warnings) kept per Reader */
#define PW_RESYNC_MAX_ORIGLEN (1u << 20) /* a resync candidate's origlen must not exceed this */
#define PW_RESYNC_TS_WINDOW_NS (86400LL * 1000000000LL) /* ... nor its ts differ more */
#define PW_RESYNC_BACKTRACK 4096u        /* bytes before a damaged classic header rescanned */
#define PW_FLOW_IDLE_NS 3600000000000LL /* silence after which a 5-tuple starts a new flow */
#define PW_MAX_PENDING_FRAG_GROUPS 65536u /* fragment groups waiting for their first fragment */
#define PW_FRAG_TABLE_BUCKETS 16384u     /* x PW_FRAG_TABLE_WAYS = fragment datagrams remembered */
#define PW_FRAG_TABLE_WAYS 4u

/* ---- per-packet meta: 88 bytes, packed, little-endian ----------------------------------- */
#define PW_META_STRUCT "<qIIIIII16s16sHHHHBBBBHBBHHHH"
#define PW_META_FIELDS                                                                      \
    "ts_ns", "rec_off", "caplen", "origlen", "frag_id", "tcp_seq", "tcp_ack", "src", "dst",  \
        "sport", "dport", "flags", "ethertype", "ipver", "proto", "tcp_flags", "vlan_count", \
        "vlan_id", "icmp_type", "icmp_code", "l3_off", "l4_off", "payload_off", "payload_len"

typedef struct __attribute__((packed)) {
    int64_t ts_ns;        /* absolute ns since the epoch (from the stored record header) */
    uint32_t rec_off;     /* offset of the 16-byte record header inside the batch records */
    uint32_t caplen;      /* stored caplen */
    uint32_t origlen;     /* on-wire length */
    uint32_t frag_id;     /* IPv4 identification / IPv6 fragment identification */
    uint32_t tcp_seq;
    uint32_t tcp_ack;
    uint8_t src[16];      /* IPv4 in the first 4 bytes, rest zero */
    uint8_t dst[16];
    uint16_t sport;       /* 0 when there is no TCP/UDP/SCTP header */
    uint16_t dport;
    uint16_t flags;       /* PW_F_* */
    uint16_t ethertype;   /* after VLAN tags; 0x0800/0x86DD for IP on any link type */
    uint8_t ipver;        /* 4, 6, or 0 when not IP */
    uint8_t proto;        /* upper-layer protocol after IPv6 extension headers */
    uint8_t tcp_flags;    /* TCP flags byte (FIN 0x01 SYN 0x02 RST 0x04 PSH 0x08 ACK 0x10 ...) */
    uint8_t vlan_count;
    uint16_t vlan_id;     /* outermost VLAN ID (valid when PW_F_VLAN) */
    uint8_t icmp_type;
    uint8_t icmp_code;
    uint16_t l3_off;      /* offset of the outermost IP header in the packet data */
    uint16_t l4_off;      /* offset of the L4 header, 0 if none */
    uint16_t payload_off; /* offset of the L4 payload, 0 if none */
    uint16_t payload_len; /* captured L4 payload bytes (bounded by the IP length), max 65535 */
} pw_meta;

_Static_assert(sizeof(pw_meta) == 88, "meta struct must be 88 bytes");
#define PW_META_SIZE ((Py_ssize_t)sizeof(pw_meta))

#define PW_F_FRAGMENT 0x0001u        /* IPv4 MF/offset set, or IPv6 fragment header */
#define PW_F_FIRST_FRAGMENT 0x0002u  /* fragment with offset 0 (carries the L4 header) */
#define PW_F_VLAN 0x0004u            /* at least one 802.1Q/802.1ad tag */
#define PW_F_TRUNCATED 0x0008u       /* captured data ends before the L3/L4 header does */
#define PW_F_IP_OPTIONS 0x0010u      /* IPv4 IHL > 5 */
#define PW_F_IPV6_EXT 0x0020u        /* IPv6 extension headers present */
#define PW_F_MALFORMED 0x0040u       /* impossible header field, or a named depth limit hit */
#define PW_F_CAPLEN_GT_SNAPLEN 0x0080u /* dissected only the first snaplen bytes, like libpcap */
#define PW_F_LAST_FRAGMENT 0x0100u   /* fragment with offset > 0 and no more-fragments bit */

#define PW_TCP_FIN 0x01u
#define PW_TCP_SYN 0x02u
#define PW_TCP_RST 0x04u
#define PW_TCP_ACK 0x10u

/* link-type classes for the dissector */
enum { PW_LC_OTHER, PW_LC_ETH, PW_LC_SLL, PW_LC_SLL2, PW_LC_RAW, PW_LC_IPV4, PW_LC_IPV6,
       PW_LC_NULL, PW_LC_LOOP };

/* ---- byte helpers (unaligned-safe) ------------------------------------------------------ */
static inline uint16_t pw_be16(const uint8_t *p) { return (uint16_t)((p[0] << 8) | p[1]); }
static inline uint32_t pw_be32(const uint8_t *p)
{
    return ((uint32_t)p[0] << 24) | ((uint32_t)p[1] << 16) | ((uint32_t)p[2] << 8) | p[3];
}
static inline uint16_t pw_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t pw_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}
static inline uint64_t pw_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}
static inline uint32_t pw_rd32(int swapped, const uint8_t *p)
{
    return swapped ? pw_be32(p) : pw_le32(p);
}
static inline uint16_t pw_rd16(int swapped, const uint8_t *p)
{
    return swapped ? pw_be16(p) : pw_le16(p);
}
static inline void pw_wr32(uint8_t *p, uint32_t v) { memcpy(p, &v, 4); }

/* ---- shared functions ------------------------------------------------------------------- */
/* dissect.c */
int pw_link_class(uint32_t linktype);
void pw_dissect(int link_class, const uint8_t *pkt, uint32_t len, pw_meta *m);

/* reader.c: the meta of one stored record (the Reader's and the live capture's) */
void pw_record_meta(pw_meta *m, int lclass, uint32_t snap, int prec, uint32_t rec_off,
                    uint32_t sec, uint32_t frac, uint32_t caplen, uint32_t origlen,
                    const uint8_t *data);

/* filter.c: pcap_open_dead(dlt, snaplen) + pcap_compile(optimize 1, netmask 0) under the
 * process-wide compile lock; call WITHOUT the GIL. 0 or -1 with libpcap's message in err. */
struct bpf_program;
int pw_bpf_compile(int dlt, int snaplen, const char *expr, struct bpf_program *prog,
                   char *err, size_t errlen);

/* linktypes.c */
uint32_t pw_max_snaplen_for_linktype(uint32_t linktype);
uint32_t pw_adjust_snaplen(uint32_t linktype, uint32_t snaplen);
uint32_t pw_canonical_linktype(uint32_t linktype);
int pw_linktype_to_dlt(uint32_t linktype);

/* types and functions registered by module.c */
extern PyTypeObject PwReaderType;
extern PyTypeObject PwIndexerType;
extern PyTypeObject PwFilterType;
PyObject *pw_scan(PyObject *self, PyObject *args, PyObject *kwargs);
extern PyTypeObject PwCaptureType; /* capture.c (Linux AF_PACKET) */
PyObject *pw_walk_tpacket_block(PyObject *self, PyObject *args, PyObject *kwargs);
/* merge.c: merge_records(); input format flags (exported as MERGE_NANO, MERGE_SWAPPED) */
#define PW_MERGE_NANO 1
#define PW_MERGE_SWAPPED 2
PyObject *pw_merge_records(PyObject *self, PyObject *args, PyObject *kwargs);

#endif
