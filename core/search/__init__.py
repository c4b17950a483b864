"""The metadata index and its search (issue 15): ECS documents of flows, analyzer
records, carved files and emails and verdicts, searchable with a small query language,
each hit pivoting to its PCAP. See docs/search.md."""
