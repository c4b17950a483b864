"""Plumbing shared by the engine plugins (Suricata, Zeek): one continuous pcap stream from
a run's chunks, and engine subprocesses that are always reaped."""
