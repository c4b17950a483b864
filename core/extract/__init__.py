"""File and email carving (design §5): HTTP/1.x, SMTP, POP3, IMAP and FTP over reassembled
TCP, into a content-addressed artifact store, as FileRecord and EmailRecord.

Entry points: :func:`pcapwire.extract.source.carve_pcap` (a capture file) and
:func:`pcapwire.extract.source.carve_chunks` (PcapChunks from a query); the protocol
parsers can also be fed bytes directly (see :class:`pcapwire.extract.buffer.Session`).
"""

#: Protocols carved (the default set); kept here so that importing it is cheap (CLI).
PROTOCOLS: tuple[str, ...] = ("http", "smtp", "pop3", "imap", "ftp")
