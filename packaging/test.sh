#!/usr/bin/env bash
# Verifies dist/ (made by `make dist`) for real, on THIS machine, as root:
#   1. the same static binary in the .deb, the .rpm and the image
#   2. lintian, rpm -qip/-K, rpmlint; package contents and the env file
#   3. dpkg -i: user, modes, keys, check-config as aigw, systemd-analyze,
#      a start the way the unit starts it (READY=1, reload, stop), upgrade
#      keeps the edited env file and the keys, remove, purge
#   4. the same for the .rpm (rpm --dbpath <tmp> --nodeps)
#   5. the OCI image: config, umoci unpack, serve from a chroot as 65532
#   6. reproducibility: packaging the same binary again gives the same digests
# It refuses to run when aigw is already installed, and leaves the machine as
# it found it (package, user, files removed; tools stay). packaging/README.md
# explains each check.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -n1)
TARGET=x86_64-unknown-linux-musl
BIN=$ROOT/target/$TARGET/release/aigw
DEB=$ROOT/dist/aigw_${VERSION}_amd64.deb
RPM=$ROOT/dist/aigw-${VERSION}-1.x86_64.rpm
OCI=$ROOT/dist/aigw-${VERSION}-oci.tar
DOCKER_ARCHIVE=$ROOT/dist/aigw-${VERSION}-docker.tar
ENV_FILE=/etc/aigw/aigw.env
UNIT=/usr/lib/systemd/system/aigw.service
KEYS="/etc/aigw/keys/duo_workflow_jwt.key /etc/aigw/keys/aigw_jwt.key"
# The CI host presets CA variables (REQUESTS_CA_BUNDLE, ...): every run of
# aigw below starts from an empty environment.
CLEAN_PATH=/usr/sbin:/usr/bin:/sbin:/bin

T0=$SECONDS
step() { echo; echo "== packaging/test.sh [$((SECONDS - T0))s]: $*"; }
ok() { echo "   ok: $*"; }
fail() { echo "FAIL: $*" >&2; exit 1; }
# expect_stat PATH MODE OWNER:GROUP
expect_stat() {
    local got
    got=$(stat -c '%a %U:%G' "$1") || fail "$1 is missing"
    [ "$got" = "$2 $3" ] || fail "$1: expected $2 $3, got $got"
    ok "$1 $got"
}
sha() { sha256sum "$1" | cut -d' ' -f1; }
# grep -q for the end of a pipeline: reads all input, so that with pipefail
# the writer never dies of SIGPIPE.
has() { grep "$@" >/dev/null; }
free_ports() { python3 -c '
import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in socks))' "$1"; }

[ "$(id -u)" = 0 ] || fail "run as root (it installs packages on this machine)"
for f in "$DEB" "$RPM" "$OCI" "$DOCKER_ARCHIVE" "$BIN"; do
    [ -f "$f" ] || fail "$f is missing: run 'make dist' first"
done
if dpkg-query -W -f='${Status}' aigw 2>/dev/null | has installed ||
    getent passwd aigw >/dev/null || getent group aigw >/dev/null ||
    [ -e /etc/aigw ] || [ -e /var/lib/aigw ]; then
    fail "this machine already has aigw (package, user or /etc/aigw): remove it first"
fi

WORK=$(mktemp -d /tmp/aigw-pkgtest.XXXXXX)
chmod 0755 "$WORK"
RPMDB=$WORK/rpmdb
PIDS=()
cleanup() {
    local rc=$?
    set +e
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
    for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null; done
    if dpkg-query -W -f='${Status}' aigw 2>/dev/null | has -v not-installed; then
        dpkg --purge aigw >/dev/null 2>&1 || true
    fi
    if [ -d "$RPMDB" ] && rpm --dbpath "$RPMDB" -q aigw >/dev/null 2>&1; then
        rpm --dbpath "$RPMDB" -e --nodeps aigw >/dev/null 2>&1 || true
    fi
    getent passwd aigw >/dev/null && userdel aigw
    getent group aigw >/dev/null && groupdel aigw
    rm -rf /etc/aigw /var/lib/aigw "$WORK"
    rm -f /etc/systemd/system/multi-user.target.wants/aigw.service
    [ $rc = 0 ] && echo "== packaging/test.sh: all checks passed in $((SECONDS - T0))s" ||
        echo "== packaging/test.sh: FAILED (rc $rc) after $((SECONDS - T0))s" >&2
    exit $rc
}
trap cleanup EXIT

