#!/usr/bin/env bash
# Local development stack for port-tracker: Mosquitto + PostgreSQL of our own on loopback,
# plus the tracker service itself. No system service is used or changed.
#
#   deploy/stack.sh install        apt packages (sudo when not root) + .venv with '.[dev]'
#   deploy/stack.sh infra          start broker + database (idempotent), write secrets.env
#   deploy/stack.sh up             install + infra + migrate + geofences + tracker service
#   deploy/stack.sh down           stop service, broker and database (data kept)
#   deploy/stack.sh status         what runs
#   deploy/stack.sh destroy --yes  down + delete the stack directory and database files
#   deploy/stack.sh compose-env    write deploy/.env with fresh secrets for deploy/compose.yaml
#
# Environment (defaults): TRACKER_STACK_DIR (<repo>/.stack), TRACKER_MQTT_PORT (1883),
# TRACKER_PG_PORT (5433), TRACKER_PG_DB (tracker), TRACKER_PG_USER (tracker, the service),
# TRACKER_PG_OWNER (<user>_owner, owns the schema; only migrations use it), TRACKER_HTTP_PORT (8080).
# TLS listener for MQTT (off unless a port is given):
# TRACKER_MQTT_TLS_PORT, TRACKER_BROKER_TLS_CERT / _KEY (default: a local CA and certificate
# made in the stack dir), TRACKER_BROKER_TLS_CLIENT_CA (clients must present a certificate).
set -euo pipefail

REPO_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEPLOY_DIR="$REPO_DIR/deploy"
VENV_DIR="$REPO_DIR/.venv"

STACK_DIR="${TRACKER_STACK_DIR:-$REPO_DIR/.stack}"
MQTT_PORT="${TRACKER_MQTT_PORT:-1883}"
PG_PORT="${TRACKER_PG_PORT:-5433}"
PG_DB="${TRACKER_PG_DB:-tracker}"
PG_USER="${TRACKER_PG_USER:-tracker}"
PG_SCHEMA_OWNER="${TRACKER_PG_OWNER:-${PG_USER}_owner}"
HTTP_PORT="${TRACKER_HTTP_PORT:-8080}"
OPS_PORT="${TRACKER_OPS_PORT:-$((HTTP_PORT + 1))}"
MQTT_TLS_PORT="${TRACKER_MQTT_TLS_PORT:-}"
MQTT_TLS_CLIENT_CA="${TRACKER_BROKER_TLS_CLIENT_CA:-}"
PG_SUPERUSER=postgres
# The tracker service runs as this system user when the stack is started as root.
SERVICE_USER=port-tracker

APT_PACKAGES=(mosquitto mosquitto-clients postgresql-15 openssl chromium)
APT_OPTIONAL_PACKAGES=(postgresql-15-postgis-3)

log() { printf '[stack] %s\n' "$*" >&2; }
die() { printf '[stack] ERROR: %s\n' "$*" >&2; exit 1; }

is_root() { [[ "$(id -u)" -eq 0 ]]; }

# Runs a command with root privileges (directly as root, through sudo otherwise).
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo -- "$@"
    else
        die "root privileges needed for: $* (run as root or install sudo)"
    fi
}

# Runs a command as the owner of a service's files: that system user when we are root,
# ourselves otherwise.
as_user() {
    local user="$1"
    shift
    if is_root; then
        (cd / && runuser -u "$user" -- "$@")
    else
        "$@"
    fi
}

# Writes stdin to a file (">" or ">>") as the given user, with umask 077.
write_as() {
    local user="$1" op="$2" file="$3"
    # shellcheck disable=SC2016 # $1/$2 are expanded by the inner shell
    as_user "$user" sh -c 'umask 077; if [ "$1" = ">>" ]; then cat >>"$2"; else cat >"$2"; fi' sh "$op" "$file"
}

tail_file() {
    local f="$1"
    if [[ -r "$f" ]]; then
        printf -- '----- last lines of %s -----\n' "$f" >&2
        tail -n 30 "$f" >&2 || true
        printf -- '-----\n' >&2
    fi
}

port_open() {
    timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null
}

check_port_value() {
    local name="$1" value="$2"
    if ! [[ "$value" =~ ^[0-9]+$ ]] || ((value < 1 || value > 65535)); then
        die "$name must be a TCP port, got '$value'"
    fi
}

