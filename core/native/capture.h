/* Live capture: walking the blocks of an AF_PACKET TPACKET_V3 receive ring into classic pcap
 * records + meta (capture_ring.c, pure: no system calls, fuzzed on crafted blocks), and the
 * Capture type that owns the socket and the ring (capture.c, Linux only).
 *
 * The walker reads every field at a fixed offset (the layout of <linux/if_packet.h>, asserted
 * in capture.c) and checks each offset and length against the block before using it: a block
 * from the kernel and a block of random bytes take the same paths. */
#ifndef PCAPWIRE_CAPTURE_H
#define PCAPWIRE_CAPTURE_H

#include "pcapwire_native.h"

/* struct tpacket_block_desc (version, offset_to_priv, struct tpacket_hdr_v1) */
#define PW_BD_STATUS 8u
#define PW_BD_NUM_PKTS 12u
#define PW_BD_FIRST 16u
#define PW_BD_BLK_LEN 20u
#define PW_BD_SIZE 48u
/* struct tpacket3_hdr */
#define PW_T3_NEXT 0u
#define PW_T3_SEC 4u
#define PW_T3_NSEC 8u
#define PW_T3_SNAPLEN 12u
#define PW_T3_LEN 16u
#define PW_T3_STATUS 20u
#define PW_T3_MAC 24u
#define PW_T3_VLAN_TCI 32u
#define PW_T3_VLAN_TPID 36u
#define PW_T3_SIZE 48u
/* struct sockaddr_ll, at TPACKET_ALIGN(sizeof(struct tpacket3_hdr)) */
#define PW_LL_OFF 48u
#define PW_LL_PROTOCOL 2u /* network order */
#define PW_LL_IFINDEX 4u
#define PW_LL_HATYPE 8u
#define PW_LL_PKTTYPE 10u
#define PW_LL_HALEN 11u
#define PW_LL_ADDR 12u
#define PW_T3_HDRLEN 68u /* TPACKET3_HDRLEN: frame header + sockaddr_ll */

#define PW_TP_STATUS_USER 0x1u
#define PW_TP_STATUS_VLAN_VALID 0x10u
#define PW_TP_STATUS_VLAN_TPID_VALID 0x40u
#define PW_PACKET_OUTGOING 4u
#define PW_SLL_HDR_LEN 16u
#define PW_VLAN_TAG_LEN 4u

/* One record is at most this much bigger than its frame's packet bytes (SLL header + VLAN
 * tag + record header), so an output buffer of this + snaplen always holds one record. */
#define PW_REC_OVERHEAD (16u + PW_SLL_HDR_LEN + PW_VLAN_TAG_LEN)

struct bpf_program;

typedef struct {
    uint32_t linktype; /* LINKTYPE_ of the records (1, 101, 113) */
    uint32_t snaplen;  /* every record's caplen <= snaplen */
    int lclass;        /* pw_link_class(linktype) */
    int cooked;        /* SOCK_DGRAM frames: prepend a LINUX_SLL header built from sockaddr_ll */
    int64_t lo_ifindex; /* skip outgoing frames of this ifindex (loopback duplicates), -1 none */
    const struct bpf_program *uprog; /* filter run here on the finished record, or NULL */
} pw_ring_cfg;

typedef struct {
    uint64_t packets;     /* records written */
    uint64_t filtered;    /* frames rejected by uprog or skipped as loopback duplicates */
    uint64_t bad_frames;  /* frames not readable inside their block (counted, skipped) */
    uint64_t bad_blocks;  /* block headers with an impossible length or first offset */
} pw_ring_counts;

/* Position inside one block, so a block can be spread over several output batches. */
typedef struct {
    const uint8_t *blk;
    size_t limit; /* end of the frames: blk_len when plausible, else the block size */
    uint32_t n;   /* frames the block header announces */
    uint32_t i;   /* next frame */
    size_t off;   /* its offset in the block */
} pw_block_cursor;

/* Start walking blk[0..blk_size). A header whose blk_len or offset_to_first_pkt is impossible
 * counts one bad block (its frames are still walked inside blk_size, each one checked). */
void pw_block_begin(pw_block_cursor *c, const uint8_t *blk, size_t blk_size, pw_ring_counts *k);

/* Append the cursor's next records to out[*out_len..out_cap) and their meta (rec_off relative
 * to out) to meta[*meta_n..meta_cap). Returns 1 when the block is done, 0 when out or meta is
 * full (then call again with an emptied buffer: an empty buffer of PW_REC_OVERHEAD + snaplen
 * bytes and one meta slot always takes the next record). No GIL needed. */
int pw_block_walk(const pw_ring_cfg *cfg, pw_block_cursor *c, uint8_t *out, size_t out_cap,
                  size_t *out_len, pw_meta *meta, size_t meta_cap, size_t *meta_n,
                  pw_ring_counts *k);

#endif
