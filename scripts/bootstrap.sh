#!/usr/bin/env bash
# Installs what the Derrick dev/test harness needs, idempotently:
#   Debian packages (mosquitto, postgresql, ...), a Java >= 17, the pinned QuestDB jar,
#   the pinned uv, the project's locked Python environment (.venv) and the ingest worker's
#   modules compiled with mypyc (scripts/compile.py).
# Writes the discovered paths to "$DERRICK_CACHE/env" for harness/ to read.
# Never leaves a Debian-managed mosquitto or postgresql service running: the harness
# starts its own processes on free loopback ports. Likewise for an sshd this script installed
# (openssh-server, for the fleet test that converges appliances over SSH in network
# namespaces): it starts its own sshd with its own keys; the package's service is disabled
# with Debian's /etc/ssh/sshd_not_to_be_run. An sshd that was there before is left alone.
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DERRICK_CACHE="${DERRICK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/derrick}"
UV_VERSION="0.13.8"
QUESTDB_LOCK="$REPO_ROOT/harness/questdb.lock"

log() { printf '[bootstrap] %s\n' "$*"; }
die() { printf '[bootstrap] ERROR: %s\n' "$*" >&2; exit 1; }

SUDO=()
if [[ "$(id -u)" -ne 0 ]]; then
    command -v sudo >/dev/null 2>&1 || die "not root and sudo is missing: run as root or install sudo"
    SUDO=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive

mkdir -p "$DERRICK_CACHE"

# ---------------------------------------------------------------- Debian packages
APT_UPDATED=0
pkg_installed() { dpkg -s "$1" 2>/dev/null | grep -q '^Status: install ok installed'; }
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null; }

apt_install() {
    # apt_install PKG...: installs the packages that are missing, apt-get update at most once.
    local missing=() pkg
    for pkg in "$@"; do
        if pkg_installed "$pkg"; then
            log "$pkg: already present ($(pkg_version "$pkg"))"
        else
            missing+=("$pkg")
        fi
    done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    log "apt-get install ${missing[*]}"
    "${SUDO[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    for pkg in "${missing[@]}"; do
        pkg_installed "$pkg" || die "$pkg did not install"
        log "$pkg: installed ($(pkg_version "$pkg"))"
    done
}

stop_debian_services() {
    # The packages' maintainer scripts may start services on the default ports; stop them.
    if pgrep -x mosquitto >/dev/null 2>&1 && pgrep -a -x mosquitto | grep -q '/etc/mosquitto/mosquitto.conf'; then
        log "stopping the Debian mosquitto service"
        "${SUDO[@]}" service mosquitto stop >/dev/null 2>&1 || true
        local pid
        for pid in $(pgrep -f '^/usr/sbin/mosquitto -c /etc/mosquitto/mosquitto.conf' || true); do
            "${SUDO[@]}" kill "$pid" 2>/dev/null || true
        done
    fi
    if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
        "${SUDO[@]}" systemctl disable --now mosquitto >/dev/null 2>&1 || true
        "${SUDO[@]}" systemctl disable --now postgresql >/dev/null 2>&1 || true
    fi
    if [[ -f /etc/ssh/sshd_not_to_be_run ]]; then
        # Debian's init script and systemd unit honour the file; stop an sshd they started anyway.
        # (its pid file is /run/sshd.pid; the tests' sshds keep theirs in their own directories)
        if [[ -f /run/sshd.pid ]] && "${SUDO[@]}" kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; then
            log "stopping the Debian ssh service"
            "${SUDO[@]}" service ssh stop >/dev/null 2>&1 || true
        fi
        if command -v systemctl >/dev/null 2>&1 && [[ -d /run/systemd/system ]]; then
            "${SUDO[@]}" systemctl disable --now ssh.service ssh.socket >/dev/null 2>&1 || true
        fi
    fi
    if command -v pg_lsclusters >/dev/null 2>&1; then
        local ver name port status _rest
        while read -r ver name port status _rest; do
            if [[ "$status" == online* ]]; then
                log "stopping the Debian postgresql cluster $ver/$name (port $port)"
                "${SUDO[@]}" pg_ctlcluster "$ver" "$name" stop >/dev/null 2>&1 || true
            fi
        done < <(pg_lsclusters --no-header 2>/dev/null || true)
    fi
}