# Runs a command as the aigw user with nothing but the env file in its
# environment, as systemd's EnvironmentFile= + User= would.
as_aigw_with_env_file() {
    env -i PATH=$CLEAN_PATH setpriv --reuid aigw --regid aigw --init-groups \
        sh -c 'cd / && set -a && . /etc/aigw/aigw.env && set +a && exec "$@"' sh "$@"
}

# ---------------------------------------------------------------------------
step "1. one binary in every artifact"
want=$(sha "$BIN")
mkdir -p "$WORK/deb-x" "$WORK/rpm-x" "$WORK/oci-layout"
dpkg-deb -x "$DEB" "$WORK/deb-x"
(cd "$WORK/rpm-x" && rpm2archive - <"$RPM" | tar -xzf - --no-same-owner)
tar -xf "$OCI" -C "$WORK/oci-layout"
[ "$(sha "$WORK/deb-x/usr/bin/aigw")" = "$want" ] || fail ".deb binary differs from $BIN"
[ "$(sha "$WORK/rpm-x/usr/bin/aigw")" = "$want" ] || fail ".rpm binary differs from $BIN"
umoci unpack --image "$WORK/oci-layout:$VERSION" "$WORK/bundle" >/dev/null
[ "$(sha "$WORK/bundle/rootfs/usr/bin/aigw")" = "$want" ] || fail "image binary differs from $BIN"
file "$BIN" | has 'static-pie linked' || fail "$BIN is not static-pie"
ok "sha256 $want in .deb, .rpm and image"

# ---------------------------------------------------------------------------
step "2a. .deb metadata and lintian"
dpkg-deb -I "$DEB"
dpkg-deb -c "$DEB" | tee "$WORK/deb-contents"
dpkg-deb -f "$DEB" Architecture | has -x amd64 || fail "not amd64"
dpkg-deb -f "$DEB" Version | has -x "$VERSION" || fail "Version is not $VERSION"
dpkg-deb -I "$DEB" conffiles | has -x "$ENV_FILE" || fail "$ENV_FILE is not a conffile"
for p in ./usr/bin/aigw ./usr/lib/systemd/system/aigw.service ./usr/lib/sysusers.d/aigw.conf \
    .$ENV_FILE ./usr/share/man/man1/aigw.1.gz ./usr/share/bash-completion/completions/aigw \
    ./usr/share/zsh/vendor-completions/_aigw ./usr/share/fish/vendor_completions.d/aigw.fish \
    ./usr/share/doc/aigw/README.md ./usr/share/doc/aigw/LICENSE ./usr/share/doc/aigw/copyright; do
    awk '{print $6}' "$WORK/deb-contents" | has -x "$p" || fail ".deb lacks $p"
done
grep -Eq "^-rw-r----- (0/0|root/root) .* \.$ENV_FILE\$" "$WORK/deb-contents" || fail "$ENV_FILE is not 0640 in the .deb"
ok "control, conffiles, contents"
# Errors and warnings fail; the intended warnings are overridden, with reasons,
# in packaging/debian/lintian-overrides. First everything (info tags and the
# overrides, for the log; --show-overrides makes lintian exit 2), then the gate.
lintian -I --show-overrides "$DEB" || true
lintian --fail-on error,warning "$DEB"
ok "lintian: no error, no unexplained warning"

step "2b. .rpm metadata, signature digests and rpmlint"
rpm -qip "$RPM"
rpm -qlvp "$RPM"
rpm -qp --scripts "$RPM" >/dev/null
requires=$(rpm -qp --requires "$RPM" | sort -u | tr '\n' ' ')
echo "   requires: $requires"
case "$requires" in *rtld* | *lib*.so*) fail "auto-requires leaked in: $requires" ;; esac
rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags} %{FILEMODES:perms} %{FILEUSERNAME}:%{FILEGROUPNAME}\n]' "$RPM" |
    has -x "$ENV_FILE cn -rw-r----- root:aigw" || fail "$ENV_FILE is not %config(noreplace) 0640 root:aigw"