validate_env() {
    check_port_value TRACKER_MQTT_PORT "$MQTT_PORT"
    check_port_value TRACKER_PG_PORT "$PG_PORT"
    check_port_value TRACKER_HTTP_PORT "$HTTP_PORT"
    check_port_value TRACKER_OPS_PORT "$OPS_PORT"
    if [[ -n "$MQTT_TLS_PORT" ]]; then
        check_port_value TRACKER_MQTT_TLS_PORT "$MQTT_TLS_PORT"
        [[ "$MQTT_TLS_PORT" != "$MQTT_PORT" ]] || die "TRACKER_MQTT_TLS_PORT must differ from TRACKER_MQTT_PORT"
    fi
    [[ "$PG_DB" =~ ^[a-z_][a-z0-9_]*$ ]] || die "TRACKER_PG_DB must match [a-z_][a-z0-9_]*, got '$PG_DB'"
    [[ "$PG_USER" =~ ^[a-z_][a-z0-9_]*$ ]] || die "TRACKER_PG_USER must match [a-z_][a-z0-9_]*, got '$PG_USER'"
    [[ "$PG_SCHEMA_OWNER" =~ ^[a-z_][a-z0-9_]*$ ]] ||
        die "TRACKER_PG_OWNER must match [a-z_][a-z0-9_]*, got '$PG_SCHEMA_OWNER'"
    [[ "$PG_SCHEMA_OWNER" != "$PG_USER" ]] || die "TRACKER_PG_OWNER must differ from TRACKER_PG_USER"
    [[ "$STACK_DIR" != *[[:space:]]* ]] || die "TRACKER_STACK_DIR must not contain whitespace: '$STACK_DIR'"
    [[ "$STACK_DIR" = /* ]] || STACK_DIR="$PWD/$STACK_DIR"
    STACK_DIR="$(realpath -m -- "$STACK_DIR")"
    case "$STACK_DIR" in
        / | /root | /home | /tmp | /var | /usr | /etc | "$REPO_DIR" | "${HOME:-/nonexistent}")
            die "refusing to use '$STACK_DIR' as TRACKER_STACK_DIR" ;;
    esac
    SECRETS_FILE="$STACK_DIR/secrets.env"
    PG_SECRETS_FILE="$STACK_DIR/postgres.secrets"
    OWNER_FILE="$STACK_DIR/owner.env"
    AUDIT_DIR="$STACK_DIR/audit"
    AUDIT_KEY="$AUDIT_DIR/signing.key"
    AUDIT_PUB="$AUDIT_DIR/signing.pub"
    MARKER_FILE="$STACK_DIR/.port-tracker-stack"
    TRACKER_PID_FILE="$STACK_DIR/tracker.pid"
    TRACKER_LOG="$STACK_DIR/tracker/tracker.log"
    if [[ -s "$STACK_DIR/tracker.path" ]]; then
        TRACKER_LOG="$(cat "$STACK_DIR/tracker.path")/tracker.log"
    fi
}

random_hex() { od -An -tx1 -N"$1" /dev/urandom | tr -d ' \n'; }

# Where files live that a system user must own when we run as root: inside the stack
# dir when that user can reach it, else under /var/lib/port-tracker/<hash of stack dir>.
# The choice is recorded in the stack dir so that later runs find the same data.
service_dir() {
    local name="$1" user="$2" record="$STACK_DIR/$1.path" dir
    if [[ -s "$record" ]]; then
        cat "$record"
        return
    fi
    dir="$STACK_DIR/$name"
    if is_root && ! runuser -u "$user" -- test -x "$STACK_DIR" 2>/dev/null; then
        dir="/var/lib/port-tracker/$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-16)/$name"
    fi
    printf '%s\n' "$dir" >"$record"
    printf '%s\n' "$dir"
}

pg_bindir() {
    if [[ -x /usr/lib/postgresql/15/bin/pg_ctl ]]; then
        echo /usr/lib/postgresql/15/bin
    elif command -v pg_config >/dev/null 2>&1 && [[ -x "$(pg_config --bindir)/pg_ctl" ]]; then
        pg_config --bindir
    else
        die "PostgreSQL 15 binaries not found: run 'deploy/stack.sh install' first"
    fi
}

# ---------------------------------------------------------------------------- install

apt_installed() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'; }

APT_UPDATED=0
apt_install() {
    if [[ "$APT_UPDATED" -eq 0 ]]; then
        log "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive timeout 600 apt-get update -q
        APT_UPDATED=1
    fi
    log "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive timeout 1800 \
        apt-get install -y -q --no-install-recommends "$@"
}

python_ok() {
    command -v python3 >/dev/null 2>&1 &&
        python3 -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else 1)' 2>/dev/null
}

# The Debian package starts a system broker on 127.0.0.1:1883 right after installing it;
# ours runs on its own, so the one we just installed is stopped and disabled.
stop_system_mosquitto() {
    if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
        log "disabling the system mosquitto service that the package install started"
        as_root systemctl disable --now mosquitto || log "could not disable mosquitto.service"
    elif [[ -x /etc/init.d/mosquitto ]] && /etc/init.d/mosquitto status >/dev/null 2>&1; then
        log "stopping the system mosquitto daemon that the package install started"
        as_root /etc/init.d/mosquitto stop || log "could not stop /etc/init.d/mosquitto"
        as_root update-rc.d mosquitto disable >/dev/null 2>&1 || true
    fi
}

cmd_install() {
    command -v dpkg-query >/dev/null 2>&1 || die "this script supports Debian/Ubuntu (dpkg/apt) only"
    local missing=() pkg had_mosquitto=0
    apt_installed mosquitto && had_mosquitto=1
    for pkg in "${APT_PACKAGES[@]}"; do
        apt_installed "$pkg" || missing+=("$pkg")
    done
    python_ok || missing+=(python3)
    if python_ok && ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
        missing+=(python3-venv)
    fi
    if ! python_ok; then
        missing+=(python3-venv)
    fi
    if ! is_root && ! command -v runuser >/dev/null 2>&1; then
        missing+=(util-linux)
    fi
    if ((${#missing[@]})); then
        apt_install "${missing[@]}" ca-certificates
    else
        log "apt packages present: ${APT_PACKAGES[*]}"
    fi
    for pkg in "${APT_OPTIONAL_PACKAGES[@]}"; do
        if ! apt_installed "$pkg"; then
            apt_install "$pkg" || log "optional package $pkg not installed (continuing without it)"
        fi
    done
    if [[ "$had_mosquitto" -eq 0 ]]; then
        stop_system_mosquitto
    fi
    python_ok || die "python3 >= 3.11 is required"

    local stamp="$VENV_DIR/.port-tracker-install" want
    want="$(sha256sum "$REPO_DIR/pyproject.toml" | cut -d' ' -f1)"
    if [[ -x "$VENV_DIR/bin/python" ]] && ! "$VENV_DIR/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "$VENV_DIR is broken, recreating it"
        rm -rf -- "$VENV_DIR"
    fi
    if [[ ! -x "$VENV_DIR/bin/python" ]]; then
        log "creating virtualenv $VENV_DIR"
        if ! python3 -m venv "$VENV_DIR"; then
            rm -rf -- "$VENV_DIR"
            apt_install python3-venv
            python3 -m venv "$VENV_DIR"
        fi
    fi
    if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
        log "virtualenv up to date ($VENV_DIR)"
    else
        log "pip install -e '.[dev]' into $VENV_DIR"
        (cd "$REPO_DIR" && timeout 1800 "$VENV_DIR/bin/python" -m pip install -q -e '.[dev]') ||
            die "pip install failed"
        printf '%s\n' "$want" >"$stamp"
    fi
}

# ---------------------------------------------------------------------------- secrets

ensure_stack_dir() {
    if [[ -d "$STACK_DIR" && ! -f "$MARKER_FILE" ]] && [[ -n "$(ls -A "$STACK_DIR")" ]]; then
        die "$STACK_DIR exists, is not empty and is not a port-tracker stack directory"
    fi
    mkdir -p "$STACK_DIR"
    : >"$MARKER_FILE"
}

# Appends "KEY=value" for every KEY missing from a mode-600 file; returns 0 if it added any.
add_missing_keys() {
    local file="$1" key value added=1
    shift
    (umask 077 && touch "$file")
    chmod 600 "$file"
    for key in "$@"; do
        grep -q "^${key}=" "$file" && continue
        case "$key" in
            TRACKER_MQTT_USERNAME) value="tracker-service" ;;
            TRACKER_MQTT_DEVICE_USERNAME) value="gateway" ;;
            TRACKER_MQTT_SECURITY_USERNAME) value="security" ;;
            TRACKER_MQTT_CUSTOMS_USERNAME) value="customs" ;;
            TRACKER_MQTT_ADMIN_USERNAME) value="broker-admin" ;;
            TRACKER_ADMIN_TOKEN) value="$(random_hex 32)" ;;
            *) value="$(random_hex 24)" ;;
        esac
        printf '%s=%s\n' "$key" "$value" >>"$file"
        added=0
    done
    return "$added"
}

# Sets "KEY=value" in a mode-600 file (replacing the line for KEY); returns 0 if it changed it.
set_key() {
    local file="$1" key="$2" value="$3"
    (umask 077 && touch "$file")
    chmod 600 "$file"
    grep -qxF "$key=$value" "$file" && return 1
    (
        umask 077
        grep -v "^$key=" "$file" >"$file.tmp" || true
        printf '%s=%s\n' "$key" "$value" >>"$file.tmp"
    )
    mv -f -- "$file.tmp" "$file"
    return 0
}

# The Ed25519 key that signs the alert log: generated once (a 32-byte seed, mode 600), kept
# outside the database; its public half goes to signing.pub once the virtualenv can derive it.
ensure_audit_key() {
    (umask 077 && mkdir -p "$AUDIT_DIR")
    chmod 700 "$AUDIT_DIR"
    if [[ ! -s "$AUDIT_KEY" ]]; then
        (umask 077 && random_hex 32 >"$AUDIT_KEY")
        rm -f -- "$AUDIT_PUB"
        log "audit signing key generated: $AUDIT_KEY"
    fi
    chmod 600 "$AUDIT_KEY"
    if [[ ! -s "$AUDIT_PUB" && -x "$VENV_DIR/bin/python" ]] &&
        TRACKER_AUDIT_KEY='' TRACKER_AUDIT_KEY_FILE="$AUDIT_KEY" "$VENV_DIR/bin/python" -m tracker audit pubkey \
            >"$AUDIT_PUB.tmp" 2>/dev/null; then
        mv -f -- "$AUDIT_PUB.tmp" "$AUDIT_PUB"
        log "audit public key: $AUDIT_PUB (give it to whoever verifies exported bundles)"
    fi
    rm -f -- "$AUDIT_PUB.tmp"
}

# Generates the secrets once; later runs keep what is there and only add missing keys.
# secrets.env holds what the service and its clients need; the database passwords
# (the superuser's included) stay in postgres.secrets, which nothing exports; the schema
# owner's DSN is in owner.env, read only for migrations (the service never holds it).
ensure_secrets() {
    local added=0
    if add_missing_keys "$PG_SECRETS_FILE" PG_PASSWORD PG_SUPERUSER_PASSWORD PG_OWNER_PASSWORD; then added=1; fi
    if add_missing_keys "$SECRETS_FILE" \
        TRACKER_MQTT_USERNAME TRACKER_MQTT_PASSWORD \
        TRACKER_MQTT_DEVICE_USERNAME TRACKER_MQTT_DEVICE_PASSWORD \
        TRACKER_MQTT_SECURITY_USERNAME TRACKER_MQTT_SECURITY_PASSWORD \
        TRACKER_MQTT_CUSTOMS_USERNAME TRACKER_MQTT_CUSTOMS_PASSWORD \
        TRACKER_MQTT_ADMIN_USERNAME TRACKER_MQTT_ADMIN_PASSWORD \
        TRACKER_ADMIN_TOKEN; then
        added=1
    fi
    load_pg_secrets
    # The DSN follows the current port/db/user; its password never changes. The broker's
    # address is there too, so that `. secrets.env; tracker device add ...` finds it.
    if set_key "$SECRETS_FILE" TRACKER_DB_DSN "postgresql://${PG_USER}:${PG_PASSWORD}@127.0.0.1:${PG_PORT}/${PG_DB}"; then
        added=1
    fi
    if set_key "$SECRETS_FILE" TRACKER_MQTT_HOST 127.0.0.1; then added=1; fi
    if set_key "$SECRETS_FILE" TRACKER_MQTT_PORT "$MQTT_PORT"; then added=1; fi
    ensure_audit_key
    if set_key "$SECRETS_FILE" TRACKER_AUDIT_KEY_FILE "$AUDIT_KEY"; then added=1; fi
    local owner_dsn="postgresql://${PG_SCHEMA_OWNER}:${PG_OWNER_PASSWORD}@127.0.0.1:${PG_PORT}/${PG_DB}"
    if set_key "$OWNER_FILE" TRACKER_DB_OWNER_DSN "$owner_dsn"; then added=1; fi
    if ((added)); then log "secrets written to $SECRETS_FILE and $OWNER_FILE"; fi
    load_secrets
}

load_pg_secrets() {
    [[ -r "$PG_SECRETS_FILE" ]] || die "$PG_SECRETS_FILE missing: run 'deploy/stack.sh infra' first"
    # shellcheck disable=SC1090
    . "$PG_SECRETS_FILE"
}

load_secrets() {
    [[ -r "$SECRETS_FILE" ]] || die "$SECRETS_FILE missing: run 'deploy/stack.sh infra' first"
    set -a
    # shellcheck disable=SC1090
    . "$SECRETS_FILE"
    set +a
}

# ---------------------------------------------------------------------------- mosquitto

mqtt_paths() {
    MQ_USER="$(id -un)"
    is_root && MQ_USER=mosquitto
    MQ_DIR="$(service_dir mosquitto "$MQ_USER")"
    MQ_CONF="$MQ_DIR/mosquitto.conf"
    MQ_PID="$MQ_DIR/mosquitto.pid"
    MQ_LOG="$MQ_DIR/mosquitto.log"
    # The dynamic-security plugin's state: accounts, roles, password hashes.
    MQ_DYNSEC="$MQ_DIR/dynamic-security.json"
}

pid_alive() {
    local pidfile="$1" name="$2" pid
    [[ -s "$pidfile" ]] || return 1
    pid="$(cat "$pidfile")"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    kill -0 "$pid" 2>/dev/null || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q -- "$name"
}

dynsec_plugin() {
    local f
    for f in /usr/lib/*/mosquitto_dynamic_security.so /usr/lib/mosquitto_dynamic_security.so; do
        if [[ -f "$f" ]]; then
            printf '%s\n' "$f"
            return
        fi
    done
    die "mosquitto_dynamic_security.so not found (Debian's mosquitto package ships it): run 'deploy/stack.sh install'"
}

# A local CA and a server certificate for 127.0.0.1/localhost, made once, for a TLS
# listener without a certificate of its own (TRACKER_BROKER_TLS_CERT unset).
ensure_local_tls_cert() {
    local dir="$STACK_DIR/tls"
    TLS_CERT="$dir/server.pem"
    TLS_KEY="$dir/server.key"
    TLS_CA="$dir/ca.pem"
    [[ -s "$TLS_CERT" && -s "$TLS_KEY" && -s "$TLS_CA" ]] && return
    command -v openssl >/dev/null 2>&1 || die "openssl not found: run 'deploy/stack.sh install'"
    log "generating a local CA and a broker certificate for 127.0.0.1 in $dir"
    (
        umask 077
        mkdir -p "$dir"
        cd "$dir"
        openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 825 \
            -subj "/CN=port-tracker local CA" -keyout ca.key -out ca.pem \
            -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign
        openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
            -subj "/CN=localhost" -keyout server.key -out server.csr
        printf '%s\n' "subjectAltName=DNS:localhost,IP:127.0.0.1" "basicConstraints=CA:FALSE" \
            "keyUsage=critical,digitalSignature" "extendedKeyUsage=serverAuth" >server.ext
        openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 825 \
            -extfile server.ext -out server.pem
        rm -f server.csr server.ext ca.srl
        chmod 644 ca.pem server.pem
        chmod 755 .
    ) >"$STACK_DIR/tls.log" 2>&1 || { tail_file "$STACK_DIR/tls.log"; die "openssl failed"; }
}

# The optional TLS listener (TRACKER_MQTT_TLS_PORT): certificate and key are copied next to
# the broker's other files so that its user can read them.
tls_listener() {
    [[ -n "$MQTT_TLS_PORT" ]] || {
        echo "# (no TLS listener: set TRACKER_MQTT_TLS_PORT to add one)"
        return
    }
    local dir="$MQ_DIR/tls"
    mkdir -p "$dir"
    cp -f -- "$TLS_CERT" "$dir/server.pem"
    (umask 077 && cp -f -- "$TLS_KEY" "$dir/server.key")
    printf '%s\n' "listener $MQTT_TLS_PORT 127.0.0.1" "use_username_as_clientid true" \
        "certfile $dir/server.pem" "keyfile $dir/server.key" "tls_version tlsv1.2"
    if [[ -n "$MQTT_TLS_CLIENT_CA" ]]; then
        cp -f -- "$MQTT_TLS_CLIENT_CA" "$dir/client-ca.pem"
        printf '%s\n' "# clients must present a certificate signed by this CA (and still log in)" \
            "cafile $dir/client-ca.pem" "require_certificate true"
    fi
}

# Renders mosquitto.conf; MQ_CONF_CHANGED=1 when it differs from the previous rendering.
render_mosquitto() {
    command -v mosquitto >/dev/null 2>&1 || [[ -x /usr/sbin/mosquitto ]] ||
        die "mosquitto not installed: run 'deploy/stack.sh install' first"
    command -v python3 >/dev/null 2>&1 || die "python3 not found: run 'deploy/stack.sh install'"
    mkdir -p "$MQ_DIR"
    chmod 700 "$MQ_DIR"
    if [[ -n "$MQTT_TLS_PORT" ]]; then
        if [[ -n "${TRACKER_BROKER_TLS_CERT:-}" ]]; then
            TLS_CERT="$TRACKER_BROKER_TLS_CERT"
            TLS_KEY="${TRACKER_BROKER_TLS_KEY:-$TRACKER_BROKER_TLS_CERT}"
            TLS_CA=""
            [[ -r "$TLS_CERT" && -r "$TLS_KEY" ]] || die "TRACKER_BROKER_TLS_CERT / _KEY not readable"
        else
            ensure_local_tls_cert
        fi
        [[ -z "$MQTT_TLS_CLIENT_CA" || -r "$MQTT_TLS_CLIENT_CA" ]] || die "TRACKER_BROKER_TLS_CLIENT_CA not readable"
    fi
    local tpl tls
    tls="$(tls_listener)"
    tpl="$(cat "$DEPLOY_DIR/mosquitto/mosquitto.conf.in")"
    tpl="${tpl//@MQTT_PORT@/$MQTT_PORT}"
    tpl="${tpl//@MQTT_BIND@/127.0.0.1}"
    tpl="${tpl//@TLS_LISTENER@/$tls}"
    tpl="${tpl//@DYNSEC_PLUGIN@/$(dynsec_plugin)}"
    tpl="${tpl//@DYNSEC_FILE@/$MQ_DYNSEC}"
    tpl="${tpl//@RUN_USER@/$MQ_USER}"
    tpl="${tpl//@PID_FILE@/$MQ_PID}"
    tpl="${tpl//@PERSISTENCE_DIR@/$MQ_DIR}"
    ! [[ "$tpl" =~ @[A-Z_]+@ ]] || die "unrendered placeholder left in mosquitto.conf.in"
    MQ_CONF_CHANGED=1
    if [[ -f "$MQ_CONF" ]] && [[ "$(cat "$MQ_CONF")" == "$tpl" ]]; then
        MQ_CONF_CHANGED=0
    else
        (umask 077 && printf '%s\n' "$tpl" >"$MQ_CONF.tmp")
        mv -f -- "$MQ_CONF.tmp" "$MQ_CONF"
    fi
    # Left by versions that used a password file and an ACL file.
    rm -f -- "$MQ_DIR/passwd" "$MQ_DIR/acl"
}

# check: is the fixed part of the accounts (deploy/mosquitto/dynsec_config.py) up to date?
# apply: bring it up to date; the broker must not be running (it rewrites the file itself).
# The credentials reach the script through the environment (load_secrets exported them).
dynsec_config() {
    python3 "$DEPLOY_DIR/mosquitto/dynsec_config.py" "$1" "$MQ_DYNSEC"
}

own_mosquitto_files() {
    chmod 700 "$MQ_DIR"
    chmod 600 "$MQ_CONF" "$MQ_DYNSEC"
    if is_root; then
        chown -R "$MQ_USER:" "$MQ_DIR"
    fi
}

start_mosquitto() {
    mqtt_paths
    render_mosquitto
    if pid_alive "$MQ_PID" mosquitto; then
        if [[ "$MQ_CONF_CHANGED" -eq 0 ]] && dynsec_config check; then
            log "mosquitto already running (pid $(cat "$MQ_PID")), configuration unchanged"
            return
        fi
        # The plugin reads its file only at start; sessions and queues are persisted.
        log "mosquitto configuration changed: restarting it"
        stop_pidfile "$MQ_PID" mosquitto
    fi
    dynsec_config apply || die "could not write $MQ_DYNSEC"
    own_mosquitto_files
    rm -f -- "$MQ_PID"
    local port
    for port in "$MQTT_PORT" $MQTT_TLS_PORT; do
        if port_open "$port"; then
            die "127.0.0.1:$port is already in use by another process (a system mosquitto? try 'systemctl disable --now mosquitto' or set TRACKER_MQTT_PORT / TRACKER_MQTT_TLS_PORT)"
        fi
    done
    local bin
    bin="$(command -v mosquitto || echo /usr/sbin/mosquitto)"
    log "starting mosquitto on 127.0.0.1:$MQTT_PORT${MQTT_TLS_PORT:+ (TLS on $MQTT_TLS_PORT)} (files in $MQ_DIR)"
    # Own session: not killed with the caller's process group (like PostgreSQL).
    setsid nohup "$bin" -c "$MQ_CONF" </dev/null >>"$MQ_LOG" 2>&1 &
    local child=$! i
    for ((i = 0; i < 50; i++)); do
        if port_open "$MQTT_PORT" && { [[ -z "$MQTT_TLS_PORT" ]] || port_open "$MQTT_TLS_PORT"; }; then
            [[ -s "$MQ_PID" ]] || echo "$child" >"$MQ_PID"
            log "mosquitto ready (pid $(cat "$MQ_PID"))"
            return
        fi
        kill -0 "$child" 2>/dev/null || break
        sleep 0.2
    done
    kill "$child" 2>/dev/null || true
    tail_file "$MQ_LOG"
    die "mosquitto did not start on 127.0.0.1:$MQTT_PORT within 10 s"
}

stop_pidfile() {
    local pidfile="$1" name="$2" pid i
    if ! pid_alive "$pidfile" "$name"; then
        rm -f -- "$pidfile"
        log "$name not running"
        return
    fi
    pid="$(cat "$pidfile")"
    log "stopping $name (pid $pid)"
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 75; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.2
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "$name did not stop within 15 s, killing it"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f -- "$pidfile"
}

# ---------------------------------------------------------------------------- postgres

pg_paths() {
    PG_BIN="$(pg_bindir)"
    local owner
    owner="$(id -un)"
    is_root && owner=postgres
    PG_OWNER="$owner"
    PG_BASE="$(service_dir postgres "$PG_OWNER")"
    PGDATA_DIR="$PG_BASE/pgdata"
    PG_LOG="$PG_BASE/postgresql.log"
    printf '%s\n' "$PGDATA_DIR" >"$STACK_DIR/pgdata.path"
}

pg_ctl_as_owner() { as_user "$PG_OWNER" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" "$@"; }

pg_running() {
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] && pg_ctl_as_owner status >/dev/null 2>&1
}

init_postgres() {
    if is_root; then
        getent passwd postgres >/dev/null || die "system user 'postgres' missing: run 'deploy/stack.sh install'"
        mkdir -p "$PG_BASE"
        chown postgres: "$PG_BASE"
        chmod 700 "$PG_BASE"
    else
        mkdir -p "$PG_BASE"
        chmod 700 "$PG_BASE"
    fi
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] && return
    if [[ -d "$PGDATA_DIR" ]] && [[ -n "$(ls -A "$PGDATA_DIR")" ]]; then
        die "$PGDATA_DIR exists but is not a database cluster; remove it or run 'destroy --yes'"
    fi
    log "initdb $PGDATA_DIR"
    local pwfile="$PG_BASE/.initdb-pw"
    printf '%s\n' "$PG_SUPERUSER_PASSWORD" |
        write_as "$PG_OWNER" ">" "$pwfile"
    if ! as_user "$PG_OWNER" timeout 180 "$PG_BIN/initdb" -D "$PGDATA_DIR" \
        --username="$PG_SUPERUSER" --pwfile="$pwfile" --auth=scram-sha-256 \
        --encoding=UTF8 --locale=C.UTF-8 >"$STACK_DIR/initdb.log" 2>&1; then
        rm -f -- "$pwfile"
        tail_file "$STACK_DIR/initdb.log"
        die "initdb failed"
    fi
    rm -f -- "$pwfile"
    printf "\n# port-tracker: settings rewritten by deploy/stack.sh at each start\ninclude_if_exists = 'port_tracker.conf'\n" |
        write_as "$PG_OWNER" ">>" "$PGDATA_DIR/postgresql.conf"
}

write_pg_settings() {
    local preload=""
    if [[ -f "/usr/lib/postgresql/15/lib/timescaledb.so" ]]; then
        preload="shared_preload_libraries = 'timescaledb'"
    fi
    printf "%s\n" \
        "listen_addresses = '127.0.0.1'" \
        "port = $PG_PORT" \
        "unix_socket_directories = '$PGDATA_DIR'" \
        "password_encryption = 'scram-sha-256'" \
        "max_connections = 100" \
        "log_timezone = 'UTC'" \
        "timezone = 'UTC'" \
        "$preload" |
        write_as "$PG_OWNER" ">" "$PGDATA_DIR/port_tracker.conf"
}

psql_super() {
    PGPASSWORD="$PG_SUPERUSER_PASSWORD" PGCONNECT_TIMEOUT=10 timeout 120 \
        "$PG_BIN/psql" -X -q -v ON_ERROR_STOP=1 -h 127.0.0.1 -p "$PG_PORT" -U "$PG_SUPERUSER" "$@"
}

start_postgres() {
    pg_paths
    init_postgres
    if pg_running; then
        log "postgresql already running ($PGDATA_DIR)"
    else
        if port_open "$PG_PORT"; then
            die "127.0.0.1:$PG_PORT is already in use by another process (set TRACKER_PG_PORT)"
        fi
        write_pg_settings
        log "starting postgresql on 127.0.0.1:$PG_PORT ($PGDATA_DIR)"
        if ! as_user "$PG_OWNER" "$PG_BIN/pg_ctl" -D "$PGDATA_DIR" -l "$PG_LOG" -w -t 60 start >/dev/null; then
            tail_file "$PG_LOG"
            die "postgresql did not start"
        fi
    fi
    # Roles and database (idempotent); the passwords follow postgres.secrets (through stdin,
    # never through argv). The owner role owns the database and schema and runs migrations;
    # the service role owns nothing (`tracker migrate` grants what it needs), so it cannot
    # disable the alert chain's append-only triggers. A database from before this split,
    # owned by the service role, is handed over to the owner role.
    {
        printf '\\set pw %s\n' "$PG_PASSWORD"
        printf '\\set owner_pw %s\n' "$PG_OWNER_PASSWORD"
        cat <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'owner') \gexec
ALTER ROLE :"owner" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'owner_pw';
SELECT format('CREATE ROLE %I LOGIN', :'role')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
ALTER ROLE :"role" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'owner')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
    } | psql_super -d postgres -v role="$PG_USER" -v owner="$PG_SCHEMA_OWNER" -v db="$PG_DB"
    # Only a database laid out before the owner role existed (the service's role owning it or its tables)
    # is handed over. Done on every run, it would also take the running service's temporary tables.
    psql_super -d "$PG_DB" -v role="$PG_USER" -v owner="$PG_SCHEMA_OWNER" <<'SQL'
