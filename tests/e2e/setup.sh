#!/usr/bin/env bash
# Installs every peer the end-to-end suite in tests/e2e needs, on a fresh
# Debian machine or again on one that already has them (idempotent):
#   - Debian packages: chromium (the browser the pages run in),
#     python3-tornado (the Tornado push server, run with /usr/bin/python3
#     because the python3 on PATH may be another interpreter), and haproxy
#     (the L4 balancer in front of two wsgates in fleet_test.go);
#   - node and npm (from Debian only if missing);
#   - the pinned npm packages of tests/e2e/package-lock.json (npm ci).
# playwright-core never downloads a browser: browser.js launches
# /usr/bin/chromium, so no browser download step exists here.
#
# With --quiet (what `make test` runs) it prints nothing and changes
# nothing when every peer is there already, and npm ci runs only when
# node_modules is missing or older than package-lock.json.
set -euo pipefail
cd "$(dirname "$0")"

quiet=false
if [ "${1:-}" = "--quiet" ]; then
	quiet=true
fi

export DEBIAN_FRONTEND=noninteractive

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
	SUDO="sudo"
fi

# apt_install installs the named packages; the package lists are refreshed
# only when the first attempt fails, so a machine with fresh lists does not
# pay for an update on every run.
apt_install() {
	echo "setup.sh: apt-get install $*"
	if ! $SUDO apt-get install -y --no-install-recommends "$@"; then
		$SUDO apt-get update
		$SUDO apt-get install -y --no-install-recommends "$@"
	fi
}

missing=()
if [ ! -x /usr/bin/chromium ]; then
	missing+=(chromium)
fi
if ! /usr/bin/python3 -c 'import tornado' 2>/dev/null; then
	missing+=(python3-tornado)
fi
if [ ! -x /usr/sbin/haproxy ]; then
	missing+=(haproxy)
fi
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	missing+=(nodejs npm)
fi
if [ ${#missing[@]} -gt 0 ]; then
	apt_install "${missing[@]}"
fi

if $quiet && [ ${#missing[@]} -eq 0 ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
	exit 0
fi

echo "setup.sh: node $(node --version), npm $(npm --version), $(/usr/bin/chromium --version 2>/dev/null || echo chromium), tornado $(/usr/bin/python3 -c 'import tornado; print(tornado.version)'), $(/usr/sbin/haproxy -v | head -n 1)"

# Nothing npm installs may fetch a browser; playwright-core has no install
# script, and this makes sure no other package tries either.
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 PUPPETEER_SKIP_DOWNLOAD=1
if [ -f package-lock.json ]; then
	npm ci --no-audit --no-fund
else
	npm install --no-audit --no-fund
fi
echo "setup.sh: ok"
