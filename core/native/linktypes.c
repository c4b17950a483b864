/* Link-type arithmetic exactly as libpcap 1.10 does it on Linux (pcap-common.c):
 * LINKTYPE_ <-> DLT_ mapping, max_snaplen_for_dlt() and pcap_adjust_snapshot(). */
#include "pcapwire_native.h"

#define LT_DBUS 231u
#define LT_USBPCAP 249u
#define LT_EBHSCR 279u

/* Maximum caplen libpcap accepts for a link type (max_snaplen_for_dlt). The three special
 * link types have the same number as LINKTYPE_ and DLT_. */
uint32_t pw_max_snaplen_for_linktype(uint32_t linktype)
{
    switch (linktype) {
    case LT_DBUS:
        return 128u * 1024u * 1024u;
    case LT_EBHSCR:
        return 8u * 1024u * 1024u;
    case LT_USBPCAP:
        return 1024u * 1024u;
    default:
        return PW_MAX_CAPLEN;
    }
}

/* pcap_adjust_snapshot(): 0 or more than the maximum means "the maximum". */
uint32_t pw_adjust_snaplen(uint32_t linktype, uint32_t snaplen)
{
    uint32_t max = pw_max_snaplen_for_linktype(linktype);
    return (snaplen == 0 || snaplen > max) ? max : snaplen;
}

/* The LINKTYPE_ value tcpdump writes for a file whose header says `linktype`
 * (dlt_to_linktype(linktype_to_dlt(x)) with Linux's DLT_ values). Only the BSD-era DLT
 * numbers that libpcap rewrites differ; 14 (OpenBSD's DLT_RAW, unknown to libpcap on Linux)
 * is taken as raw IP too. */
uint32_t pw_canonical_linktype(uint32_t linktype)
{
    switch (linktype) {
    case 11: /* DLT_ATM_RFC1483 */
        return 100;
    case 12: /* DLT_RAW (most platforms) */
    case 14: /* DLT_RAW (OpenBSD) */
        return 101;
    case 15: /* DLT_SLIP_BSDOS */
        return 102;
    case 16: /* DLT_PPP_BSDOS */
        return 103;
    case 19: /* DLT_ATM_CLIP */
        return 106;
    default:
        return linktype;
    }
}

/* linktype_to_dlt() for pcap_open_dead()/pcap_compile() on Linux. */
int pw_linktype_to_dlt(uint32_t linktype)
{
    switch (linktype) {
    case 100:
        return 11;
    case 101:
        return 12;
    case 102:
        return 15;
    case 103:
        return 16;
    case 106:
        return 19;
    default:
        return (int)linktype;
    }
}