SELECT format('REASSIGN OWNED BY %I TO %I', :'role', :'owner')
 WHERE EXISTS (SELECT 1 FROM pg_database d JOIN pg_roles r ON r.oid = d.datdba
                WHERE d.datname = current_database() AND r.rolname = :'role')
    OR EXISTS (SELECT 1 FROM pg_tables WHERE schemaname = 'public' AND tableowner = :'role') \gexec
SQL
    local ext available
    for ext in timescaledb postgis; do
        available="$(psql_super -d "$PG_DB" -At -c \
            "SELECT count(*) FROM pg_available_extensions WHERE name = '$ext'")"
        if [[ "$available" == "1" ]] &&
            psql_super -d "$PG_DB" -c "CREATE EXTENSION IF NOT EXISTS $ext" >/dev/null 2>&1; then
            log "extension $ext: available and enabled in $PG_DB"
        else
            log "extension $ext: not available (continuing without it)"
        fi
    done
}

stop_postgres() {
    pg_paths
    if pg_running; then
        log "stopping postgresql"
        pg_ctl_as_owner -w -t 60 -m fast stop >/dev/null || die "pg_ctl stop failed"
    else
        log "postgresql not running"
    fi
}

# ---------------------------------------------------------------------------- commands

cmd_infra() {
    ensure_stack_dir
    ensure_secrets
    start_mosquitto
    start_postgres
    log "infra ready: mqtt 127.0.0.1:$MQTT_PORT, postgresql 127.0.0.1:$PG_PORT/$PG_DB, secrets in $SECRETS_FILE"
}

