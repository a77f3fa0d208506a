#!/usr/bin/env bash
# install.sh: build and install ruvector_healing and ruvector-sidecar, or
# remove exactly what an earlier install put there.
#
#   scripts/install.sh [install]     build, then install both
#   scripts/install.sh uninstall     remove the files listed in the manifest
#
# Environment:
#   PG_CONFIG    pg_config of the PostgreSQL 15 server to install into (default: pg_config on PATH).
#                The extension goes where it says (--pkglibdir, --sharedir/extension): PostgreSQL
#                15 loads control files from nowhere else.
#   DESTDIR      staging root for packaging (default: empty, the live system).
#   PREFIX       prefix of the sidecar binary and the manifest (default: /usr/local).
#   BINDIR       directory of the sidecar binary (default: $PREFIX/bin).
#   SIDECAR_BIN  install this prebuilt sidecar instead of building one.
#   GO           the go command (default: go, then /usr/local/go/bin/go).
#
# The manifest ($PREFIX/share/ruvector-healing/install-manifest) lists every
# installed file, so uninstall removes those and nothing else. The image
# build (deploy/docker/Dockerfile) runs this script, and the deployment test
# (sidecar/cmd/ruvector-sidecar/deploy_test.go) runs it with DESTDIR, so the
# image, `make install` and the test cannot drift apart.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_CONFIG=${PG_CONFIG:-pg_config}
DESTDIR=${DESTDIR:-}
PREFIX=${PREFIX:-/usr/local}
BINDIR=${BINDIR:-$PREFIX/bin}
MANIFEST_DIR=$PREFIX/share/ruvector-healing
MANIFEST=$MANIFEST_DIR/install-manifest
SIDECAR_NAME=ruvector-sidecar
PG_MAJOR_WANTED=15

die() {
	echo "install.sh: $*" >&2
	exit 1
}

case "${1:-install}" in
install | uninstall) action=${1:-install} ;;
-h | --help | help)
	sed -n '2,22p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*) die "unknown action \"$1\": want install or uninstall (scripts/install.sh -h for help)" ;;
esac

for v in PREFIX BINDIR; do
	case "${!v}" in
	/*) ;;
	*) die "$v=\"${!v}\" must be an absolute path" ;;
	esac
done
if [ -n "$DESTDIR" ]; then
	case "$DESTDIR" in
	/*) ;;
	*) die "DESTDIR=\"$DESTDIR\" must be an absolute path" ;;
	esac
fi

# A directory the caller may not write: say so before doing anything.
check_writable() {
	local dir=$1
	while [ ! -e "$dir" ]; do dir=$(dirname "$dir"); done
	[ -w "$dir" ] || die "$dir is not writable: run as root (sudo make $action), or set DESTDIR to stage the files"
}

uninstall() {
	local m=$DESTDIR$MANIFEST
	[ -f "$m" ] || die "no install manifest at $m: nothing was installed with PREFIX=$PREFIX${DESTDIR:+ DESTDIR=$DESTDIR} (set the PREFIX used at install time)"
	check_writable "$(dirname "$m")"
	local path n=0
	while IFS= read -r path; do
		[ -n "$path" ] || continue
		case "$path" in
		/*) ;;
		*) die "manifest $m: \"$path\" is not an absolute path; refusing to continue" ;;
		esac
		case "$path" in
		*/../* | */..) die "manifest $m: \"$path\" contains ..; refusing to continue" ;;
		esac
		if [ -e "$DESTDIR$path" ] || [ -L "$DESTDIR$path" ]; then
			rm -f -- "$DESTDIR$path"
			echo "removed $DESTDIR$path"
			n=$((n + 1))
		fi
	done <"$m"
	rm -f -- "$m"
	rmdir -- "$DESTDIR$MANIFEST_DIR" 2>/dev/null || true
	echo "install.sh: uninstalled $n files"
}

if [ "$action" = uninstall ]; then
	uninstall
	exit 0
fi

# --- install -----------------------------------------------------------------

