#!/usr/bin/env bash
# Installs every Debian 12 package the build, the tests and the tiny-model
# tooling need. Run as root (CI runs as root); uses sudo otherwise.
set -euo pipefail

PACKAGES=(
  build-essential cmake ninja-build pkg-config git
  clang libclang-rt-14-dev            # libFuzzer targets, sanitizers
  libzmq3-dev libprotobuf-c-dev protobuf-c-compiler
  libsentencepiece-dev sentencepiece  # library + spm_train/spm_encode for tests
  libjemalloc-dev libyaml-dev libhwloc-dev libjson-c-dev
  libmicrohttpd-dev                   # the Prometheus metrics port (--metrics-port)
  python3 python3-numpy               # the numpy reference forward pass
  iproute2                            # network namespaces for multi-host tests, tc (tbf)
  nftables                            # packet loss on veth links in the chaos soak
  chromium                            # the chat page's test (headless, driven by playwright-core)
  curl                                # tests of `sluice serve`'s endpoints
)
# Retraining the tiny models (not needed to build or test) also wants
# python3-torch and libopenblas0-pthread: scripts/install-deps.sh --train.
if [[ "${1:-}" == "--train" ]]; then
  PACKAGES+=(python3-torch libopenblas0-pthread)
fi

SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node.js and npm for the serve tests (the openai npm client, playwright-core):
# Debian's packages where the machine has none (an image may bring its own
# Node.js with npm inside, which Debian's npm package would conflict with).
if ! command -v npm >/dev/null || ! command -v node >/dev/null; then
  missing+=(nodejs npm)
fi
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi

# The serve tests' node packages (openai, playwright-core) go into
# tests/node/node_modules (ignored by git), pinned by its package-lock.json.
if command -v npm >/dev/null; then
  here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
  (cd "$here/tests/node" && npm ci --no-audit --no-fund --silent) >&2
fi