if ! pkg_installed openssh-server; then
    # Installed here for the tests only: the package's own sshd must never run (port 22).
    "${SUDO[@]}" mkdir -p /etc/ssh
    "${SUDO[@]}" touch /etc/ssh/sshd_not_to_be_run
fi
apt_install mosquitto mosquitto-clients postgresql procps ca-certificates curl \
    openssh-server openssh-client iproute2
stop_debian_services
[[ -x /usr/sbin/sshd ]] || die "/usr/sbin/sshd not found after install (apt-get install openssh-server)"

MOSQUITTO_BIN="$(command -v mosquitto || true)"
[[ -z "$MOSQUITTO_BIN" && -x /usr/sbin/mosquitto ]] && MOSQUITTO_BIN=/usr/sbin/mosquitto
[[ -x "$MOSQUITTO_BIN" ]] || die "mosquitto binary not found after install (apt-get install mosquitto)"

PG_BINDIR=""
for dir in $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V -r); do
    if [[ -x "$dir/initdb" && -x "$dir/postgres" && -x "$dir/pg_ctl" ]]; then PG_BINDIR="$dir"; break; fi
done
[[ -n "$PG_BINDIR" ]] || die "PostgreSQL server binaries not found in /usr/lib/postgresql/*/bin (apt-get install postgresql)"
log "postgresql server binaries: $PG_BINDIR"

# ---------------------------------------------------------------- promtool (Debian's prometheus)
# The alert rules are evaluated by promtool in the tests. Only the binary is wanted, not a
# Prometheus service on port 9090: the Debian package is downloaded and unpacked into the
# cache, never installed.
PROMTOOL_DIR="$DERRICK_CACHE/prometheus"
PROMTOOL_BIN="$PROMTOOL_DIR/usr/bin/promtool"
if [[ -x "$PROMTOOL_BIN" ]] && "$PROMTOOL_BIN" --version >/dev/null 2>&1; then
    log "promtool: already present ($PROMTOOL_BIN)"
else
    if [[ "$APT_UPDATED" -eq 0 ]] && ! apt-cache show prometheus >/dev/null 2>&1; then
        log "apt-get update"
        "${SUDO[@]}" apt-get update -qq
        APT_UPDATED=1
    fi
    deb_dir="$(mktemp -d)"
    chmod 0777 "$deb_dir"  # apt's download user writes here
    log "promtool: apt-get download prometheus"
    (cd "$deb_dir" && apt-get download -qq prometheus >/dev/null 2>&1) \
        || die "apt-get download prometheus failed (Debian's prometheus package gives promtool)"
    rm -rf "$PROMTOOL_DIR"
    dpkg-deb -x "$deb_dir"/prometheus_*.deb "$PROMTOOL_DIR" || die "could not unpack prometheus"
    rm -rf "$deb_dir"
    [[ -x "$PROMTOOL_BIN" ]] || die "promtool not in Debian's prometheus package"
    log "promtool: installed ($PROMTOOL_BIN, $("$PROMTOOL_BIN" --version 2>&1 | head -n1))"
fi

# ---------------------------------------------------------------- Java >= 17
java_major() {
    # Prints the feature version of the java binary $1, or nothing.
    "$1" -XshowSettings:properties -version 2>&1 \
        | sed -n 's/^ *java\.specification\.version = \([0-9][0-9]*\).*/\1/p' | head -n1
}
java_ok() { local major; major="$(java_major "$1" || true)"; [[ -n "$major" && "$major" -ge 17 ]]; }

JAVA_BIN=""
if [[ -n "${DERRICK_JAVA:-}" ]]; then
    java_ok "$DERRICK_JAVA" || die "DERRICK_JAVA=$DERRICK_JAVA is not a Java >= 17"
    JAVA_BIN="$DERRICK_JAVA"
