#!/usr/bin/env bash
# Install Debian's Chromium for the browser test when it is missing and we may install packages.
# Never fails: without a browser the browser test skips and says why.
set -u
if command -v chromium >/dev/null 2>&1; then exit 0; fi
if ! command -v apt-get >/dev/null 2>&1; then
  echo "ensure_chromium: no apt-get here; install Chromium yourself to run the browser test"; exit 0
fi
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "ensure_chromium: not root and no passwordless sudo; the browser test will be skipped"; exit 0
  fi
fi
echo "ensure_chromium: installing Debian's chromium for the browser test"
$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null \
  || echo "ensure_chromium: could not install chromium; the browser test will be skipped"
exit 0
