#!/usr/bin/env bash
# The demo: generate traffic, ingest it, list flows, pivot to one flow, check the result
# with tcpdump, run a non-indexable BPF query. Everything stays under ./demo-data.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
D=demo-data
export PCAPWIRE_DATA_DIR="$D/store"
mkdir -p "$D"
if [ ! -f "$D/demo.pcap" ]; then
  echo "== generating 128 MiB of demo traffic"
  python -c "from pcapwire.synth import generate; print(generate('$D/demo.pcap', 128 * 2**20))"
fi
echo "== pcapwire ingest (twice: the second run detects the file and skips it)"
pcapwire ingest "$D/demo.pcap"
pcapwire ingest "$D/demo.pcap"
echo "== pcapwire flows --port 8080 --limit 5"
pcapwire flows --port 8080 --limit 5
FLOW=$(pcapwire flows --port 8080 --limit 1 --json | python -c \
  'import json,sys; f=json.loads(sys.stdin.readline()); print(f"{f[\"proto\"]}:{f[\"src_ip\"]}:{f[\"src_port\"]}:{f[\"dest_ip\"]}:{f[\"dest_port\"]}")')
echo "== pcapwire query --five-tuple $FLOW --case demo --event pivot -w $D/flow.pcap"
pcapwire query --five-tuple "$FLOW" --case demo --event pivot --stats -w "$D/flow.pcap"
echo "   tcpdump reads it back: $(tcpdump -r "$D/flow.pcap" 2>/dev/null | wc -l) packets"
echo "== pcapwire query --bpf 'tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0' -w - | tcpdump -r - | wc -l"
pcapwire query --bpf 'tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0' --stats -w - \
  | tcpdump -r - 2>/dev/null | wc -l
echo "   tcpdump on the original file: $(tcpdump -r "$D/demo.pcap" 'tcp[tcpflags] & tcp-syn != 0 and tcp[tcpflags] & tcp-ack == 0' 2>/dev/null | wc -l)"
echo "== done; the store is in $D/store"
