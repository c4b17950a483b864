#!/usr/bin/env bash
# Idempotent setup for a fresh Debian 12/13 machine, run as root.
# Installs system packages (libpcap, tcpdump, tshark, yara, libmagic, Suricata, mingw,
# chromium, the ASan/UBSan runtimes), then a virtualenv in .venv with pcapwire and its test
# tools.
set -euo pipefail
cd "$(dirname "$0")/.."

# libasan8/libubsan1: GCC's AddressSanitizer and UBSan runtimes, for the sanitizer build the
# test command fuzzes (tests/fuzz/fuzz_native.py, PCAPWIRE_FUZZ_ASAN=1).
# tcpreplay: sends generated traffic inside the capture tests' network namespaces.
# zstd, openssl, unzip: what the tests use to read compressed segments and to check custody
# bundles and their signatures the way a user without pcapwire would.
# nats-server: the JetStream server the cluster tests start on 127.0.0.1 (issue 14's job
# queue; a single machine never needs it).
# libsqlite3-dev: the native module's SQL functions link the SQLite library Python's
# sqlite3 loads (core/native/sqlfuncs.c).
APT_PACKAGES=(build-essential python3-dev python3-venv libpcap-dev libsqlite3-dev tcpdump
  tshark yara libmagic1 gcc-mingw-w64-x86-64 chromium iproute2 jq curl libasan8 libubsan1 tcpreplay
  zstd openssl unzip nats-server)

need_apt=()
for p in "${APT_PACKAGES[@]}" suricata suricata-update; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt+=("$p")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
  export DEBIAN_FRONTEND=noninteractive
  . /etc/os-release
  if [ "${VERSION_CODENAME:-}" = bookworm ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
    echo "deb http://deb.debian.org/debian bookworm-backports main" > /etc/apt/sources.list.d/pcapwire-backports.list
  fi
  echo "setup: installing ${need_apt[*]}" >&2
  apt-get update -qq
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
  if [ "${VERSION_CODENAME:-}" = bookworm ]; then
    apt-get install -y -qq -t bookworm-backports suricata suricata-update >/dev/null
  else
    apt-get install -y -qq suricata suricata-update >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.pcapwire-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ] || [ setup.py -nt "$stamp" ] \
   || [ -n "$(find core -name '*.[ch]' -newer "$stamp" -print -quit)" ]; then
  .venv/bin/pip install -q --upgrade pip >/dev/null
  .venv/bin/pip install -q -e '.[test]'
  touch "$stamp"
fi
# Byte-compile the package: where PYTHONDONTWRITEBYTECODE is set (this project's machines
# set it), every `pcapwire` process would otherwise compile its modules again (0.2-1 s per
# CLI call, which the tests and the whole-process benchmarks would pay each time).
.venv/bin/python -m compileall -q core plugins >/dev/null
