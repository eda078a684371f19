#!/usr/bin/env bash
# `make demo`: throwaway PostgreSQL and OIDC issuer on loopback (through
# tests/services.sh), hoopgate in front of them, demo/env for clients.
# Runs in the foreground; Ctrl-C stops everything it started.
#
# Files (all under demo/, which git ignores):
#   demo/run -> /tmp/hoopgate-demo.XXXXXX   the servers' run directory
#   demo/hoopgate.yaml                       the gateway's configuration
#   demo/hoopgate.log                        the gateway's log
#   demo/recordings/                         session recordings
#   demo/env                                 written once everything answers
#   demo/ssh_ca, demo/ssh_host_ed25519       the SSH CA and host keys (kept)
#   demo/ssh_known_hosts                     the gateway's SSH host key for clients
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
VENV=$ROOT/.venv
PY=$VENV/bin/python
DEMO=$ROOT/demo
GATEWAY_PIDFILE=$DEMO/hoopgate.pid
TOKEN_TTL=28800   # 8 h

say() { echo "demo: $*"; }
die() { echo "demo: $*" >&2; exit 1; }

alive() {
  local st
  st=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ $st != Z* ]]
}

free_port() {
  "$PY" -c 'import socket
s = socket.socket()
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])'
}

tcp_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

healthz_ok() {
  [ "$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$ADMIN_URL/healthz")" = 200 ]
}

# --- cleanup -----------------------------------------------------------------

stop_gateway() {
  local pid
  pid=$(cat "$GATEWAY_PIDFILE" 2>/dev/null) || return 0
  if kill -TERM "$pid" 2>/dev/null; then
    for _ in $(seq 200); do alive "$pid" || break; sleep 0.05; done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  rm -f "$GATEWAY_PIDFILE"
}

CLEANED=0
cleanup() {
  [ "$CLEANED" = 1 ] && return 0
  CLEANED=1
  trap '' INT TERM     # a second Ctrl-C must not interrupt the clean-up
  say "stopping"
  rm -f "$DEMO/env"    # its token and ports are about to mean nothing
  stop_gateway
  if [ -n "${HG_RUN:-}" ]; then
    HG_RUN=$HG_RUN "$ROOT/tests/services.sh" stop || true
  fi
  rm -f "$DEMO/run"
  say "stopped (log: demo/hoopgate.log, recordings: demo/recordings/)"
}

# --- steps -------------------------------------------------------------------

refuse_second_demo() {
  local pid
  pid=$(cat "$GATEWAY_PIDFILE" 2>/dev/null) || return 0
  if alive "$pid"; then
    die "a demo is already running (gateway PID $pid); stop it with Ctrl-C first"
  fi
  rm -f "$GATEWAY_PIDFILE"
}

start_servers() {
  HG_RUN=$(mktemp -d /tmp/hoopgate-demo.XXXXXX)
  export HG_RUN
  ln -sfn "$HG_RUN" "$DEMO/run"
  "$ROOT/tests/services.sh" start
  set -a
  # shellcheck disable=SC1091
  . "$HG_RUN/env"
  set +a
}