elif [[ -x /usr/lib/jvm/temurin-25-jdk-amd64/bin/java ]] && java_ok /usr/lib/jvm/temurin-25-jdk-amd64/bin/java; then
    JAVA_BIN=/usr/lib/jvm/temurin-25-jdk-amd64/bin/java
elif command -v java >/dev/null 2>&1 && java_ok "$(command -v java)"; then
    JAVA_BIN="$(command -v java)"
else
    apt_install openjdk-17-jre-headless
    for cand in /usr/lib/jvm/java-17-openjdk-amd64/bin/java "$(command -v java || true)"; do
        if [[ -n "$cand" && -x "$cand" ]] && java_ok "$cand"; then JAVA_BIN="$cand"; break; fi
    done
fi
[[ -n "$JAVA_BIN" ]] || die "no Java >= 17 found: install openjdk-17-jre-headless or set DERRICK_JAVA"
log "java: $JAVA_BIN (Java $(java_major "$JAVA_BIN"))"

# ---------------------------------------------------------------- pinned jars (Maven Central)
sha_of() { sha256sum "$1" | cut -d' ' -f1; }
# fetch_jar LOCK GROUP_PATH ARTIFACT SUFFIX: the jar pinned by LOCK (version=, sha256=) into
# $DERRICK_CACHE/ARTIFACT/, checked; sets FETCHED_JAR.
fetch_jar() {
    local lock=$1 group_path=$2 artifact=$3 suffix=$4 version sha url got
    version="$(sed -n "s/^version=//p" "$lock" | head -n1)"
    sha="$(sed -n "s/^sha256=//p" "$lock" | head -n1)"
    [[ -n "$version" && -n "$sha" ]] || die "$lock must hold version= and sha256= lines"
    FETCHED_JAR="$DERRICK_CACHE/$artifact/$artifact-$version$suffix.jar"
    url="https://repo1.maven.org/maven2/$group_path/$artifact/$version/$artifact-$version$suffix.jar"
    if [[ -f "$FETCHED_JAR" && "$(sha_of "$FETCHED_JAR")" == "$sha" ]]; then
        log "$artifact $version: already present ($FETCHED_JAR)"
        return 0
    fi
    [[ -f "$FETCHED_JAR" ]] && log "$artifact $version: cached jar has a wrong checksum, downloading again"
    mkdir -p "$(dirname "$FETCHED_JAR")"
    FETCH_TMP="$(mktemp "$FETCHED_JAR.part.XXXXXX")"
    trap 'rm -f "$FETCH_TMP"' EXIT
    log "$artifact $version: downloading $url"
    curl -fsSL --retry 3 --retry-delay 2 -o "$FETCH_TMP" "$url" || die "download of $url failed"
    got="$(sha_of "$FETCH_TMP")"
    [[ "$got" == "$sha" ]] || die "$artifact jar checksum mismatch: expected $sha, got $got"
    chmod 0644 "$FETCH_TMP"
    mv -f "$FETCH_TMP" "$FETCHED_JAR"
    trap - EXIT
    log "$artifact $version: installed ($FETCHED_JAR)"
}
fetch_jar "$QUESTDB_LOCK" org/questdb questdb ""
QDB_JAR=$FETCHED_JAR
# S3Proxy: the S3-compatible server the cold path's s3:// archive is tested against.
fetch_jar "$REPO_ROOT/harness/s3proxy.lock" org/gaul s3proxy "-jar-with-dependencies"
S3PROXY_JAR=$FETCHED_JAR

# ---------------------------------------------------------------- Python + uv + .venv
PYTHON_BIN=""
find_python() {
    local cand exe
    for cand in python3.11 python3.12 python3.13 python3; do
        command -v "$cand" >/dev/null 2>&1 || continue
        exe="$("$cand" -c 'import sys; print(sys.executable if sys.version_info >= (3, 11) else "")' 2>/dev/null || true)"
        if [[ -n "$exe" && -x "$exe" ]]; then PYTHON_BIN="$exe"; return 0; fi
    done
    return 1
}
if ! find_python; then
    apt_install python3 python3-venv
    find_python || die "no Python >= 3.11 found: install python3 (>= 3.11) and python3-venv"