# Prints "lat lon" of a point inside the first restricted fence of santos.geojson.
demo_point() {
    "$VENV_DIR/bin/python" - "$REPO_DIR/geofences/ports/santos.geojson" <<'PY' 2>/dev/null || echo "-23.9608 -46.3336"
import json
import sys

fallback = (-23.9608, -46.3336)  # Port of Santos, Saboo (used when no fence is found)


def restricted(props):
    for key, value in (props or {}).items():
        if key.lower() == "restricted" and value is True:
            return True
        if isinstance(value, str) and value.lower() == "restricted":
            return True
    return False


try:
    from shapely.geometry import shape

    with open(sys.argv[1], encoding="utf-8") as fh:
        features = json.load(fh).get("features", [])
    chosen = next((f for f in features if restricted(f.get("properties"))), None)
    if chosen is None:
        raise LookupError
    point = shape(chosen["geometry"]).representative_point()
    print(f"{point.y:.6f} {point.x:.6f}")
except Exception:
    print(f"{fallback[0]} {fallback[1]}")
PY
}

wait_ready() {
    local url="http://127.0.0.1:$OPS_PORT/readyz" pid="$1"
    "$VENV_DIR/bin/python" - "$url" "$pid" <<'PY'
import os
import sys
import time
import urllib.request

url, pid = sys.argv[1], int(sys.argv[2])
deadline = time.monotonic() + 30
while time.monotonic() < deadline:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("tracker exited during start-up")
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:
            if resp.status == 200:
                sys.exit(0)
    except OSError:
        pass
    time.sleep(0.5)
sys.exit(f"{url} did not answer 200 within 30 s")
PY
}