write_config() {
  GW_PG_PORT=$(free_port)
  ADMIN_PORT=$(free_port)
  while [ "$ADMIN_PORT" = "$GW_PG_PORT" ]; do ADMIN_PORT=$(free_port); done
  ADMIN_URL=http://127.0.0.1:$ADMIN_PORT
  GW_SSH_PORT=$(free_port)
  while [ "$GW_SSH_PORT" = "$GW_PG_PORT" ] || [ "$GW_SSH_PORT" = "$ADMIN_PORT" ]; do
    GW_SSH_PORT=$(free_port)
  done
  make_ssh_ca
  mkdir -p "$DEMO/recordings"
  # Approval links are signed with it (every gateway of the store shares it).
  (umask 077; openssl rand -hex 24 > "$DEMO/link.secret")
  # Schema: docs/config-schema-draft.md. Secrets by reference only.
  cat > "$DEMO/hoopgate.yaml" <<EOF
# Written by scripts/demo.sh; rewritten on every run.
gateway:
  admin:
    listen: "tcp:$ADMIN_PORT:interface=127.0.0.1"
  recordings:
    directory: $DEMO/recordings
    on_failure: close
  store:
    kind: redis
    url: "redis://127.0.0.1:$REDIS_PORT/0"
    password: {file: $REDIS_PASSWORD_FILE}
    prefix: "hoopgate-demo:"
  plugins:
    packages: [hoopgate_plugins]
    dropin_dirs: []
  approvals:
    public_url: "$ADMIN_URL"
    link_secret: {file: $DEMO/link.secret}
    groups:
      dba: "cn=dba-approvers,ou=groups,$LDAP_BASE"
    directory:
      url: "$LDAP_URL"
      start_tls: true
      ca: $TLS_CERT
      bind_dn: "$LDAP_ADMIN_DN"
      bind_password: {file: $LDAP_ADMIN_PASSWORD_FILE}
      people: "ou=people,$LDAP_BASE"
      person_filter: "(objectClass=inetOrgPerson)"
      identity: {claim: sub, attribute: uid}
    notify:
      - kind: log
      - kind: email
        host: 127.0.0.1
        port: $SMTP_PORT
        from: hoopgate@example.org
        tls: starttls
        ca: $TLS_CERT

identity:
  issuers:
    - name: demo
      issuer: "$OIDC_ISSUER"
      audience: "$OIDC_AUDIENCE"
      algorithms: [RS256]
      subject_claim: sub
      groups_claim: groups
      required_claims: []
      leeway: 30s

listeners:
  - name: pg
    protocol: postgres
    listen: "tcp:$GW_PG_PORT:interface=127.0.0.1"
    tls:
      certificate: $TLS_CERT
      key: $TLS_KEY
    cleartext_without_tls: true     # loopback demo only
  - name: ssh
    protocol: ssh
    listen: "tcp:$GW_SSH_PORT:interface=127.0.0.1"
    host_key: $DEMO/ssh_host_ed25519   # created on first start
    certificates:
      ca_key: $DEMO/ssh_ca             # signs hoopgate ssh-cert certificates
      validity: 10m
      source_address: [requester]

targets:
  - name: box
    protocol: ssh
    host: 127.0.0.1
    port: $SSH_PORT
    known_hosts: $SSH_KNOWN_HOSTS
    forward_to: ["127.0.0.1:$PG_PORT"]
    credentials:
      - name: app
        user: root
        private_key: {file: $SSH_CLIENT_KEY}
  - name: appdb
    protocol: postgres
    host: 127.0.0.1
    port: $PG_PORT
    database: appdb
    tls:
      mode: verify-full
      ca: $TLS_CERT
    allowed_options: []
    credentials:
      - name: app
        user: app
        password: {file: $HG_RUN/pg/app.pw}

policy:
  version: 1
  access:
    - name: ci-runner-ssh
      subjects: [ci-runner]
      targets: [box]
      credential: app
      logins: [root]
      session_limit: 8h
      on_token_expiry: close
    - name: ci-runner-all
      subjects: [ci-runner]
      targets: ["*"]
      credential: app
      session_limit: 8h
      on_token_expiry: close
  # The demo policy; docs/configuration.md explains each key.
  guardrails:
    - name: no-destructive
      subjects: ["*"]
      deny:
        commands: [DROP, TRUNCATE]
        shapes: [delete_without_where, update_without_where]
        writes: [canary]
  masking:
    strict: true        # refuse lower(email), where ssn like ..., row_to_json(c), ...
    rules:
      - name: customer-pii
        subjects: ["*"]
        columns: [public.customers.email, public.customers.ssn]
        strategy: redact
      - name: customer-cards
        subjects: ["*"]
        columns: [public.customers.card_number]
        strategy: {keep_last: 4}
      - name: detected
        subjects: ["*"]
        detect: [email, card_number, iban]
        strategy: redact
  approvals:
    - name: customer-deletes
      mode: hold
      subjects: ["*"]
      approvers: [dba]
      quorum: 1
      timeout: 10m
      when:
        commands: [DELETE]
        writes: [customers]
EOF
}

# twistd logs to demo/hoopgate.log; what it prints before logging starts
# (a configuration error, a traceback) goes to demo/twistd.out.
start_gateway() {
  rm -f "$DEMO/hoopgate.log" "$DEMO/twistd.out"
  "$VENV/bin/twistd" -n --pidfile= -l "$DEMO/hoopgate.log" \
    hoopgate --config "$DEMO/hoopgate.yaml" \
    < /dev/null > "$DEMO/twistd.out" 2>&1 &
  echo $! > "$GATEWAY_PIDFILE"
}

