"""Scale-out: one central API over many sensors (issue 14).

A central ``pcapwire serve --cluster FILE`` reads the cluster file (:mod:`.config`), talks
to each sensor's own API over HTTPS with mutual TLS (:mod:`.tls`), fans queries out to the
sensors that hold the tenant and time range, and merges their PCAP streams in timestamp
order; each sensor re-checks tenant and role like any request. A single machine needs
none of this: without ``--cluster`` nothing here is imported.
"""