rpm -Kv "$RPM" | tee "$WORK/rpmK"
grep -q 'SHA256 digest: OK' "$WORK/rpmK" || fail "rpm -K: no SHA256 digest"
! grep -qi 'BAD\|NOT OK' "$WORK/rpmK" || fail "rpm -K: bad digest"
rpmlint -c packaging/rpm/rpmlint.toml -r packaging/rpm/aigw.rpmlintrc "$RPM"
ok "rpm -qip, -K, rpmlint (filters: packaging/rpm/aigw.rpmlintrc)"

step "2c. the env file lists every variable of the README; sysusers lines agree"
vars=$(awk '/^## /{p = /^## Configuration/} p' README.md |
    grep -o '`[A-Z][A-Z0-9_]*`' | tr -d '`' | sort -u | grep -vx 'JOURNAL_STREAM')
missing=""
for v in $vars; do grep -Eq "^#?$v=" packaging/aigw.env || missing="$missing $v"; done
[ -z "$missing" ] || fail "packaging/aigw.env lacks README variables:$missing"
ok "$(echo "$vars" | wc -w) README variables, all in packaging/aigw.env"
sysusers=$(grep '^u ' systemd/aigw.sysusers)
grep -qF "'$sysusers'" packaging/rpm/pre.sh || fail "packaging/rpm/pre.sh and systemd/aigw.sysusers differ"
ok "sysusers: $sysusers"

# ---------------------------------------------------------------------------
# The installed package, checked the same way after dpkg -i and rpm -i.
check_installed() {
    local how=$1 u
    u=$(getent passwd aigw) || fail "$how: no user aigw"
    IFS=: read -r _ _ uid gid _ home shell <<<"$u"
    [ "$uid" -lt 1000 ] && [ "$home" = /var/lib/aigw ] && [ "${shell##*/}" = nologin ] ||
        fail "$how: user aigw is not a system user with nologin: $u"
    [ "$(getent group aigw | cut -d: -f3)" = "$gid" ] || fail "$how: group aigw is not the user's group"
    ok "user $u"
    expect_stat /usr/bin/aigw 755 root:root
    expect_stat "$UNIT" 644 root:root
    expect_stat /usr/lib/sysusers.d/aigw.conf 644 root:root
    expect_stat "$ENV_FILE" 640 root:aigw
    expect_stat /etc/aigw/keys 700 aigw:aigw
    for k in $KEYS; do
        expect_stat "$k" 600 aigw:aigw
        head -n1 "$k" | has -x -- '-----BEGIN PRIVATE KEY-----' || fail "$k is not a PEM private key"
    done
    expect_stat /var/lib/aigw 750 aigw:aigw
    zcat /usr/share/man/man1/aigw.1.gz | has '^\.TH aigw 1' || fail "man page"
    man -w aigw >/dev/null || fail "man cannot find aigw(1)"
    grep -q aigw /usr/share/bash-completion/completions/aigw || fail "bash completion"
    /usr/bin/aigw --version | has -x "aigw $VERSION" || fail "aigw --version"

    # check-config, as the service user, with the installed env file only.
    as_aigw_with_env_file /usr/bin/aigw check-config >"$WORK/check.json" ||
        { cat "$WORK/check.json"; fail "$how: check-config failed"; }
    python3 - "$WORK/check.json" <<'PY' || fail "$how: check-config output"
import json, sys
c = json.load(open(sys.argv[1]))
assert c["valid"] is True and c["errors"] == [], c
assert c["http"]["listen"] == "0.0.0.0:5052", c["http"]
assert c["grpc"]["listen"] == "0.0.0.0:50052", c["grpc"]
assert c["metrics"]["gateway"] == "127.0.0.1:8082" and c["metrics"]["workflow"] is None, c["metrics"]
for side, key in (("workflow_auth", "duo_workflow_jwt"), ("gateway_auth", "aigw_jwt")):
    a = c[side]
    assert a["offline_license"] is True and a["customer_portal_url"] is None, a
    assert f"/etc/aigw/keys/{key}.key" in a["signing_key"] and "redacted" in a["signing_key"], a
assert c["ca_bundle"]["anchors"] > 0, c["ca_bundle"]
print("   ok: check-config as aigw: valid; 5052/50052; metrics 127.0.0.1:8082; offline license;",
      "both signing keys from /etc/aigw/keys;", c["ca_bundle"]["anchors"], "CA anchors")
PY
    ! grep -q 'BEGIN' "$WORK/check.json" || fail "check-config printed key material"

    # The unit as installed: verify must print nothing; exposure <= 2.0.
    systemd-analyze verify "$UNIT" 2>"$WORK/verify.err" || { cat "$WORK/verify.err"; fail "systemd-analyze verify failed"; }
    [ ! -s "$WORK/verify.err" ] || { cat "$WORK/verify.err"; fail "systemd-analyze verify printed warnings"; }
    ok "systemd-analyze verify $UNIT: silent"
    systemd-analyze security --offline=true "$UNIT" >"$WORK/security.txt" 2>&1 || true
    exposure=$(sed -n 's/.*Overall exposure level for aigw.service: \([0-9.]*\).*/\1/p' "$WORK/security.txt")
    [ -n "$exposure" ] || { cat "$WORK/security.txt"; fail "no exposure level"; }
    python3 -c "import sys; sys.exit(0 if float('$exposure') <= 2.0 else 1)" ||
        { cat "$WORK/security.txt"; fail "exposure $exposure > 2.0"; }
    ok "systemd-analyze security --offline=true: exposure $exposure (gate <= 2.0)"
}