# ---------------------------------------------------------------------------- tracker service

ensure_service_user() {
    getent passwd "$SERVICE_USER" >/dev/null && return
    log "creating system user $SERVICE_USER (runs the tracker service)"
    useradd --system --user-group --home-dir /nonexistent --no-create-home \
        --shell /usr/sbin/nologin "$SERVICE_USER" || die "useradd $SERVICE_USER failed"
}

# Who runs the service, where its own files are (service.env, tracker.log), and the
# command prefix that switches to that user: none unless we are root.
tracker_paths() {
    TR_USER="$(id -un)"
    AS_SERVICE=()
    if is_root; then
        TR_USER="$SERVICE_USER"
        ensure_service_user
        # setpriv execs (no parent left behind like runuser's), so the pid file stays right.
        AS_SERVICE=(setpriv --reuid="$SERVICE_USER" --regid="$SERVICE_USER" --init-groups --no-new-privs --)
    fi
    TR_DIR="$(service_dir tracker "$TR_USER")"
    TRACKER_LOG="$TR_DIR/tracker.log"
    TR_ENV="$TR_DIR/service.env"
    mkdir -p "$TR_DIR"
    if is_root; then
        chown "$TR_USER:" "$TR_DIR"
    fi
    chmod 700 "$TR_DIR"
}

