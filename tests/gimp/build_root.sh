#!/usr/bin/env bash
# Build (once) a Debian trixie root with GIMP 3.0 for the real-GIMP plug-in test.
#
# The root is cached at a fixed path ($INSTRUCTIR_GIMP_ROOT, default
# /var/cache/instructir-studio/gimp-trixie) and reused when it is complete.
# Needs root (mmdebstrap + chroot); on a machine where that is impossible it
# prints why and exits 0, and tests/test_gimp_real.py skips with that reason.
set -euo pipefail

ROOT="${INSTRUCTIR_GIMP_ROOT:-/var/cache/instructir-studio/gimp-trixie}"
STAMP="$ROOT/.instructir-root-ok"

if [[ -f "$STAMP" ]]; then
    echo "gimp root: cached at $ROOT"
    exit 0
fi
if [[ "$(id -u)" != 0 ]]; then
    echo "gimp root: not root, cannot build $ROOT (the real-GIMP test will skip)"
    exit 0
fi
if ! command -v mmdebstrap >/dev/null; then
    echo "gimp root: installing mmdebstrap"
    APT=(apt-get -y -q -o DPkg::Lock::Timeout=600)
    ("${APT[@]}" install mmdebstrap >/dev/null 2>&1 || { "${APT[@]}" update >/dev/null && "${APT[@]}" install mmdebstrap >/dev/null; }) \
        || { echo "gimp root: mmdebstrap cannot be installed (the real-GIMP test will skip)"; exit 0; }
fi

# The trixie suite on the mirror the machine's apt sources already use.
# (Only enabled source files; the Debian archive itself, not security or third-party repositories.)
SOURCES=()
for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [[ -f "$f" ]] && SOURCES+=("$f")
done
MIRROR="$( (grep -hoE '^[[:space:]]*(URIs:|deb)[[:space:]]+(\[[^]]*\][[:space:]]+)?[^ ]+' "${SOURCES[@]}" 2>/dev/null || true) \
          | awk '{print $NF}' | grep -E '/debian/?$' | grep -v -- '-security' | head -n1)"
MIRROR="${INSTRUCTIR_GIMP_MIRROR:-${MIRROR:-http://deb.debian.org/debian}}"

echo "gimp root: building $ROOT from $MIRROR trixie (a few minutes, ~0.7 GB)"
rm -rf "$ROOT"
mkdir -p "$(dirname "$ROOT")"
TMP="$ROOT.partial"
rm -rf "$TMP"
start=$(date +%s)
if ! mmdebstrap --quiet --variant=apt --include=gimp,python3-numpy,ca-certificates \
        trixie "$TMP" "deb $MIRROR trixie main"; then
    rm -rf "$TMP"
    echo "gimp root: mmdebstrap failed (the real-GIMP test will skip)"
    exit 0
fi
rm -rf "$TMP/var/cache/apt/archives/"*.deb
touch "$TMP/.instructir-root-ok"
mv "$TMP" "$ROOT"
echo "gimp root: built in $(( $(date +%s) - start )) s"