command -v "$PG_CONFIG" >/dev/null 2>&1 || die "PG_CONFIG=$PG_CONFIG not found: install postgresql-server-dev-$PG_MAJOR_WANTED or set PG_CONFIG=/path/to/pg_config"
pg_version=$("$PG_CONFIG" --version)
pg_major=$(sed -E 's/^PostgreSQL ([0-9]+).*/\1/' <<<"$pg_version")
[ "$pg_major" = "$PG_MAJOR_WANTED" ] || die "$PG_CONFIG is \"$pg_version\": ruvector_healing is built for PostgreSQL $PG_MAJOR_WANTED (set PG_CONFIG to its pg_config)"
[ -f "$("$PG_CONFIG" --pgxs)" ] || die "PGXS is missing ($("$PG_CONFIG" --pgxs)): install postgresql-server-dev-$PG_MAJOR_WANTED"

GO=${GO:-go}
if [ -z "${SIDECAR_BIN:-}" ] && ! command -v "$GO" >/dev/null 2>&1; then
	if [ -x /usr/local/go/bin/go ]; then GO=/usr/local/go/bin/go; else die "go not found: install Go >= 1.26, set GO=, or give a prebuilt binary with SIDECAR_BIN="; fi
fi

if [ -z "$DESTDIR" ]; then
	check_writable "$("$PG_CONFIG" --pkglibdir)"
	check_writable "$("$PG_CONFIG" --sharedir)/extension"
	check_writable "$BINDIR"
	check_writable "$MANIFEST_DIR"
fi

stage=$(mktemp -d "${TMPDIR:-/tmp}/ruvector-install.XXXXXX")
trap 'rm -rf "$stage"' EXIT

# The extension: PGXS installs into the staging root; what lands there is
# exactly what this install adds.
make -s -C "$ROOT/extension_stub" with_llvm=no PG_CONFIG="$PG_CONFIG"
make -s -C "$ROOT/extension_stub" with_llvm=no PG_CONFIG="$PG_CONFIG" install DESTDIR="$stage/root" >/dev/null

# The sidecar.
if [ -n "${SIDECAR_BIN:-}" ]; then
	[ -x "$SIDECAR_BIN" ] || die "SIDECAR_BIN=$SIDECAR_BIN is not an executable file"
	install -D -m 0755 "$SIDECAR_BIN" "$stage/root$BINDIR/$SIDECAR_NAME"
else
	(cd "$ROOT" && "$GO" build -o "$stage/root$BINDIR/$SIDECAR_NAME" ./sidecar/cmd/ruvector-sidecar)
fi

# Copy the staged files into place, recording each.
mkdir -p "$DESTDIR$MANIFEST_DIR"
manifest_tmp=$stage/manifest
: >"$manifest_tmp"
# An earlier install's files stay listed (uninstall skips the missing), so
# installing twice and uninstalling once still removes everything.
[ -f "$DESTDIR$MANIFEST" ] && cat "$DESTDIR$MANIFEST" >"$manifest_tmp"
while IFS= read -r -d '' f; do
	rel=${f#"$stage/root"}
	mode=$(stat -c %a "$f")
	install -D -m "$mode" "$f" "$DESTDIR$rel"
	echo "installed $DESTDIR$rel"
	echo "$rel" >>"$manifest_tmp"
done < <(find "$stage/root" -type f -print0 | sort -z)
echo "$MANIFEST" >>"$manifest_tmp"
sort -u "$manifest_tmp" >"$DESTDIR$MANIFEST"
chmod 0644 "$DESTDIR$MANIFEST"

cat <<EOF
install.sh: installed ruvector_healing into $("$PG_CONFIG" --pkglibdir) and $("$PG_CONFIG" --sharedir)/extension${DESTDIR:+ (under DESTDIR=$DESTDIR)},
and $BINDIR/$SIDECAR_NAME. Next (deploy/README.md):
  postgresql.conf:  shared_preload_libraries = 'ruvector_healing'   and   wal_level = logical (for --changefeed)
  restart the server, then:  CREATE EXTENSION ruvector_healing;
EOF