show_gateway_output() {
  local f
  for f in "$DEMO/twistd.out" "$DEMO/hoopgate.log"; do
    [ -s "$f" ] || continue
    echo "----- last lines of ${f#"$ROOT"/} -----" >&2
    tail -n 40 "$f" >&2
  done
}

# Up to 30 s for the admin listener (GET /healthz = 200) and the PostgreSQL
# listener; fails at once if the gateway exits.
wait_gateway() {
  local pid n=0
  pid=$(cat "$GATEWAY_PIDFILE")
  until healthz_ok && tcp_open "$GW_PG_PORT" && tcp_open "$GW_SSH_PORT"; do
    if ! alive "$pid"; then
      echo "demo: hoopgate exited during start-up" >&2
      show_gateway_output
      return 1
    fi
    n=$((n + 1))
    if [ $n -gt 300 ]; then
      echo "demo: hoopgate did not answer within 30 s" >&2
      show_gateway_output
      return 1
    fi
    sleep 0.1
  done
}

# The SSH listener's CA, kept across runs (demo/ is ignored by git).
make_ssh_ca() {
  [ -f "$DEMO/ssh_ca" ] || ssh-keygen -q -t ed25519 -N '' -C hoopgate-demo-ca -f "$DEMO/ssh_ca"
  chmod 600 "$DEMO/ssh_ca"
}

write_demo_env() {
  local mint token direct
  mint="$PY $ROOT/tests/oidc/mint.py --issuer $OIDC_ISSUER"
  token=$($mint --sub ci-runner --ttl "$TOKEN_TTL")
  direct="postgresql://app:$APP_PASSWORD@127.0.0.1:$PG_PORT/appdb"
  direct="$direct?sslmode=verify-full&sslrootcert=$TLS_CERT"
  (
    umask 077   # it holds a token and a database password
    {
      printf '%s=%q\n' HOOPGATE_DEMO_TOKEN "$token"
      printf '%s=%q\n' HOOPGATE_MINT "$mint"
      printf '%s=%q\n' HOOPGATE_RECORDINGS "$DEMO/recordings"
      printf '%s=%q\n' HOOPGATE_CONFIG "$DEMO/hoopgate.yaml"
      printf '%s=%q\n' HOOPGATE_ADMIN_URL "$ADMIN_URL"
      printf '%s=%q\n' HOOPGATE_PG_URL "postgresql://ci-runner@127.0.0.1:$GW_PG_PORT/appdb"
      printf '%s=%q\n' HOOPGATE_PG_DIRECT_URL "$direct"
      printf '%s=%q\n' HOOPGATE_APPROVERS "alice bob"
      printf '%s=%q\n' HOOPGATE_APPROVER_PASSWORD "$LDAP_USER_PASSWORD"
      printf '%s=%q\n' HOOPGATE_MAILDIR "$SMTP_MAILDIR"
      printf '%s=%q\n' HOOPGATE_LDAP_URL "$LDAP_URL"
      printf '%s=%q\n' HOOPGATE_SSH_HOST 127.0.0.1
      printf '%s=%q\n' HOOPGATE_SSH_PORT "$GW_SSH_PORT"
      printf '%s=%q\n' HOOPGATE_SSH_USER box
      printf '%s=%q\n' HOOPGATE_SSH_CERT_CMD "$VENV/bin/hoopgate --config $DEMO/hoopgate.yaml ssh-cert --token-env HOOPGATE_DEMO_TOKEN --public-key"
      printf '%s=%q\n' HOOPGATE_SSH_DIRECT_HOST "$SSH_HOST"
      printf '%s=%q\n' HOOPGATE_SSH_DIRECT_PORT "$SSH_PORT"
      printf '%s=%q\n' HOOPGATE_SSH_DIRECT_USER "$SSH_USER"
      printf '%s=%q\n' HOOPGATE_SSH_DIRECT_KEY "$SSH_CLIENT_KEY"
    } > "$DEMO/env.tmp"
  )
  mv "$DEMO/env.tmp" "$DEMO/env"
  printf '[127.0.0.1]:%s %s\n' "$GW_SSH_PORT" "$(cut -d' ' -f1,2 "$DEMO/ssh_host_ed25519.pub")" \
    > "$DEMO/ssh_known_hosts"
}

