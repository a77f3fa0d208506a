#!/usr/bin/env bash
# deps.sh: check, and as root install, what building and testing needs.
# Prints exactly what is missing when it cannot install it.
set -euo pipefail

need_pkgs=()
have() { command -v "$1" >/dev/null 2>&1; }

[ -x /usr/lib/postgresql/15/bin/initdb ] || need_pkgs+=(postgresql-15)
[ -x /usr/lib/postgresql/15/bin/pg_regress ] || [ -x /usr/lib/postgresql/15/lib/pgxs/src/test/regress/pg_regress ] || need_pkgs+=(postgresql-server-dev-15)
{ have pg_config && [ -f "$(pg_config --pgxs 2>/dev/null)" ]; } || need_pkgs+=(postgresql-server-dev-15)
[ -f /usr/share/postgresql/15/extension/pgstattuple.control ] || need_pkgs+=(postgresql-contrib)
have psql || need_pkgs+=(postgresql-client-15)
have gcc || need_pkgs+=(gcc)
[ -f /usr/include/openssl/evp.h ] || need_pkgs+=(libssl-dev)
have make || need_pkgs+=(make)
[ -x /usr/lib/postgresql/15/bin/pgbench ] || need_pkgs+=(postgresql-contrib)
# promtool checks and unit-tests deploy/prometheus/alerts.yml and the
# scraped metrics in `make test`.
have promtool || need_pkgs+=(prometheus)
have runuser || need_pkgs+=(util-linux)

# Deduplicate.
mapfile -t need_pkgs < <(printf '%s\n' "${need_pkgs[@]}" | sort -u | sed '/^$/d')

if [ ${#need_pkgs[@]} -gt 0 ]; then
	if [ "$(id -u)" = 0 ]; then
		echo "deps: installing ${need_pkgs[*]}"
		export DEBIAN_FRONTEND=noninteractive
		apt-get update -qq
		apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
	else
		echo "deps: missing Debian packages: ${need_pkgs[*]}" >&2
		echo "deps: install them with: sudo apt-get install ${need_pkgs[*]}" >&2
		exit 1
	fi
fi
if ! have go; then
	if [ -x /usr/local/go/bin/go ]; then
		echo "deps: go is at /usr/local/go/bin but not on PATH: export PATH=\$PATH:/usr/local/go/bin" >&2
	else
		echo "deps: Go 1.26 or newer is missing (https://go.dev/dl)" >&2
	fi
	exit 1
fi
