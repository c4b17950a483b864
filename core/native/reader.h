/* Reader state shared by reader.c (Python type, buffering, batches) and
 * parse_pcap.c / parse_pcapng.c (the per-record loops, run without the GIL). */
#ifndef PCAPWIRE_READER_H
#define PCAPWIRE_READER_H

#include "pcapwire_native.h"

enum { FMT_NONE = 0, FMT_PCAP, FMT_PCAPNG, FMT_INVALID };

/* parser status */
enum { ST_OK = 0, ST_BREAK = 1, ST_NOMEM = 2 };

/* emit() results */
enum { EM_OK = 0, EM_BREAK = 1, EM_NOMEM = 2 };

/* aggregated warnings: one line each in Reader.warnings, with a count and the first offset */
enum { W_CAPLEN_GT_SNAPLEN, W_CAPLEN_GT_ORIGLEN, W_FRAC_RANGE, W_TS_RANGE, W_COUNT };

typedef struct {
    uint64_t off;
    char *msg;
} pw_msg;

typedef struct {
    pw_msg *v;
    size_t n, cap;
    uint64_t dropped;
} pw_msgs;

typedef struct {
    uint32_t linktype, snaplen, maxcap;
    int lclass;
    int is_bin;      /* if_tsresol is 2^-exp (else 10^-exp) */
    unsigned exp;    /* resolution exponent */
    int64_t tsoffset; /* seconds */
} pw_iface;

typedef struct {
    PyObject_HEAD
    PyObject *name;
    int busy, finished;
    int format;
    /* classic pcap */
    int swapped, tsprec, lenswap; /* lenswap: 0 never, 1 always (< 2.3), 2 if caplen > len (2.3) */
    size_t hdrsize;
    uint32_t linktype, snaplen, file_snaplen, maxcap, frac_limit;
    int lclass;
    /* pcapng */
    int ng_swapped, ng_have_shb;
    pw_iface *ifs;
    uint32_t nifs, ifs_cap, max_block;
    /* damage and resync */
    int resync, resync_at_eof_truncation;
    uint64_t damage_off, bytes_skipped;
    size_t damage_msg; /* index into errors, or SIZE_MAX when the message was dropped */
    int have_last_ts;
    int64_t last_ts;
    /* input stream */
    uint64_t consumed; /* absolute input offset of the first byte not yet released */
    size_t hold;       /* bytes at the buffer start already parsed (the previous record) */
    size_t want;       /* bytes needed from the buffer start to make progress */
    uint8_t *tail;
    size_t tail_len, tail_cap;
    size_t tail_from_data; /* trailing tail bytes copied from the current feed's data */
    size_t feed_pos;
    uint64_t total_in;
    /* counters */
    uint64_t packets, skip;
    size_t max_batch; /* records bytes per batch (0: a whole feed) */
    size_t need_cap;  /* a record larger than the open batch's capacity is waiting */
    uint64_t wcount[W_COUNT], wfirst[W_COUNT];
    /* recycled records objects (see open_batch) */
    PyObject *pool[4];
    size_t pool_cap[4];
    /* the open batch */
    PyObject *out;
    uint8_t *outp;
    size_t out_len, out_cap;
    uint8_t *meta;
    size_t meta_n, meta_cap;
    uint32_t b_lt, b_snap;
    int b_prec;
    uint64_t b_first_off;
    pw_msgs errors, warnings;
} PwReader;

/* reader.c */
void pw_msg_add(pw_msgs *ms, uint64_t off, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pw_msg_append(pw_msgs *ms, size_t idx, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
void pw_warn_count(PwReader *r, int kind, uint64_t off);
void pw_start_resync(PwReader *r, uint64_t off, int eof_truncation);
void pw_end_resync(PwReader *r, uint64_t at, int found);
int pw_emit(PwReader *r, uint32_t lt, uint32_t snap, int prec, int lclass, uint64_t in_off,
            uint32_t sec, uint32_t frac, uint32_t caplen, uint32_t origlen, const uint8_t *data);

/* parse_pcap.c / parse_pcapng.c: parse b[0..n) (absolute offset r->consumed); return the
 * number of bytes the caller may release; set r->hold and r->want (relative to the returned
 * position). With final != 0 everything is consumed. */
size_t pw_parse_pcap_header(PwReader *r, const uint8_t *b, size_t n, int final);
size_t pw_parse_pcap(PwReader *r, const uint8_t *b, size_t n, int final, int *status);
size_t pw_parse_pcapng(PwReader *r, const uint8_t *b, size_t n, int final, int *status);

#endif