print_usage() {
  cat <<'EOF'

hoopgate demo is running. In another shell, from the repository root:

  set -a; . demo/env; set +a
  PGPASSWORD=$HOOPGATE_DEMO_TOKEN psql "$HOOPGATE_PG_URL" -c 'select count(*) from customers'
  PGPASSWORD=$HOOPGATE_DEMO_TOKEN psql "$HOOPGATE_PG_URL" -c 'select id, name, email, ssn, card_number from customers limit 5'
  psql "$HOOPGATE_PG_DIRECT_URL" -c 'select id, name, email, ssn, card_number from customers limit 5'   # direct: clear values
  PGPASSWORD=$HOOPGATE_DEMO_TOKEN psql "$HOOPGATE_PG_URL" -c 'select lower(email) from customers'   # refused: strict masking
  PGPASSWORD=$HOOPGATE_DEMO_TOKEN psql "$HOOPGATE_PG_URL" -c 'drop table canary'                    # refused: guardrail
  PGPASSWORD=$($HOOPGATE_MINT --sub ci-runner --ttl 600) psql "$HOOPGATE_PG_URL"    # a fresh 10-minute token
  PGPASSWORD=$($HOOPGATE_MINT --sub ci-runner --ttl 0) psql "$HOOPGATE_PG_URL"      # expired: refused
  PGPASSWORD=$($HOOPGATE_MINT --sub mallory --ttl 600) psql "$HOOPGATE_PG_URL"      # no access rule: refused
  psql "$HOOPGATE_PG_DIRECT_URL" -c 'select count(*) from customers'                # direct, bypassing hoopgate
  curl -s "$HOOPGATE_ADMIN_URL/healthz"

Just-in-time approval (a DELETE on customers waits for one of $HOOPGATE_APPROVERS):
  PGPASSWORD=$HOOPGATE_DEMO_TOKEN psql "$HOOPGATE_PG_URL" -c 'delete from customers where id = 7'   # held
  ls "$HOOPGATE_MAILDIR/new"          # one mail per approver, each with their own link (open it, sign in as alice)
  .venv/bin/hoopgate -c "$HOOPGATE_CONFIG" approvals list
  .venv/bin/hoopgate -c "$HOOPGATE_CONFIG" approvals approve REQUEST --user alice --reason 'ticket 7'  # or deny
  # the approver password is $HOOPGATE_APPROVER_PASSWORD (directory $HOOPGATE_LDAP_URL)

SSH: a 10-minute certificate from the gateway's CA for your key, then stock OpenSSH:
  [ -f demo/id_demo ] || ssh-keygen -q -t ed25519 -N '' -f demo/id_demo; $HOOPGATE_SSH_CERT_CMD demo/id_demo.pub
  ssh -i demo/id_demo -o CertificateFile=demo/id_demo-cert.pub -o UserKnownHostsFile=demo/ssh_known_hosts -p "$HOOPGATE_SSH_PORT" -l "$HOOPGATE_SSH_USER" "$HOOPGATE_SSH_HOST" 'id -un; hostname'
  ssh -i "$HOOPGATE_SSH_DIRECT_KEY" -o UserKnownHostsFile=demo/run/ssh/known_hosts -p "$HOOPGATE_SSH_DIRECT_PORT" -l "$HOOPGATE_SSH_DIRECT_USER" "$HOOPGATE_SSH_DIRECT_HOST" id -un   # direct

Gateway log: demo/hoopgate.log   recordings: demo/recordings/   config: demo/hoopgate.yaml
Press Ctrl-C to stop everything.
EOF
}

main() {
  [ -x "$PY" ] || die "no virtualenv at $VENV; run: make setup (or make demo)"
  mkdir -p "$DEMO"
  unset HG_RUN         # ours is made fresh below; never stop someone else's
  refuse_second_demo
  trap cleanup EXIT
  trap 'exit 0' INT TERM    # Ctrl-C is how a demo ends: not a failure

  start_servers
  write_config
  start_gateway
  wait_gateway
  write_demo_env
  print_usage

  # Wait for the gateway; Ctrl-C interrupts `wait` and exits through cleanup.
  local pid status=0
  pid=$(cat "$GATEWAY_PIDFILE")
  wait "$pid" || status=$?
  echo "demo: hoopgate exited (status $status); see demo/hoopgate.log" >&2
  exit 1
}

main "$@"
