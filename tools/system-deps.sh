#!/usr/bin/env bash
# Debian packages the tests need and pip cannot give: redis-server and
# redis-sentinel (the HA tests start their own, on free loopback ports, never
# the system service); chromium and chromium-driver (the deliveries page's
# test drives a headless browser with Selenium; nothing is downloaded at run time).
# Installs only what is missing; uses sudo when not root.
set -euo pipefail
missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
[ -x /usr/bin/chromium ] || missing+=(chromium)
[ -x /usr/bin/chromedriver ] || missing+=(chromium-driver)
[ ${#missing[@]} -eq 0 ] && exit 0
sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing Debian packages: ${missing[*]}" >&2
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}"
