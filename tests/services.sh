#!/usr/bin/env bash
# Start or stop the throwaway servers that integration tests and the demo run
# against: PostgreSQL 15 (TLS, demo data, one role per authentication method),
# the test OIDC issuer and an OpenSSH sshd. Everything listens on 127.0.0.1 only.
#
#   tests/services.sh start   # prints the env file it wrote; source it with
#                             #   set -a; . "$HG_RUN/env"; set +a
#   tests/services.sh stop    # needs HG_RUN; HG_KEEP=1 keeps the run directory
#
# Environment:
#   HG_RUN      run directory (all state, sockets, logs, passwords); default a
#               fresh /tmp/hoopgate-it.XXXXXX. `start` refuses a non-empty one.
#   PG_PORT     PostgreSQL port; default a free loopback port.
#   OIDC_PORT   issuer port; default a free loopback port.
#   SSH_PORT    OpenSSH sshd port; default a free loopback port.
#   SSH_KEEPALIVE_PORT  a second sshd port whose sessions get ClientAliveInterval 1
#               and ClientAliveCountMax 2; default a free loopback port.
#   HG_PYTHON   Python with joserfc and twisted; default the project's .venv.
#   HG_KEEP=1   `stop` leaves the run directory in place (logs for a post-mortem).
#   PG_MAX_CONNECTIONS  PostgreSQL's max_connections; unset: PostgreSQL's
#               default (the benchmarks' idle-session row needs a few thousand).
#
# Recipes follow /work/shared/TEST-SERVERS.md sections 3, 4, 8 and 9. Must run as
# root (it uses runuser for PostgreSQL). Every wait is bounded; a server that
# does not come up makes `start` fail with the tail of its log.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PY=${HG_PYTHON:-$ROOT/.venv/bin/python}
PGBIN=/usr/lib/postgresql/15/bin
OIDC_AUDIENCE=https://hoopgate.test
MARKER=.hoopgate-run        # marks a directory this script may delete

# --- small helpers -----------------------------------------------------------

die() { echo "services.sh: $*" >&2; exit 1; }
log() { echo "services.sh: $*" >&2; }

# A process counts as alive unless it is gone or a zombie (zombies keep
# answering kill -0 until their parent reaps them).
alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

# Stop the process whose PID is in file $1: TERM, up to 5 s, then KILL.
stop_pid() {
  local p
  p=$(cat "$1" 2>/dev/null) || return 0
  if kill -TERM "$p" 2>/dev/null; then
    for _ in $(seq 100); do alive "$p" || break; sleep 0.05; done
    if alive "$p"; then kill -KILL "$p" 2>/dev/null || true; fi
  fi
  rm -f "$1"
}

