#!/usr/bin/env bash
# The demo, pcapwire's main job on generated traffic (no external services):
#   ingest -> flow index -> PCAP queries (checked against tcpdump) -> a workflow of
#   analyzers (Suricata, YARA; Zeek when installed) on the query's chunks -> verdicts kept
#   with the case -> files carved out of the same packets.
# Everything stays under ./demo-data; running it again reuses the store.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
D=demo-data
export PCAPWIRE_DATA_DIR="$D/store"
mkdir -p "$D"
if [ ! -f "$D/demo.pcap" ]; then
  echo "== generating 128 MiB of demo traffic (HTTP/TLS/SMTP-like sessions, DNS; a few carry the EICAR test string)"
  python -c "from pcapwire.synth import generate; print(generate('$D/demo.pcap', 128 * 2**20))"
fi

echo "== pcapwire ingest (twice: the second run recognises the file and skips it)"
pcapwire ingest "$D/demo.pcap"
pcapwire ingest "$D/demo.pcap"

echo "== pcapwire flows --port 8080 --limit 5"
pcapwire flows --port 8080 --limit 5
FLOW=$(pcapwire flows --port 8080 --limit 1 --json | python -c '
import json, sys
f = json.loads(sys.stdin.readline())
print(":".join(str(f[k]) for k in ("proto", "src_ip", "src_port", "dest_ip", "dest_port")))')

echo "== pcapwire query --five-tuple $FLOW -w $D/flow.pcap"
pcapwire query --five-tuple "$FLOW" --case demo --event pivot --stats -w "$D/flow.pcap"
echo "   tcpdump reads it back: $(tcpdump -n -r "$D/flow.pcap" 2>/dev/null | wc -l) packets"

SYN='tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0'
echo "== pcapwire query --bpf '$SYN' -w - | tcpdump -n -r - | wc -l"
echo "   pcapwire: $(pcapwire query --bpf "$SYN" -w - | tcpdump -n -r - 2>/dev/null | wc -l) packets," \
  "tcpdump on the original file: $(tcpdump -n -r "$D/demo.pcap" "$SYN" 2>/dev/null | wc -l)"

echo "== pcapwire run workflows/incident-triage.yaml --port 80 --case demo --event web-triage"
echo "   (Suricata warm on the query's chunks, YARA on reassembled streams, Zeek if installed)"
status=0
pcapwire run workflows/incident-triage.yaml --port 80 --case demo --event web-triage || status=$?
# exit 1 = partial: a step ended with an error (here: no zeek binary); the rest completed
[ "$status" -le 1 ] || exit "$status"

echo "== pcapwire query --port 80 -w $D/port80.pcap; pcapwire extract --pcap $D/port80.pcap --out $D/carved"
pcapwire query --port 80 --case demo --event carve -w "$D/port80.pcap"
status=0
pcapwire extract --pcap "$D/port80.pcap" --out "$D/carved" --json >"$D/carved.jsonl" || status=$?
# exit 1 = partial: transfers still running when the demo capture ends are kept, marked
# incomplete with their missing byte ranges
[ "$status" -le 1 ] || exit "$status"
python -c '
import collections, json, sys
recs = [json.loads(line) for line in sys.stdin]
kinds = collections.Counter(r["kind"] for r in recs)
print("   carved:", ", ".join(f"{n} {k}(s)" for k, n in sorted(kinds.items())))
for r in [r for r in recs if r["kind"] == "file"][:3]:
    print("   %s…  %6d B  %-26s %s" % (r["sha256"][:16], r["size"], r.get("mime_type", "?"),
                                     r.get("filename", "")[:50]))
' <"$D/carved.jsonl"
echo "== done: store in $D/store, carved files in $D/carved;"
echo "   the same store over HTTP: pcapwire --data-dir $D/store serve  (see README: tokens, dashboard)"
