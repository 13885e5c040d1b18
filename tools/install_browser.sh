#!/usr/bin/env bash
# Make sure a Chromium is there for the live page's browser tests (tests/apps/test_serve.py): Debian's package,
# installed once when missing and when this runs as root with apt-get. Never fails the caller: without a
# browser those tests skip and say why.
set -u
if [ -n "${DIFFUSIONBERT_CHROMIUM:-}" ]; then exit 0; fi
for browser in chromium chromium-browser google-chrome; do
  if command -v "$browser" >/dev/null 2>&1; then exit 0; fi
done
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing Debian's chromium for the browser tests (once; about a minute)"
  if ! (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium) >/tmp/diffusionbert-chromium.log 2>&1; then
    echo "warning: could not install chromium (see /tmp/diffusionbert-chromium.log); the browser tests will skip"
  fi
else
  echo "note: no Chromium here and no root apt-get to install it; the browser tests will skip (install chromium to run them)"
fi
exit 0