# A free TCP port on 127.0.0.1 (the kernel picks it; we release it at once,
# so the server that takes it next is racing only other port-0 binders).
free_port() {
  "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

random_secret() { openssl rand -hex 16; }

# Write a secret without a trailing newline, readable by root only.
write_secret() {
  (umask 077; printf '%s' "$2" > "$1")
}

# Print the last lines of a log, for a server that failed.
show_log() {
  echo "----- last lines of $1 -----" >&2
  tail -n 40 "$1" >&2 2>/dev/null || echo "(no log)" >&2
  echo "-----" >&2
}

# wait_ready NAME PIDFILE LOG CMD...: poll CMD every 0.05 s for at most 20 s
# while the server's process lives. On failure print its log and return 1.
wait_ready() {
  local name=$1 pidfile=$2 logfile=$3 pid n=0
  shift 3
  pid=$(cat "$pidfile")
  until "$@" >/dev/null 2>&1; do
    if ! alive "$pid"; then
      log "$name exited during start-up"; show_log "$logfile"; return 1
    fi
    n=$((n + 1))
    if [ $n -gt 400 ]; then
      log "$name did not answer within 20 s"; show_log "$logfile"; return 1
    fi
    sleep 0.05
  done
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- run directory and TLS ---------------------------------------------------

make_run_dir() {
  RUN=${HG_RUN:-$(mktemp -d /tmp/hoopgate-it.XXXXXX)}
  mkdir -p "$RUN"
  RUN=$(cd "$RUN" && pwd -P)
  if [ -n "$(ls -A "$RUN")" ]; then
    die "run directory $RUN is not empty (stop it first, or choose another HG_RUN)"
  fi
  # mktemp makes 0700; postgres must traverse it to reach its socket and files.
  chmod 755 "$RUN"
  touch "$RUN/$MARKER"
}

# One self-signed certificate (its own trust anchor) for every server.
make_tls_cert() {
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
    -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
    -keyout "$RUN/tls.key" -out "$RUN/tls.crt" 2>/dev/null
  chmod 600 "$RUN/tls.key"
  chmod 644 "$RUN/tls.crt"
}

# --- PostgreSQL 15 -----------------------------------------------------------

pg() { runuser -u postgres -- "$PGBIN/$@"; }

# psql as the superuser over the Unix socket (local = trust).
pg_psql() {
  psql -X -q -v ON_ERROR_STOP=1 -h "$RUN/pg" -p "$PG_PORT" -U postgres "$@"
}

write_pg_hba() {
  # First match wins. Unix sockets are trusted (setup and tests as root);
  # TCP on loopback needs SCRAM, except the per-role rules above the last line.
  cat > "$1" <<'EOF'
local     all all                    trust
host      all trusty  127.0.0.1/32   trust
hostssl   all sslonly 127.0.0.1/32   scram-sha-256
hostnossl all sslonly 127.0.0.1/32   reject
host      all mduser  127.0.0.1/32   md5
host      all all     127.0.0.1/32   scram-sha-256
EOF
}

write_pg_conf() {
  cat >> "$1" <<EOF

# --- hoopgate test server (tests/services.sh) ---
listen_addresses = '127.0.0.1'
port = $PG_PORT
unix_socket_directories = '$RUN/pg'
ssl = on
ssl_cert_file = '$RUN/pg/tls.crt'
ssl_key_file = '$RUN/pg/tls.key'
password_encryption = 'scram-sha-256'
log_statement = 'all'
log_connections = on
log_disconnections = on
fsync = off
synchronous_commit = off
full_page_writes = off
${PG_MAX_CONNECTIONS:+max_connections = $PG_MAX_CONNECTIONS}
EOF
}

# Roles, one per authentication method the gateway must handle upstream.
# log_statement is switched off for this session so no password reaches the log.
create_pg_roles() {
  pg_psql -d postgres \
    -v app_pw="$APP_PASSWORD" -v ro_pw="$APP_RO_PASSWORD" \
    -v md_pw="$MD_PASSWORD" -v ssl_pw="$SSLONLY_PASSWORD" <<'EOF'
SET log_statement = 'none';
CREATE ROLE app LOGIN PASSWORD :'app_pw';
CREATE ROLE app_ro LOGIN PASSWORD :'ro_pw';
CREATE ROLE sslonly LOGIN PASSWORD :'ssl_pw';
CREATE ROLE trusty LOGIN;
SET password_encryption = 'md5';
CREATE ROLE mduser LOGIN PASSWORD :'md_pw';
RESET password_encryption;
CREATE DATABASE appdb OWNER app;
EOF
}

start_pg() {
  local R=$RUN/pg
  PG_PORT=${PG_PORT:-$(free_port)}
  mkdir -p "$R"
  cp "$RUN/tls.crt" "$RUN/tls.key" "$R/"

  PG_SUPERUSER_PASSWORD=$(random_secret)
  APP_PASSWORD=$(random_secret)
  APP_RO_PASSWORD=$(random_secret)
  MD_PASSWORD=$(random_secret)
  SSLONLY_PASSWORD=$(random_secret)
  write_secret "$R/initdb.pw" "$PG_SUPERUSER_PASSWORD"
  chown -R postgres: "$R"
  chmod 600 "$R/tls.key" "$R/initdb.pw"

  if ! pg initdb -D "$R/data" -U postgres --pwfile="$R/initdb.pw" \
      --auth-local=trust --auth-host=scram-sha-256 -E UTF8 \
      --locale=C.UTF-8 --no-sync > "$R/initdb.log" 2>&1; then
    log "initdb failed"; show_log "$R/initdb.log"; return 1
  fi
  rm -f "$R/initdb.pw"
  write_pg_hba "$R/data/pg_hba.conf"
  write_pg_conf "$R/data/postgresql.conf"

  # -w: returns once the server accepts connections (or fails), -t bounds it.
  if ! pg pg_ctl -D "$R/data" -l "$R/server.log" -w -t 30 start > "$R/pg_ctl.log" 2>&1; then
    log "PostgreSQL did not start"; show_log "$R/server.log"; return 1
  fi
  head -1 "$R/data/postmaster.pid" > "$RUN/pg.pid"

  # Passwords for tests and the gateway's {file: ...} secrets; root-only.
  write_secret "$R/postgres.pw" "$PG_SUPERUSER_PASSWORD"
  write_secret "$R/app.pw" "$APP_PASSWORD"
  write_secret "$R/app_ro.pw" "$APP_RO_PASSWORD"
  write_secret "$R/mduser.pw" "$MD_PASSWORD"
  write_secret "$R/sslonly.pw" "$SSLONLY_PASSWORD"

  create_pg_roles
  # The fixtures are loaded as `app`, so it owns them (socket: trust).
  psql -X -q -v ON_ERROR_STOP=1 -h "$R" -p "$PG_PORT" -U app -d appdb \
    -f "$ROOT/tests/fixtures/demo.sql" > "$R/fixtures.log" 2>&1 \
    || { log "loading tests/fixtures/demo.sql failed"; show_log "$R/fixtures.log"; return 1; }
}

stop_pg() {
  local R=$RUN/pg
  if [ -f "$R/data/postmaster.pid" ]; then
    pg pg_ctl -D "$R/data" -m fast -w -t 30 stop > /dev/null 2>&1 || true
  fi
  # If pg_ctl could not stop it (or the data directory is damaged), stop the PID.
  stop_pid "$RUN/pg.pid"
}

# --- OIDC issuer -------------------------------------------------------------

start_oidc() {
  local O=$RUN/oidc
  OIDC_PORT=${OIDC_PORT:-$(free_port)}
  while [ "$OIDC_PORT" = "$PG_PORT" ]; do OIDC_PORT=$(free_port); done
  OIDC_ISSUER=http://127.0.0.1:$OIDC_PORT
  OIDC_KEY_FILE=$O/key.json
  mkdir -p "$O"
  "$PY" "$ROOT/tests/oidc/issuer.py" --port "$OIDC_PORT" \
    --audience "$OIDC_AUDIENCE" --key-file "$OIDC_KEY_FILE" \
    < /dev/null > "$O/issuer.log" 2>&1 &
  echo $! > "$RUN/oidc.pid"
  wait_ready "OIDC issuer" "$RUN/oidc.pid" "$O/issuer.log" \
    curl -fsS --max-time 2 "$OIDC_ISSUER/.well-known/openid-configuration"
}

stop_oidc() { stop_pid "$RUN/oidc.pid"; }

# --- OpenSSH sshd -------------------------------------------------------------

# A throwaway sshd as root on loopback: key login only (the client key the
# gateway holds), SFTP built in, TCP forwarding on (the default). Sessions on
# SSH_KEEPALIVE_PORT get ClientAliveInterval 1 / ClientAliveCountMax 2, so
# tests see sshd's own keepalives toward the gateway.
write_sshd_config() {
  cat > "$1/sshd_config" <<EOF
ListenAddress 127.0.0.1
Port $SSH_PORT
Port $SSH_KEEPALIVE_PORT
HostKey $1/host_ed25519
PidFile $1/sshd.pid
AuthorizedKeysFile $1/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
AcceptEnv LANG LC_* HG_TEST_*
Subsystem sftp internal-sftp
LogLevel VERBOSE
Match LocalPort $SSH_KEEPALIVE_PORT
  ClientAliveInterval 1
  ClientAliveCountMax 2
EOF
}

# A free port that none of the servers started before took.
other_port() {
  local p
  p=$(free_port)
  while [[ " $* " == *" $p "* ]]; do p=$(free_port); done
  echo "$p"
}

start_ssh() {
  local S=$RUN/ssh k
  SSH_PORT=${SSH_PORT:-$(other_port "$PG_PORT" "$OIDC_PORT")}
  SSH_KEEPALIVE_PORT=${SSH_KEEPALIVE_PORT:-$(other_port "$PG_PORT" "$OIDC_PORT" "$SSH_PORT")}
  mkdir -p "$S"
  mkdir -p -m 0755 /run/sshd   # sshd's privilege separation directory
  for k in host client; do
    ssh-keygen -q -t ed25519 -N '' -C "hoopgate-test-$k" -f "$S/${k}_ed25519"
  done
  cp "$S/client_ed25519.pub" "$S/authorized_keys"
  write_sshd_config "$S"
  if ! /usr/sbin/sshd -t -f "$S/sshd_config" > "$S/check.log" 2>&1; then
    log "sshd rejected its configuration"; show_log "$S/check.log"; return 1
  fi
  # -D -e: foreground, log to stderr; sshd needs its absolute path to re-exec.
  /usr/sbin/sshd -D -e -f "$S/sshd_config" < /dev/null > "$S/sshd.log" 2>&1 &
  echo $! > "$RUN/ssh.pid"
  # OpenSSH, asyncssh and paramiko read [host]:port entries.
  for k in "$SSH_PORT" "$SSH_KEEPALIVE_PORT"; do
    printf '[127.0.0.1]:%s %s\n' "$k" "$(cat "$S/host_ed25519.pub")"
  done > "$S/known_hosts"
  wait_ready "sshd" "$RUN/ssh.pid" "$S/sshd.log" tcp_open "$SSH_PORT"
  wait_ready "sshd" "$RUN/ssh.pid" "$S/sshd.log" tcp_open "$SSH_KEEPALIVE_PORT"
  SSH_HOST=127.0.0.1 SSH_USER=root SSH_CLIENT_KEY=$S/client_ed25519
  SSH_HOST_KEY_PUB=$S/host_ed25519.pub SSH_KNOWN_HOSTS=$S/known_hosts
}

stop_ssh() { stop_pid "$RUN/ssh.pid"; }

# --- Redis, OpenLDAP slapd and an SMTP sink (approvals) ------------------------
#
# Redis 7 with requirepass (the password reaches redis-server through a 0600
# config file, never argv); slapd 2.5 with the memberof overlay, loaded from
# tests/ldap/data.ldif over LDAP (so memberOf is maintained), StartTLS and an
# ldaps:// port with the run's certificate, every person's password set with
# ldappasswd (hashed by slapd); the SMTP sink tests/smtp/sink.py writing each
# mail as a file into a maildir, offering STARTTLS. Recipes: TEST-SERVERS.md
# sections 6 and 7. Ports: REDIS_PORT, LDAP_PORT, LDAPS_PORT, SMTP_PORT
# (default: free loopback ports).

LDAP_BASE=dc=example,dc=org
LDAP_ADMIN_DN=cn=admin,$LDAP_BASE
LDAP_PEOPLE="alice bob carol dave ci-runner"

used_ports() {
  echo "${PG_PORT:-} ${OIDC_PORT:-} ${SSH_PORT:-} ${SSH_KEEPALIVE_PORT:-}" \
    "${REDIS_PORT:-} ${LDAP_PORT:-} ${LDAPS_PORT:-} ${SMTP_PORT:-}"
}

redis_ping() {
  REDISCLI_AUTH=$REDIS_PASSWORD redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping \
    | grep -q PONG
}

start_redis() {
  local R=$RUN/redis
  command -v redis-server > /dev/null || die "redis-server is not installed (run: make setup)"
  # shellcheck disable=SC2046
  REDIS_PORT=${REDIS_PORT:-$(other_port $(used_ports))}
  mkdir -p "$R"
  REDIS_PASSWORD=$(random_secret)
  write_secret "$R/redis.pw" "$REDIS_PASSWORD"
  (umask 077; printf 'requirepass %s\n' "$REDIS_PASSWORD" > "$R/redis.conf")
  redis-server "$R/redis.conf" --port "$REDIS_PORT" --bind 127.0.0.1 --save '' \
    --appendonly no --daemonize no --dir "$R" --logfile "$R/redis.log" \
    < /dev/null > /dev/null 2>&1 &
  echo $! > "$RUN/redis.pid"
  wait_ready "Redis" "$RUN/redis.pid" "$R/redis.log" redis_ping
  REDIS_HOST=127.0.0.1 REDIS_PASSWORD_FILE=$R/redis.pw
}

stop_redis() { stop_pid "$RUN/redis.pid"; }

write_slapd_conf() {
  local L=$1 SCH=/etc/ldap/schema
  printf '%s\n' \
    "include $SCH/core.schema" "include $SCH/cosine.schema" \
    "include $SCH/inetorgperson.schema" "include $SCH/nis.schema" \
    "modulepath /usr/lib/ldap" "moduleload back_mdb" "moduleload memberof" \
    "pidfile $L/slapd.pid" "argsfile $L/slapd.args" \
    "TLSCertificateFile $L/tls.crt" "TLSCertificateKeyFile $L/tls.key" \
    "database mdb" "maxsize 67108864" "suffix \"$LDAP_BASE\"" \
    "rootdn \"$LDAP_ADMIN_DN\"" "rootpw $(slappasswd -s "$LDAP_ADMIN_PASSWORD")" \
    "directory $L/db" "index objectClass,member,uniqueMember,mail,uid eq" \
    "overlay memberof" \
    "access to attrs=userPassword by self write by anonymous auth by * none" \
    "access to * by * read" > "$L/slapd.conf"
  chmod 600 "$L/slapd.conf"
}

ldap_up() { ldapsearch -x -H "$LDAP_URL" -b "" -s base > /dev/null; }

start_ldap() {
  local L=$RUN/ldap who
  [ -x /usr/sbin/slapd ] || die "slapd is not installed (run: make setup)"
  command -v ldapadd > /dev/null || die "ldap-utils is not installed (run: make setup)"
  # shellcheck disable=SC2046
  LDAP_PORT=${LDAP_PORT:-$(other_port $(used_ports))}
  # shellcheck disable=SC2046
  LDAPS_PORT=${LDAPS_PORT:-$(other_port $(used_ports))}
  LDAP_URL=ldap://127.0.0.1:$LDAP_PORT
  LDAPS_URL=ldaps://127.0.0.1:$LDAPS_PORT
  mkdir -p "$L/db"
  cp "$RUN/tls.crt" "$RUN/tls.key" "$L/"
  LDAP_ADMIN_PASSWORD=$(random_secret)
  LDAP_USER_PASSWORD=$(random_secret)
  LDAP_ADMIN_PASSWORD_FILE=$L/admin.pw LDAP_USER_PASSWORD_FILE=$L/user.pw
  write_secret "$LDAP_ADMIN_PASSWORD_FILE" "$LDAP_ADMIN_PASSWORD"
  write_secret "$LDAP_USER_PASSWORD_FILE" "$LDAP_USER_PASSWORD"
  write_slapd_conf "$L"
  # -d 0: stays in the foreground (its PID is $!), logs nothing but errors.
  /usr/sbin/slapd -f "$L/slapd.conf" -h "$LDAP_URL/ $LDAPS_URL/" -d 0 \
    < /dev/null > "$L/slapd.out" 2>&1 &
  echo $! > "$RUN/ldap.pid"
  wait_ready "slapd" "$RUN/ldap.pid" "$L/slapd.out" ldap_up
  if ! ldapadd -x -H "$LDAP_URL" -D "$LDAP_ADMIN_DN" -y "$LDAP_ADMIN_PASSWORD_FILE" \
      -f "$ROOT/tests/ldap/data.ldif" > "$L/load.log" 2>&1; then
    log "loading tests/ldap/data.ldif failed"; show_log "$L/load.log"; return 1
  fi
  for who in $LDAP_PEOPLE; do
    ldappasswd -x -H "$LDAP_URL" -D "$LDAP_ADMIN_DN" -y "$LDAP_ADMIN_PASSWORD_FILE" \
      -T "$LDAP_USER_PASSWORD_FILE" "uid=$who,ou=people,$LDAP_BASE" >> "$L/load.log" 2>&1 \
      || { log "setting the password of $who failed"; show_log "$L/load.log"; return 1; }
  done
}

stop_ldap() { stop_pid "$RUN/ldap.pid"; }

start_smtp() {
  local M=$RUN/smtp
  # shellcheck disable=SC2046
  SMTP_PORT=${SMTP_PORT:-$(other_port $(used_ports))}
  SMTP_HOST=127.0.0.1 SMTP_MAILDIR=$M/maildir
  mkdir -p "$M"
  "$PY" "$ROOT/tests/smtp/sink.py" --port "$SMTP_PORT" --maildir "$SMTP_MAILDIR" \
    --cert "$RUN/tls.crt" --key "$RUN/tls.key" < /dev/null > "$M/sink.log" 2>&1 &
  echo $! > "$RUN/smtp.pid"
  wait_ready "SMTP sink" "$RUN/smtp.pid" "$M/sink.log" tcp_open "$SMTP_PORT"
}

stop_smtp() { stop_pid "$RUN/smtp.pid"; }

# --- env file ----------------------------------------------------------------

# Shell assignments for `set -a; . $RUN/env`. It holds passwords: root-only.
write_env() {
  local name
  (
    umask 077
    for name in HG_RUN PG_HOST PG_PORT PG_SOCKET_DIR PG_DATABASE \
        PG_SUPERUSER_PASSWORD APP_PASSWORD APP_RO_PASSWORD MD_PASSWORD \
        SSLONLY_PASSWORD OIDC_ISSUER OIDC_AUDIENCE OIDC_KEY_FILE \
        TLS_CERT TLS_KEY SSH_HOST SSH_PORT SSH_KEEPALIVE_PORT SSH_USER \
        SSH_CLIENT_KEY SSH_HOST_KEY_PUB SSH_KNOWN_HOSTS \
        REDIS_HOST REDIS_PORT REDIS_PASSWORD REDIS_PASSWORD_FILE \
        LDAP_URL LDAPS_URL LDAP_PORT LDAPS_PORT LDAP_BASE LDAP_ADMIN_DN \
        LDAP_ADMIN_PASSWORD LDAP_ADMIN_PASSWORD_FILE LDAP_USER_PASSWORD \
        LDAP_USER_PASSWORD_FILE SMTP_HOST SMTP_PORT SMTP_MAILDIR; do
      printf '%s=%q\n' "$name" "${!name}"
    done > "$RUN/env.tmp"
  )
  mv "$RUN/env.tmp" "$RUN/env"
}

# --- commands ----------------------------------------------------------------

cmd_start() {
  [ "$(id -u)" = 0 ] || die "must run as root (PostgreSQL is started with runuser)"
  [ -x "$PGBIN/initdb" ] || die "PostgreSQL 15 is not installed (run: make setup)"
  [ -x "$PY" ] || die "no Python at $PY (run: make setup, or set HG_PYTHON)"
  [ -x /usr/sbin/sshd ] || die "OpenSSH sshd is not installed (run: make setup)"
  make_run_dir
  export HG_RUN=$RUN
  # From here on, any failure (set -e) exits through on_start_exit, which
  # stops whatever already started.
  trap on_start_exit EXIT

  make_tls_cert
  start_pg
  start_oidc
  start_ssh
  start_redis
  start_ldap
  start_smtp

  HG_RUN=$RUN PG_HOST=127.0.0.1 PG_SOCKET_DIR=$RUN/pg PG_DATABASE=appdb
  TLS_CERT=$RUN/tls.crt TLS_KEY=$RUN/tls.key
  write_env
  STARTED=1
  echo "services.sh: PostgreSQL on 127.0.0.1:$PG_PORT, OIDC issuer $OIDC_ISSUER"
  echo "services.sh: sshd on 127.0.0.1:$SSH_PORT (keepalive port $SSH_KEEPALIVE_PORT)"
  echo "services.sh: Redis on 127.0.0.1:$REDIS_PORT, slapd $LDAP_URL ($LDAPS_URL), SMTP sink on 127.0.0.1:$SMTP_PORT"
  echo "services.sh: wrote $RUN/env  (set -a; . $RUN/env; set +a)"
}

STARTED=0
on_start_exit() {
  if [ "$STARTED" != 1 ]; then
    log "start failed; stopping what had started"
    cmd_stop || true
  fi
}

cmd_stop() {
  RUN=${HG_RUN:-}
  [ -n "$RUN" ] || die "HG_RUN is not set: which run directory should be stopped?"
  [ -d "$RUN" ] || { log "$RUN does not exist; nothing to stop"; return 0; }
  [ -f "$RUN/$MARKER" ] || die "$RUN was not made by tests/services.sh; not touching it"
  stop_smtp
  stop_ldap
  stop_redis
  stop_ssh
  stop_oidc
  stop_pg
  if [ "${HG_KEEP:-0}" = 1 ]; then
    log "kept $RUN (HG_KEEP=1)"
  else
    rm -rf "$RUN"
  fi
}

case ${1:-} in
  start) cmd_start ;;
  stop) cmd_stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