fi
log "python: $PYTHON_BIN ($("$PYTHON_BIN" -c 'import platform; print(platform.python_version())'))"

UV_VENV="$DERRICK_CACHE/uv-venv"
UV_BIN="$UV_VENV/bin/uv"
if [[ -x "$UV_BIN" ]] && [[ "$("$UV_BIN" --version 2>/dev/null)" == "uv $UV_VERSION"* ]]; then
    log "uv $UV_VERSION: already present ($UV_BIN)"
else
    log "uv $UV_VERSION: installing into $UV_VENV"
    if ! "$PYTHON_BIN" -c 'import venv, ensurepip' 2>/dev/null; then
        apt_install python3-venv
    fi
    rm -rf "$UV_VENV"
    "$PYTHON_BIN" -m venv "$UV_VENV"
    "$UV_VENV/bin/python" -m pip install --quiet --disable-pip-version-check "uv==$UV_VERSION"
    log "uv $UV_VERSION: installed ($UV_BIN)"
fi

log "uv sync --frozen"
(cd "$REPO_ROOT" && "$UV_BIN" sync --frozen --python "$PYTHON_BIN")

# ---------------------------------------------------------------- the worker's compiled modules
# scripts/compile.py builds the ingest worker's hot modules with mypyc (ingest/compiled.py),
# unless the build in build/mypyc/lib matches the sources: a C compiler and the headers of
# the interpreter the venv runs on.
command -v cc >/dev/null 2>&1 || apt_install gcc libc6-dev
PY_INCLUDE="$("$PYTHON_BIN" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')"
if [[ ! -f "$PY_INCLUDE/Python.h" ]]; then
    [[ "$PY_INCLUDE" == /usr/include/* ]] \
        || die "$PYTHON_BIN has no headers ($PY_INCLUDE/Python.h): install its development files"
    apt_install python3-dev
    [[ -f "$PY_INCLUDE/Python.h" ]] || die "python3-dev did not install $PY_INCLUDE/Python.h"
fi
"$REPO_ROOT/.venv/bin/python" "$REPO_ROOT/scripts/compile.py" | sed 's/^/[bootstrap] /'

# ---------------------------------------------------------------- Node.js interop peers
# Independent Sparkplug implementations (Eclipse Tahu JS) for tests/interop: exact versions
# from tests/interop/node/package-lock.json, installed with `npm ci` when node_modules is
# missing or older than the lock. Install scripts are not run (none is needed).
PEERS_DIR="$REPO_ROOT/tests/interop/node"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
    apt_install nodejs npm
fi
command -v node >/dev/null 2>&1 || die "node not found after install (apt-get install nodejs)"
log "node: $(command -v node) ($(node --version)), npm $(npm --version)"
PEERS_STAMP="$PEERS_DIR/node_modules/.package-lock.json"
if [[ -f "$PEERS_STAMP" && ! "$PEERS_DIR/package-lock.json" -nt "$PEERS_STAMP" ]]; then
    log "interop peers: already present ($PEERS_DIR/node_modules)"
else
    log "interop peers: npm ci in $PEERS_DIR"
    (cd "$PEERS_DIR" && npm ci --no-audit --no-fund --ignore-scripts --loglevel=error) \
        || die "npm ci in $PEERS_DIR failed"
    log "interop peers: installed"
fi

# ---------------------------------------------------------------- paths for the harness
ENV_FILE="$DERRICK_CACHE/env"
tmp_env="$(mktemp "$ENV_FILE.XXXXXX")"
cat >"$tmp_env" <<EOF
# Written by scripts/bootstrap.sh; read by harness/locate.py (environment variables win).
DERRICK_JAVA=$JAVA_BIN
DERRICK_QUESTDB_JAR=$QDB_JAR
DERRICK_S3PROXY_JAR=$S3PROXY_JAR
DERRICK_MOSQUITTO=$MOSQUITTO_BIN
DERRICK_PG_BINDIR=$PG_BINDIR
DERRICK_PROMTOOL=$PROMTOOL_BIN
EOF
chmod 0644 "$tmp_env"
mv -f "$tmp_env" "$ENV_FILE"
log "paths written to $ENV_FILE"
log "done"