# True if the service user can start this tracker command the way start_tracker does (env
# execs it after the switch: setpriv's own exec still holds root's capabilities).
service_can_run() {
    (cd / && "${AS_SERVICE[@]}" env -i PATH=/usr/bin:/bin "$1" config) >/dev/null 2>&1
}

# The code the service user runs: the repository's .venv when that user can use it, else
# (a clone under /root, or a Python of root's own) a copy installed under
# /var/lib/port-tracker/<hash>/venv with the system's python3.
service_venv() {
    SERVICE_VENV="$VENV_DIR"
    if ! is_root || service_can_run "$VENV_DIR/bin/tracker"; then
        return
    fi
    local base dir stamp want py=python3
    [[ -x /usr/bin/python3 ]] && py=/usr/bin/python3
    base="/var/lib/port-tracker/$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-16)"
    dir="$base/venv"
    stamp="$dir/.port-tracker-deps"
    want="$(sha256sum "$REPO_DIR/pyproject.toml" | cut -d' ' -f1)"
    log "$SERVICE_USER cannot use $VENV_DIR: installing the service into $dir"
    (
        umask 022
        mkdir -p "$base"
        chmod 755 /var/lib/port-tracker "$base"
        [[ -x "$dir/bin/python" ]] || "$py" -m venv "$dir"
        if [[ -f "$stamp" && "$(cat "$stamp")" == "$want" ]]; then
            timeout 900 "$dir/bin/python" -m pip install -q --no-deps --force-reinstall "$REPO_DIR"
        else
            timeout 1800 "$dir/bin/python" -m pip install -q "$REPO_DIR"
            printf '%s\n' "$want" >"$stamp"
        fi
    ) || die "could not install the service into $dir"
    service_can_run "$dir/bin/tracker" || die "$SERVICE_USER cannot run $dir/bin/tracker either"
    SERVICE_VENV="$dir"
}