# Starts /usr/bin/aigw as the unit does (User=aigw, EnvironmentFile=, NOTIFY_SOCKET,
# WATCHDOG_USEC), on free ports; waits for READY=1, probes HTTP, reloads like
# ExecReload= (SIGHUP) and stops like systemctl stop (SIGTERM).
start_like_the_unit() {
    local how=$1 api grpc metrics notify log pid
    read -r api grpc metrics <<<"$(free_ports 3)"
    notify=$WORK/notify-$how.sock
    log=$WORK/notify-$how.log
    : >"$log"
    python3 packaging/sd_notify_listener.py "$notify" "$log" 60 &
    PIDS+=("$!")
    for _ in $(seq 50); do grep -q LISTENING "$log" && break; sleep 0.1; done
    env -i PATH=$CLEAN_PATH setpriv --reuid aigw --regid aigw --init-groups \
        sh -c 'cd / && set -a && . /etc/aigw/aigw.env && set +a &&
               export NOTIFY_SOCKET="$1" WATCHDOG_USEC=1000000 \
                      AIGW_FASTAPI__API_PORT="$2" DUO_WORKFLOW_SERVICE_PORT="$3" AIGW_FASTAPI__METRICS_PORT="$4" &&
               exec /usr/bin/aigw' sh "$notify" "$api" "$grpc" "$metrics" \
        >"$WORK/serve-$how.log" 2>&1 &
    pid=$!
    PIDS+=("$pid")
    for _ in $(seq 200); do
        grep -Eq '(^|\|)READY=1(\||$)' "$log" && break
        kill -0 "$pid" 2>/dev/null || { cat "$WORK/serve-$how.log"; fail "$how: aigw exited before READY=1"; }
        sleep 0.1
    done
    grep -Eq '(^|\|)READY=1(\||$)' "$log" || { cat "$log" "$WORK/serve-$how.log"; fail "$how: no READY=1 in 20 s"; }
    ok "READY=1 from the installed binary as aigw with $ENV_FILE ($(grep -m1 READY=1 "$log"))"
    [ "$(ps -o user= -p "$pid")" = aigw ] || fail "$how: not running as aigw"
    curl -fsS "http://127.0.0.1:$api/monitoring/healthz" | has -x '{}' || fail "$how: healthz"
    [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$api/")" = 401 ] || fail "$how: / is not 401"
    curl -fsS "http://127.0.0.1:$metrics/metrics" >/dev/null || fail "$how: metrics on 127.0.0.1:$metrics"
    ok "healthz 200, / 401, metrics on 127.0.0.1"
    for _ in $(seq 50); do grep -q 'WATCHDOG=1' "$log" && break; sleep 0.1; done
    grep -q 'WATCHDOG=1' "$log" || fail "$how: no WATCHDOG=1"
    kill -HUP "$pid"
    for _ in $(seq 100); do [ "$(grep -c 'READY=1' "$log")" -ge 2 ] && break; sleep 0.1; done
    grep -Eq 'RELOADING=1.*MONOTONIC_USEC=' "$log" && [ "$(grep -c 'READY=1' "$log")" -ge 2 ] ||
        { cat "$log"; fail "$how: SIGHUP did not give RELOADING=1+MONOTONIC_USEC, READY=1"; }
    kill -TERM "$pid"
    wait "$pid" || fail "$how: exit status $? after SIGTERM"
    grep -q 'STOPPING=1' "$log" || fail "$how: no STOPPING=1"
    ok "WATCHDOG=1; SIGHUP: RELOADING=1+MONOTONIC_USEC then READY=1; SIGTERM: STOPPING=1, exit 0"
}