# The service's own secrets, readable by its user only; the broker admin account and the
# other accounts' passwords stay in secrets.env, which the service never sees.
write_service_env() {
    printf '%s\n' \
        "TRACKER_DB_DSN=$TRACKER_DB_DSN" \
        "TRACKER_MQTT_USERNAME=$TRACKER_MQTT_USERNAME" \
        "TRACKER_MQTT_PASSWORD=$TRACKER_MQTT_PASSWORD" \
        "TRACKER_ADMIN_TOKEN=$TRACKER_ADMIN_TOKEN" \
        "TRACKER_AUDIT_KEY_FILE=$TR_DIR/signing.key" \
        "TRACKER_AUDIT_ANCHOR_FILE=$TR_DIR/audit-anchor.json" |
        write_as "$TR_USER" ">" "$TR_ENV.tmp"
    mv -f -- "$TR_ENV.tmp" "$TR_ENV"
    # the service signs with its own copy of the key (mode 600, its user's): it never reads root's files
    write_as "$TR_USER" ">" "$TR_DIR/signing.key.tmp" <"$AUDIT_KEY"
    mv -f -- "$TR_DIR/signing.key.tmp" "$TR_DIR/signing.key"
}

start_tracker() {
    service_venv
    write_service_env
    touch "$TRACKER_LOG"
    if is_root; then
        chown "$TR_USER:" "$TRACKER_LOG"
    fi
    chmod 600 "$TRACKER_LOG"
    local -a svc_env=(
        PATH=/usr/local/bin:/usr/bin:/bin LANG=C.UTF-8 HOME="$TR_DIR"
        TRACKER_MQTT_HOST=127.0.0.1 TRACKER_MQTT_PORT="$MQTT_PORT"
        TRACKER_HTTP_HOST=127.0.0.1 TRACKER_HTTP_PORT="$HTTP_PORT"
        TRACKER_OPS_HOST=127.0.0.1 TRACKER_OPS_PORT="$OPS_PORT"
        TRACKER_UNKNOWN_DEVICES=register
    )
    log "starting tracker as $TR_USER (log: $TRACKER_LOG)"
    # A clean environment: only the settings above and the service's own secrets file.
    # shellcheck disable=SC2016 # $0/$@ are expanded by the inner shell
    (cd "$TR_DIR" && exec setsid nohup "${AS_SERVICE[@]}" env -i "${svc_env[@]}" \
        sh -c 'set -a; . "$0"; set +a; exec "$@"' "$TR_ENV" "$SERVICE_VENV/bin/tracker" run \
        </dev/null >>"$TRACKER_LOG" 2>&1) &
    echo $! >"$TRACKER_PID_FILE"
}

cmd_up() {
    cmd_install
    cmd_infra
    local tracker="$VENV_DIR/bin/tracker"
    [[ -x "$tracker" ]] || die "$tracker missing (pip install failed?)"
    local -a cli_env=(TRACKER_MQTT_HOST=127.0.0.1 TRACKER_MQTT_PORT="$MQTT_PORT")
    cd "$REPO_DIR"
    log "tracker migrate (as $PG_SCHEMA_OWNER)"
    # the owner's DSN is exported to this one command only, never to the service
    (
        set -a
        # shellcheck disable=SC1090
        . "$OWNER_FILE"
        set +a
        exec env "${cli_env[@]}" timeout 300 "$tracker" migrate
    ) || die "'tracker migrate' failed"
    local port
    for port in santos callao; do
        log "tracker geofences load geofences/ports/$port.geojson"
        env "${cli_env[@]}" timeout 300 "$tracker" geofences load "geofences/ports/$port.geojson" ||
            die "'tracker geofences load geofences/ports/$port.geojson' failed"
    done
    tracker_paths
    if pid_alive "$TRACKER_PID_FILE" tracker; then
        log "tracker already running (pid $(cat "$TRACKER_PID_FILE"))"
    else
        if port_open "$HTTP_PORT"; then
            die "127.0.0.1:$HTTP_PORT is already in use by another process (set TRACKER_HTTP_PORT)"
        fi
        start_tracker
    fi
    if ! wait_ready "$(cat "$TRACKER_PID_FILE")"; then
        tail_file "$TRACKER_LOG"
        die "tracker is not ready"
    fi
    local lat lon tls_line=""
    read -r lat lon < <(demo_point)
    if [[ -n "$MQTT_TLS_PORT" ]]; then
        tls_line="  MQTT over TLS   : 127.0.0.1:$MQTT_TLS_PORT${TLS_CA:+ (CA certificate: $TLS_CA; mosquitto_sub/pub --cafile $TLS_CA -p $MQTT_TLS_PORT ...)}"
    fi
    cat <<EOF

port-tracker is up.
  API / dashboard : http://127.0.0.1:$HTTP_PORT/
  ops (no token)  : http://127.0.0.1:$OPS_PORT/metrics and /readyz (not on the API listener)
  admin token     : $TRACKER_ADMIN_TOKEN
  service         : runs as $TR_USER, log $TRACKER_LOG
  secrets         : $SECRETS_FILE (all accounts), $TR_ENV (the service's own)
  audit key       : $AUDIT_KEY (public: $AUDIT_PUB); checkpoints retained on tracker/audit/checkpoint
  schema owner    : $OWNER_FILE (migrations only)
  MQTT broker     : 127.0.0.1:$MQTT_PORT     PostgreSQL: 127.0.0.1:$PG_PORT/$PG_DB
${tls_line}
Watch the alerts (security account):
  ( . $SECRETS_FILE; mosquitto_sub -h 127.0.0.1 -p $MQTT_PORT -u "\$TRACKER_MQTT_SECURITY_USERNAME" -P "\$TRACKER_MQTT_SECURITY_PASSWORD" -t 'alerts/#' -v )

Send TRUCK-001 into a restricted fence of Santos (gateway account; two fixes, 10 s apart: a restricted
entry is confirmed by a second fix inside, so a lone multipath fix never raises a high alarm):
  ( . $SECRETS_FILE; for dt in 10 0; do mosquitto_pub -h 127.0.0.1 -p $MQTT_PORT -u "\$TRACKER_MQTT_DEVICE_USERNAME" -P "\$TRACKER_MQTT_DEVICE_PASSWORD" -q 1 -t trackers/TRUCK-001/ping -m "{\"ts\": \$((\$(date +%s) - dt)), \"lat\": $lat, \"lon\": $lon}"; done )

Give a tracker its own MQTT account, allowed to publish trackers/TRUCK-002/ping only (the
password is printed once; the broker keeps only its hash):
  ( set -a; . $SECRETS_FILE; $VENV_DIR/bin/tracker device add TRUCK-002 --kind truck )

Stop with: bash deploy/stack.sh down
EOF
}

cmd_down() {
    stop_pidfile "$TRACKER_PID_FILE" tracker
    if [[ -d "$STACK_DIR" ]]; then
        mqtt_paths
        stop_pidfile "$MQ_PID" mosquitto
        if [[ -s "$STACK_DIR/postgres.path" ]] || [[ -d "$STACK_DIR/postgres" ]]; then
            stop_postgres
        fi
    fi
}

cmd_status() {
    if [[ ! -f "$MARKER_FILE" ]]; then
        echo "no stack in $STACK_DIR"
        return
    fi
    echo "stack dir : $STACK_DIR"
    if pid_alive "$TRACKER_PID_FILE" tracker; then
        echo "tracker   : running (pid $(cat "$TRACKER_PID_FILE"), user $(ps -o user= -p "$(cat "$TRACKER_PID_FILE")")), http://127.0.0.1:$HTTP_PORT/, log $TRACKER_LOG"
    else
        echo "tracker   : stopped"
    fi
    mqtt_paths
    if pid_alive "$MQ_PID" mosquitto; then
        echo "mosquitto : running (pid $(cat "$MQ_PID")), 127.0.0.1:$MQTT_PORT, log $MQ_LOG"
    else
        echo "mosquitto : stopped"
    fi
    pg_paths
    if pg_running; then
        echo "postgresql: running, 127.0.0.1:$PG_PORT/$PG_DB, data $PGDATA_DIR, log $PG_LOG"
    else
        echo "postgresql: stopped (data $PGDATA_DIR)"
    fi
}

cmd_destroy() {
    [[ "${1:-}" == "--yes" ]] || die "destroy deletes $STACK_DIR and its databases: run 'deploy/stack.sh destroy --yes'"
    if [[ ! -d "$STACK_DIR" ]]; then
        log "nothing to destroy in $STACK_DIR"
        return
    fi
    [[ -f "$MARKER_FILE" ]] || [[ -z "$(ls -A "$STACK_DIR")" ]] ||
        die "$STACK_DIR is not a port-tracker stack directory; not deleting it"
    cmd_down
    local record dir
    for record in "$STACK_DIR/postgres.path" "$STACK_DIR/mosquitto.path" "$STACK_DIR/tracker.path"; do
        [[ -s "$record" ]] || continue
        dir="$(cat "$record")"
        case "$dir" in
            "$STACK_DIR"/*) ;;
            /var/lib/port-tracker/*/*)
                log "removing $dir"
                rm -rf -- "$dir"
                rmdir -- "$(dirname "$dir")" 2>/dev/null || true
                ;;
            *) log "not removing unexpected data dir $dir" ;;
        esac
    done
    # The service's copy of the code, when it could not use the repository's .venv.
    local base
    base="/var/lib/port-tracker/$(printf '%s' "$STACK_DIR" | sha256sum | cut -c1-16)"
    if [[ -d "$base/venv" ]]; then
        log "removing $base/venv"
        rm -rf -- "$base/venv"
        rmdir -- "$base" 2>/dev/null || true
    fi
    log "removing $STACK_DIR"
    rm -rf -- "$STACK_DIR"
}

cmd_compose_env() {
    local target="$DEPLOY_DIR/.env"
    if [[ -e "$target" ]]; then
        if ! grep -q '^TRACKER_AUDIT_KEY=' "$target"; then
            printf 'TRACKER_AUDIT_KEY=%s\n' "$(random_hex 32)" >>"$target"
            log "added the alert log's signing key TRACKER_AUDIT_KEY to $target"
        fi
        log "$target exists; leaving the rest alone"
        return
    fi
    (
        umask 077
        cat >"$target" <<EOF
# Secrets for deploy/compose.yaml. Never commit this file.
TRACKER_PG_USER=tracker
TRACKER_PG_DB=tracker
TRACKER_PG_PASSWORD=$(random_hex 24)
TRACKER_MQTT_USERNAME=tracker-service
TRACKER_MQTT_PASSWORD=$(random_hex 24)
TRACKER_MQTT_DEVICE_USERNAME=gateway
TRACKER_MQTT_DEVICE_PASSWORD=$(random_hex 24)
TRACKER_MQTT_SECURITY_USERNAME=security
TRACKER_MQTT_SECURITY_PASSWORD=$(random_hex 24)
TRACKER_MQTT_CUSTOMS_USERNAME=customs
TRACKER_MQTT_CUSTOMS_PASSWORD=$(random_hex 24)
TRACKER_MQTT_ADMIN_USERNAME=broker-admin
TRACKER_MQTT_ADMIN_PASSWORD=$(random_hex 24)
TRACKER_ADMIN_TOKEN=$(random_hex 32)
# Ed25519 seed signing the alert log (public key: docker compose run --rm tracker tracker audit pubkey)
TRACKER_AUDIT_KEY=$(random_hex 32)
EOF
    )
    log "wrote $target (mode 600)"
}

usage() {
    sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

main() {
    local cmd="${1:-}"
    [[ $# -gt 0 ]] && shift
    case "$cmd" in
        install) cmd_install ;;
        infra) validate_env; cmd_infra ;;
        up) validate_env; cmd_up ;;
        down) validate_env; cmd_down ;;
        status) validate_env; cmd_status ;;
        destroy) validate_env; cmd_destroy "$@" ;;
        compose-env) cmd_compose_env ;;
        -h | --help | help) usage ;;
        *) usage ;;
    esac
}

main "$@"