edit_env_file() {
    sed -i 's/^#AIGW_LOGGING__LEVEL=info$/AIGW_LOGGING__LEVEL=debug/' "$ENV_FILE"
    echo "# edited by packaging/test.sh" >>"$ENV_FILE"
    grep -qx AIGW_LOGGING__LEVEL=debug "$ENV_FILE" || fail "could not edit $ENV_FILE"
}
keys_digest() { cat $KEYS | sha256sum | cut -d' ' -f1; }

# ---------------------------------------------------------------------------
step "3a. dpkg -i $DEB"
DEBIAN_FRONTEND=noninteractive dpkg -i "$DEB" </dev/null
dpkg-query -W -f='${Status} ${Version}\n' aigw | has -x "install ok installed $VERSION" || fail "dpkg status"
check_installed deb
dpkg-statoverride --list "$ENV_FILE" | has -Ex "root aigw 0?640 $ENV_FILE" || fail "no statoverride for $ENV_FILE"
[ "$(systemctl is-enabled aigw 2>/dev/null || true)" = disabled ] || fail "aigw should be installed disabled"
ok "systemctl is-enabled aigw: disabled (enable --now after editing the env file)"
start_like_the_unit deb

step "3b. upgrade to a second build keeps the edited env file and the keys"
edit_env_file
env_before=$(sha "$ENV_FILE")
keys_before=$(keys_digest)
UPGRADE_VERSION="$VERSION+upgradetest1"
cargo deb --target $TARGET --no-build --no-strip --deb-version "$UPGRADE_VERSION" --output "$WORK/upgrade.deb" >/dev/null
DEBIAN_FRONTEND=noninteractive dpkg -i "$WORK/upgrade.deb" </dev/null
dpkg-query -W -f='${Version}' aigw | has -x "$UPGRADE_VERSION" || fail "not upgraded"
[ "$(sha "$ENV_FILE")" = "$env_before" ] || fail "upgrade replaced the edited $ENV_FILE"
[ "$(keys_digest)" = "$keys_before" ] || fail "upgrade changed the keys"
ls /etc/aigw/*.dpkg-* 2>/dev/null && fail "dpkg left .dpkg-* files"
expect_stat "$ENV_FILE" 640 root:aigw
ok "$VERSION -> $UPGRADE_VERSION: env file edit and keys kept"
DEBIAN_FRONTEND=noninteractive dpkg -i "$WORK/upgrade.deb" </dev/null
[ "$(sha "$ENV_FILE")" = "$env_before" ] && [ "$(keys_digest)" = "$keys_before" ] || fail "reinstall changed files"
ok "reinstall of the same version: unchanged"

step "3c. dpkg -r keeps configuration and keys; dpkg --purge removes them"
dpkg -r aigw
dpkg-query -W -f='${Status}' aigw | has -x 'deinstall ok config-files' || fail "dpkg -r status"
[ ! -e /usr/bin/aigw ] && [ ! -e "$UNIT" ] || fail "dpkg -r left program files"
[ "$(sha "$ENV_FILE")" = "$env_before" ] && [ "$(keys_digest)" = "$keys_before" ] || fail "dpkg -r touched config/keys"
ok "removed; $ENV_FILE and keys kept"
dpkg --purge aigw
dpkg-query -W aigw >/dev/null 2>&1 && fail "still known to dpkg after purge"
for p in /etc/aigw /var/lib/aigw /usr/lib/sysusers.d/aigw.conf /etc/systemd/system/multi-user.target.wants/aigw.service; do
    [ ! -e "$p" ] || fail "purge left $p"
done
dpkg-statoverride --list "$ENV_FILE" >/dev/null && fail "purge left the statoverride"
getent passwd aigw >/dev/null || fail "purge removed the system user (Debian policy: keep it)"
ok "purged: /etc/aigw, keys, /var/lib/aigw, statoverride gone; user kept (policy)"
userdel aigw
getent group aigw >/dev/null && groupdel aigw
ok "user aigw deleted by the test, so the .rpm creates it afresh"

# ---------------------------------------------------------------------------
step "4a. rpm -ivh (--dbpath $RPMDB --nodeps: Debian host, empty RPM database)"
mkdir -p "$RPMDB"
rpm --dbpath "$RPMDB" -ivh --nodeps "$RPM"
rpm --dbpath "$RPMDB" -q aigw | has -x "aigw-$VERSION-1.x86_64" || fail "rpm -q"
rpm --dbpath "$RPMDB" -V --nodeps aigw || fail "rpm -V"
check_installed rpm
start_like_the_unit rpm

step "4b. rpm -Uvh to release 2 keeps the edited env file and the keys"
edit_env_file
env_before=$(sha "$ENV_FILE")
keys_before=$(keys_digest)
cargo generate-rpm --target $TARGET -s 'release = "2"' --output "$WORK/upgrade.rpm" >/dev/null
rpm --dbpath "$RPMDB" -Uvh --nodeps "$WORK/upgrade.rpm"
rpm --dbpath "$RPMDB" -q aigw | has -x "aigw-$VERSION-2.x86_64" || fail "not upgraded"
[ "$(sha "$ENV_FILE")" = "$env_before" ] || fail "upgrade replaced the edited $ENV_FILE"
[ "$(keys_digest)" = "$keys_before" ] || fail "upgrade changed the keys"
ls /etc/aigw/*.rpmnew /etc/aigw/*.rpmsave 2>/dev/null && fail "rpm left .rpmnew/.rpmsave"
expect_stat "$ENV_FILE" 640 root:aigw
ok "release 1 -> 2: env file edit and keys kept"

step "4c. rpm -e removes the program; the edited env file is saved, keys stay"
rpm --dbpath "$RPMDB" -e aigw
rpm --dbpath "$RPMDB" -q aigw >/dev/null && fail "still installed"
for p in /usr/bin/aigw "$UNIT" /usr/lib/sysusers.d/aigw.conf "$ENV_FILE" /etc/systemd/system/multi-user.target.wants/aigw.service; do
    [ ! -e "$p" ] || fail "rpm -e left $p"
done
[ -f "$ENV_FILE.rpmsave" ] || fail "no $ENV_FILE.rpmsave for the edited file"
[ "$(keys_digest)" = "$keys_before" ] || fail "rpm -e touched the keys"
ok "erased; $ENV_FILE.rpmsave and /etc/aigw/keys kept (RPM has no purge)"
rm -rf /etc/aigw /var/lib/aigw
userdel aigw
getent group aigw >/dev/null && groupdel aigw
ok "manual purge as documented: rm -rf /etc/aigw /var/lib/aigw; userdel aigw"

# ---------------------------------------------------------------------------
step "5a. OCI image config"
skopeo inspect "oci-archive:$OCI:$VERSION" >/dev/null
skopeo inspect --config "oci-archive:$OCI:$VERSION" >"$WORK/config.json"
skopeo inspect --config "docker-archive:$DOCKER_ARCHIVE" >"$WORK/docker-config.json"
has_git=$(git rev-parse HEAD >/dev/null 2>&1 && echo yes || echo no)
python3 - "$WORK/config.json" "$WORK/docker-config.json" "$VERSION" "$has_git" <<'PY' || fail "image config"
import json, sys
for path in sys.argv[1:3]:
    c = json.load(open(path))["config"]
    assert c["User"] == "65532:65532", c["User"]
    assert c["Entrypoint"] == ["/usr/bin/aigw"] and not c.get("Cmd"), c
    assert set(c["ExposedPorts"]) == {"5052/tcp", "50052/tcp", "8082/tcp", "8083/tcp"}, c["ExposedPorts"]
    env = dict(e.split("=", 1) for e in c["Env"])
    assert env["AIGW_FASTAPI__API_PORT"] == "5052" and env["AIGW_CUSTOM_MODELS__ENABLED"] == "true", env
    assert not any(k.startswith("SSL_CERT") or k.endswith("CA_BUNDLE") for k in env), env
    labels = c["Labels"]
    for k in ("title", "description", "version", "licenses", "created") + (("revision",) if sys.argv[4] == "yes" else ()):
        assert labels.get("org.opencontainers.image." + k), (k, labels)
    assert labels["org.opencontainers.image.version"] == sys.argv[3]
print("   ok: User 65532:65532, Entrypoint /usr/bin/aigw, ports 5052 50052 8082 8083, env, labels (OCI and docker-archive)")
PY

step "5b. rootfs (umoci unpack)"
R=$WORK/bundle/rootfs
python3 - "$WORK/bundle/config.json" <<'PY' || fail "runtime config"
import json, sys
p = json.load(open(sys.argv[1]))["process"]
assert p["user"]["uid"] == 65532 and p["user"]["gid"] == 65532, p["user"]
assert p["args"] == ["/usr/bin/aigw"], p["args"]
PY
expect_stat "$R/usr/bin/aigw" 755 root:root
expect_stat "$R/tmp" 1777 root:root
[ "$(stat -c '%a %u:%g' "$R/var/lib/aigw")" = "700 65532:65532" ] || fail "/var/lib/aigw in the image"
grep -q '^aigw:x:65532:65532:' "$R/etc/passwd" && grep -q '^aigw:x:65532:' "$R/etc/group" || fail "passwd/group"
cmp -s "$R/etc/ssl/certs/ca-certificates.crt" /etc/ssl/certs/ca-certificates.crt || fail "CA bundle"
ok "binary, CA bundle, passwd/group with 65532, /tmp 1777, /var/lib/aigw 0700 65532"
echo "   rootfs: $(cd "$R" && find . -mindepth 1 | sort | tr '\n' ' ')"

step "5c. serve from the image rootfs: chroot --userspec=65532:65532, env -i + image Env only"
mapfile -t image_env < <(python3 -c 'import json,sys; print("\n".join(json.load(open(sys.argv[1]))["config"]["Env"]))' "$WORK/config.json")
in_image() {
    env -i "${image_env[@]}" "$@"
}
in_image chroot --userspec=65532:65532 "$R" /usr/bin/aigw check-config >"$WORK/image-check.json" ||
    { cat "$WORK/image-check.json"; fail "check-config in the image"; }
python3 -c '
import json, sys
c = json.load(open(sys.argv[1]))
assert c["ca_bundle"]["anchors"] > 100, c["ca_bundle"]
print("   ok: check-config in the image:", c["ca_bundle"]["anchors"], "CA anchors from /etc/ssl/certs/ca-certificates.crt")' "$WORK/image-check.json"
read -r api grpc metrics <<<"$(free_ports 3)"
# Not through in_image: $! must be the process that becomes aigw (env execs
# chroot, which execs aigw), not a subshell.
env -i "${image_env[@]}" AIGW_GITLAB_URL=http://127.0.0.1:9 DUO_WORKFLOW_AUTH__OIDC_CUSTOMER_PORTAL_URL= \
    AIGW_FASTAPI__API_PORT="$api" DUO_WORKFLOW_SERVICE_PORT="$grpc" AIGW_FASTAPI__METRICS_PORT="$metrics" \
    chroot --userspec=65532:65532 "$R" /usr/bin/aigw >"$WORK/image-serve.log" 2>&1 &
pid=$!
PIDS+=("$pid")
for _ in $(seq 200); do
    curl -fsS "http://127.0.0.1:$api/monitoring/healthz" >/dev/null 2>&1 && break
    kill -0 "$pid" 2>/dev/null || { cat "$WORK/image-serve.log"; fail "the image's aigw exited"; }
    sleep 0.1
done
curl -fsS "http://127.0.0.1:$api/monitoring/healthz" | has -x '{}' || { cat "$WORK/image-serve.log"; fail "image healthz"; }
body=$(curl -s -w ' %{http_code}' "http://127.0.0.1:$api/")
[ "$body" = '{"error":"No authorization header presented"} 401' ] || fail "image / answered: $body"
[ "$(ps -o uid= -p "$pid" | tr -d ' ')" = 65532 ] || fail "image process is not uid 65532"
kill -TERM "$pid"
wait "$pid" || fail "image aigw exit status $? after SIGTERM"
ok "healthz {} and / -> 401 {\"error\":\"No authorization header presented\"} as uid 65532; clean stop"

# ---------------------------------------------------------------------------
step "6. reproducible: packaging the same binary again gives the same digests"
make --no-print-directory dist PACKAGE_BUILD=no DIST="$WORK/dist2" >"$WORK/dist2.log" 2>&1 ||
    { cat "$WORK/dist2.log"; fail "second make dist"; }
cat dist/SHA256SUMS
diff dist/SHA256SUMS "$WORK/dist2/SHA256SUMS" || fail "the second build differs (SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-unset})"
ok "identical: $(cut -c1-16 dist/SHA256SUMS | tr '\n' ' ')"
