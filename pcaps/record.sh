#!/usr/bin/env bash
# Records the real-traffic fixtures of flowwarden: pcaps/<scenario>/capture.pcap + cluster.json.
#
# Each scenario builds a throw-away "node" network namespace holding a bridge (cni0,
# 10.244.1.1/24 and fd00:10:244:1::1/64) and one network namespace per pod, wired to the
# bridge with a veth pair, at the pod IPs that pcaps/cluster.py gives (the one source of
# truth, so cluster.json and the capture agree). Real programs (curl, python3 -m
# http.server, redis, dnsmasq + dig, openssl, nginx, postgresql) talk between the pods
# while tcpdump captures on the bridge inside the node namespace. The host's own network
# is never touched: every address lives inside namespaces this script creates, and the
# EXIT trap kills the processes it started (by pid) and deletes those namespaces.
#
# Usage (root): pcaps/record.sh [SCENARIO ...]     (default: all scenarios)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ALL_SCENARIOS=(http-allowed-and-denied redis-plaintext dns tls-versions postgres-ssl ipv6-cooked mail-starttls)
PREFIX=fwrec
NODE=$PREFIX-node
GW4=10.244.1.1
GW6=fd00:10:244:1::1

log() { printf '[record] %s\n' "$*" >&2; }
die() { log "error: $*"; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (network namespaces): sudo $0"

install_deps() {
    local missing=() cmd pkg
    # command:package; dnsmasq-base is the daemon without its system service.
    for pair in ip:iproute2 ss:iproute2 tcpdump:tcpdump curl:curl redis-server:redis-server \
                redis-cli:redis-tools dnsmasq:dnsmasq-base dig:dnsutils openssl:openssl \
                nginx:nginx-light psql:postgresql setpriv:util-linux python3:python3 \
                dovecot:dovecot-imapd doveadm:dovecot-pop3d vsftpd:vsftpd prosody:prosody \
                slapd:slapd ldapsearch:ldap-utils exim4:exim4-daemon-light; do
        cmd=${pair%%:*}; pkg=${pair#*:}
        if ! command -v "$cmd" >/dev/null 2>&1 && ! [[ -x /usr/sbin/$cmd ]]; then
            missing+=("$pkg")
        fi
    done
    if ! compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; then missing+=(postgresql); fi
    if ((${#missing[@]})); then
        log "installing: ${missing[*]}"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
}

# --- bookkeeping: everything we start is undone on exit -----------------------------

TMP=""
NETNS=()   # namespaces we created
PIDS=()    # processes we started

cleanup() {
    local rc=$? pid ns
    trap - EXIT INT TERM
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NETNS[@]}"; do del_netns "$ns"; done
    ((ETC_NETNS_MADE)) && rmdir /etc/netns 2>/dev/null
    NETNS=(); PIDS=()
    [[ -n $TMP && -d $TMP && -z ${KEEP_TMP:-} ]] && rm -rf "$TMP"
    exit "$rc"
}

teardown_scenario() {
    local pid ns
    for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    for ns in "${NETNS[@]}"; do del_netns "$ns"; done
    NETNS=(); PIDS=()
}

# start_bg NETNS LOGNAME CMD...: start CMD inside NETNS in the background, remember its pid.
start_bg() {
    local ns=$1 name=$2; shift 2
    ip netns exec "$ns" "$@" >"$TMP/$name.log" 2>&1 &
    PIDS+=($!)
}

# inpod POD CMD...: run CMD in pod POD's namespace.
inpod() { local ns=$PREFIX-$1; shift; ip netns exec "$ns" "$@"; }

wait_until() {  # wait_until SECONDS CMD...: poll CMD every 0.1 s
    local deadline=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>>"$TMP/wait.log"; do
        ((SECONDS < deadline)) || { [[ -n ${DEBUG:-} ]] && { ps -ef --forest >&2; for n in "${NETNS[@]}"; do ip netns exec "$n" ss -ltnup >&2; done; }; die "timed out waiting for: $*"; }
        sleep 0.1
    done
}

listening() {  # listening POD tcp|udp PORT
    local flag=-ltn; [[ $2 == udp ]] && flag=-lun
    inpod "$1" ss -H "$flag" "sport = :$3" | grep -q .
}

stop_pid() {  # stop_pid PID [SIGNAL]: stop one process we started and reap it
    kill "-${2:-TERM}" "$1" 2>/dev/null || true
    wait "$1" 2>/dev/null || true
}

# --- topology -------------------------------------------------------------------------

declare -A POD_IP4=() POD_IP6=()

# add_netns NAME: a namespace whose resolver (via ip-netns' /etc/netns/NAME bind mount)
# points at its own loopback: lookups such as http.server's getfqdn() fail at once instead
# of sending queries through the bridge to the host's resolver.
ETC_NETNS_MADE=0
add_netns() {
    ip netns add "$1"; NETNS+=("$1")
    if [[ ! -d /etc/netns ]]; then mkdir /etc/netns; ETC_NETNS_MADE=1; fi
    mkdir -p "/etc/netns/$1"
    printf 'nameserver 127.0.0.1\noptions timeout:1 attempts:1\n' >"/etc/netns/$1/resolv.conf"
    ip -n "$1" link set lo up
}

del_netns() {
    local pid
    # Children our programs forked (dnsmasq TCP workers, nginx/postgres workers).
    for pid in $(ip netns pids "$1" 2>/dev/null); do kill -KILL "$pid" 2>/dev/null || true; done
    ip netns del "$1" 2>/dev/null || true
    rm -rf "/etc/netns/$1"
}

# make_node IPV6: the node namespace with its bridge. IPv6 stays off unless asked,
# so IPv4 captures carry no router solicitations or MLD reports.
make_node() {
    add_netns "$NODE"
    ip netns exec "$NODE" sysctl -qw net.ipv6.conf.all.disable_ipv6=$((1 - $1)) \
        net.ipv6.conf.default.disable_ipv6=$((1 - $1)) net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.accept_dad=0
    # Forwarding stays off: packets for other nodes' pods (10.244.2.0/24) are dropped silently.
    ip -n "$NODE" link add cni0 address 02:42:0a:f4:01:01 type bridge
    ip -n "$NODE" addr add $GW4/24 dev cni0
    (($1)) && ip -n "$NODE" addr add $GW6/64 dev cni0 nodad
    ip -n "$NODE" link set cni0 up
}

# make_pod APP IPV4 IPV6|-: a pod namespace wired to cni0 (MAC derived from the IPv4).
make_pod() {
    local app=$1 v4=$2 v6=$3 ns=$PREFIX-$1 idx=$((${#NETNS[@]}))
    local last=${v4##*.} mac
    mac=$(printf '02:42:0a:f4:01:%02x' "$last")
    add_netns "$ns"
    local v6on=0; [[ $v6 != - ]] && v6on=1
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=$((1 - v6on)) \
        net.ipv6.conf.default.disable_ipv6=$((1 - v6on)) net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.accept_dad=0
    ip -n "$NODE" link add "fwv$idx" address "02:42:ac:12:00:$(printf %02x "$idx")" type veth \
        peer name eth0 address "$mac" netns "$ns"
    ip -n "$NODE" link set "fwv$idx" master cni0 up
    ip -n "$ns" addr add "$v4/24" dev eth0
    ip -n "$ns" link set eth0 up
    ip -n "$ns" route add default via $GW4
    if ((v6on)); then
        ip -n "$ns" addr add "$v6/64" dev eth0 nodad
        ip -n "$ns" -6 route add default via $GW6
    fi
    POD_IP4[$app]=$v4; POD_IP6[$app]=$v6
}

# setup SCENARIO IPV6: node + every node-1 pod of the scenario; writes cluster.json.
setup() {
    local app kns v4 v6
    mkdir -p "$HERE/$1"
    POD_IP4=(); POD_IP6=()
    make_node "$2"
    while read -r app kns v4 v6; do
        make_pod "$app" "$v4" "$v6"
    done < <(python3 "$HERE/cluster.py" pods "$1")
    python3 "$HERE/cluster.py" json "$1" >"$HERE/$1/cluster.json"
}

# capture_start SCENARIO [NETNS IFACE LINKTYPE]: tcpdump -s 0, waits until it listens.
CAP_PID=""
capture_start() {
    local out=$HERE/$1/capture.pcap ns=${2:-$NODE} ifc=${3:-cni0} lt=()
    [[ -n ${4:-} ]] && lt=(-y "$4")
    rm -f "$out"
    ip netns exec "$ns" tcpdump -i "$ifc" "${lt[@]}" -s 0 -U --immediate-mode -n -w "$out" 2>"$TMP/tcpdump.log" &
    CAP_PID=$!; PIDS+=("$CAP_PID")
    wait_until 10 grep -q 'listening on' "$TMP/tcpdump.log"
    sleep 0.3
}

capture_stop() {
    sleep 0.5  # let the last FIN/ACKs land
    stop_pid "$CAP_PID" INT
    grep -E 'captured|dropped' "$TMP/tcpdump.log" | sed 's/^/[tcpdump] /' >&2 || true
}

# --- scenarios ------------------------------------------------------------------------

scenario_http_allowed_and_denied() {
    setup http-allowed-and-denied 0
    local api=${POD_IP4[api]}
    mkdir -p "$TMP/www"; printf 'hello from api\n' >"$TMP/www/index.html"
    start_bg $PREFIX-api http-server python3 -m http.server 8080 --bind "$api" --directory "$TMP/www"
    local server=$!
    wait_until 10 listening api tcp 8080
    capture_start http-allowed-and-denied
    # Allowed by api/api-allow-frontend: two connections from web/frontend.
    inpod frontend curl -sS -o /dev/null "http://$api:8080/"
    inpod frontend curl -sS -o /dev/null "http://$api:8080/healthz" || true  # 404 is fine
    # Denied by the policy, yet it connects: nothing enforces it here.
    inpod batch-job curl -sS -o /dev/null "http://$api:8080/"
    # Nobody listens on 9090: SYN answered by RST.
    inpod frontend curl -sS -o /dev/null "http://$api:9090/" || true
    # api's replica on node-2 is unreachable from node-1: SYNs without answer.
    inpod frontend curl -sS -o /dev/null --connect-timeout 2 "http://10.244.2.50:8080/" || true
    capture_stop
    stop_pid "$server"
    teardown_scenario
}

scenario_redis_plaintext() {
    setup redis-plaintext 0
    local redis=${POD_IP4[redis]}
    start_bg $PREFIX-redis redis-server redis-server --bind "$redis" --port 6379 --save '' \
        --appendonly no --protected-mode no --daemonize no --dir "$TMP"
    local server=$!
    wait_until 10 listening redis tcp 6379
    capture_start redis-plaintext
    inpod checkout redis-cli -h "$redis" -p 6379 PING
    # Commands as arguments: fed on stdin, redis-cli would first fetch COMMAND DOCS (~170 KB).
    inpod checkout redis-cli -h "$redis" -p 6379 SET cart:42 "2x espresso"
    inpod checkout redis-cli -h "$redis" -p 6379 GET cart:42
    capture_stop
    stop_pid "$server"
    teardown_scenario
}

scenario_dns() {
    setup dns 0
    local dnsd=${POD_IP4[kube-dns]}
    start_bg $PREFIX-kube-dns dnsmasq dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address="$dnsd" --port=53 --pid-file= --user=root \
        --local=/cluster.local/ \
        --host-record=api.api.svc.cluster.local,10.96.120.20 \
        --host-record=redis.data.svc.cluster.local,10.96.64.41 \
        --host-record=kube-dns.kube-system.svc.cluster.local,10.96.0.10 \
        --log-queries --log-facility=-
    local server=$!
    wait_until 10 listening kube-dns udp 53
    wait_until 10 listening kube-dns tcp 53
    capture_start dns
    local q=(+tries=1 +time=2 +nocookie +short)
    inpod resolver-test dig "${q[@]}" @"$dnsd" api.api.svc.cluster.local A
    inpod resolver-test dig "${q[@]}" @"$dnsd" api.api.svc.cluster.local AAAA
    inpod resolver-test dig "${q[@]}" @"$dnsd" nosuch.default.svc.cluster.local A
    # The one TCP query: egress-dns-udp-only allows UDP 53 only.
    inpod resolver-test dig "${q[@]}" +tcp @"$dnsd" redis.data.svc.cluster.local A
    capture_stop
    stop_pid "$server"
    teardown_scenario
}

scenario_tls_versions() {
    setup tls-versions 0
    local legacy=${POD_IP4[legacy-tls]} web=${POD_IP4[web]} pids=() i v
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/tls.key" -out "$TMP/tls.crt" -days 30 \
        -subj "/CN=web.secure.svc" \
        -addext "subjectAltName=DNS:web.secure.svc,DNS:legacy-tls.secure.svc" 2>/dev/null
    local sec0=(-cipher 'DEFAULT:@SECLEVEL=0')
    local flags=(-tls1 -tls1_1 -tls1_2 -tls1_3)
    for i in 0 1 2 3; do
        v=${flags[$i]}
        start_bg $PREFIX-legacy-tls "s_server$i" openssl s_server -accept "$legacy:441$i" -naccept 1 -quiet \
            -cert "$TMP/tls.crt" -key "$TMP/tls.key" "$v" "${sec0[@]}"
        pids+=($!)
    done
    mkdir -p "$TMP/nginx"
    cat >"$TMP/nginx/nginx.conf" <<EOF
daemon off;
worker_processes 1;
pid $TMP/nginx/nginx.pid;
error_log $TMP/nginx/error.log;
events { worker_connections 64; }
http {
    access_log $TMP/nginx/access.log;
    client_body_temp_path $TMP/nginx/body;
    server {
        listen $web:80;
        listen $web:443 ssl http2;
        server_name web.secure.svc;
        ssl_certificate $TMP/tls.crt;
        ssl_certificate_key $TMP/tls.key;
        ssl_protocols TLSv1.2 TLSv1.3;
        location / { default_type text/plain; return 200 "hello from web\n"; }
    }
}
EOF
    start_bg $PREFIX-web nginx nginx -p "$TMP/nginx" -e "$TMP/nginx/error.log" -c "$TMP/nginx/nginx.conf"
    local nginx=$!
    for i in 0 1 2 3; do wait_until 10 listening legacy-tls tcp "441$i"; done
    wait_until 10 listening web tcp 443
    capture_start tls-versions
    for i in 0 1 2 3; do
        v=${flags[$i]}
        echo "ping $v" | inpod probe timeout 10 openssl s_client -connect "$legacy:441$i" \
            -servername legacy-tls.secure.svc "$v" "${sec0[@]}" >"$TMP/s_client$i.log" 2>&1 \
            || log "s_client $v failed: $(tail -3 "$TMP/s_client$i.log")"
        grep -E '^New, ' "$TMP/s_client$i.log" | head -1 >&2 || true
    done
    # nginx: ALPN h2 over TLS 1.3, then ALPN http/1.1 pinned to TLS 1.2, then plaintext port 80.
    local res=(--resolve "web.secure.svc:443:$web")
    inpod probe curl -sS -k -o /dev/null -w 'curl %{http_version} %{http_code}\n' "${res[@]}" \
        https://web.secure.svc/
    inpod probe curl -sS -k -o /dev/null -w 'curl %{http_version} %{http_code}\n' "${res[@]}" \
        --http1.1 --tlsv1.2 --tls-max 1.2 https://web.secure.svc/
    inpod probe curl -sS -o /dev/null -w 'curl %{http_version} %{http_code} (plaintext)\n' \
        "http://$web/"
    capture_stop
    for i in "${pids[@]}"; do stop_pid "$i"; done
    stop_pid "$nginx" QUIT
    teardown_scenario
}

scenario_postgres_ssl() {
    setup postgres-ssl 0
    local pg=${POD_IP4[postgres]} bin
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    local pgdir=$TMP/pg
    mkdir -p "$pgdir"; chmod 755 "$TMP"; chown postgres:postgres "$pgdir"
    local as_pg=(setpriv --reuid=postgres --regid=postgres --init-groups)
    "${as_pg[@]}" "$bin/initdb" -D "$pgdir/data" -U postgres --auth=trust -E UTF8 \
        --no-instructions >"$TMP/initdb.log" 2>&1
    echo "host all all 10.244.1.0/24 trust" >>"$pgdir/data/pg_hba.conf"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$pgdir/server.key" -out "$pgdir/server.crt" \
        -days 30 -subj "/CN=postgres.db.svc" 2>/dev/null
    chown postgres:postgres "$pgdir/server.key" "$pgdir/server.crt"; chmod 600 "$pgdir/server.key"
    start_bg $PREFIX-postgres postgres "${as_pg[@]}" "$bin/postgres" -D "$pgdir/data" \
        -c listen_addresses="$pg" -c unix_socket_directories="$pgdir" -c ssl=on \
        -c ssl_cert_file="$pgdir/server.crt" -c ssl_key_file="$pgdir/server.key" \
        -c shared_buffers=16MB -c max_connections=10
    local server=$!
    wait_until 20 listening postgres tcp 5432
    capture_start postgres-ssl
    local conn="host=$pg port=5432 user=postgres dbname=postgres gssencmode=disable"
    inpod invoicer psql -X -A -t "$conn sslmode=require" \
        -c "select 'ssl=' || ssl || ' ' || version from pg_stat_ssl where pid = pg_backend_pid()"
    inpod invoicer psql -X -A -t "$conn sslmode=disable" \
        -c "select 'ssl=' || ssl from pg_stat_ssl where pid = pg_backend_pid()"
    capture_stop
    stop_pid "$server" INT
    teardown_scenario
}

scenario_ipv6_cooked() {
    setup ipv6-cooked 1
    local srv6=${POD_IP6[server]} srv4=${POD_IP4[server]} lt=LINUX_SLL
    mkdir -p "$TMP/www"; printf 'hello over IPv6\n' >"$TMP/www/index.html"
    start_bg $PREFIX-server http-server python3 -m http.server 8080 --bind :: --directory "$TMP/www"
    local server=$!
    wait_until 10 listening server tcp 8080
    # Cooked capture on "any" inside the client pod: one copy of each packet (in the node
    # namespace "any" would see every packet on both veths and the bridge).
    if [[ $(inpod client tcpdump -i any -L 2>&1) == *LINUX_SLL2* ]]; then lt=LINUX_SLL2; fi
    capture_start ipv6-cooked $PREFIX-client any "$lt"
    inpod client curl -sS -o /dev/null -w 'curl %{remote_ip} %{http_code}\n' -g "http://[$srv6]:8080/"
    inpod client curl -sS -o /dev/null -w 'curl %{remote_ip} %{http_code}\n' "http://$srv4:8080/"
    capture_stop
    stop_pid "$server"
    teardown_scenario
}

scenario_mail_starttls() {
    setup mail-starttls 0
    local imap=${POD_IP4[dovecot]} ftp=${POD_IP4[vsftpd]} d=$TMP/dovecot f=$TMP/vsftpd
    mkdir -p "$d/run" "$d/mail" "$f/pub" "$f/empty"
    chmod 755 "$TMP"
    openssl req -x509 -newkey rsa:2048 -nodes -keyout "$TMP/key.pem" -out "$TMP/cert.pem" -days 30 \
        -subj "/CN=mail.svc" 2>/dev/null
    echo "alice:{PLAIN}wonderland" >"$d/users"
    chown -R dovecot:dovecot "$d/mail"
    printf '%s\n' "protocols = imap pop3" "listen = $imap" "base_dir = $d/run" "log_path = $d/dovecot.log" \
        "ssl = yes" "ssl_cert = <$TMP/cert.pem" "ssl_key = <$TMP/key.pem" "disable_plaintext_auth = no" \
        "auth_mechanisms = plain login" "first_valid_uid = 1" "mail_location = maildir:$d/mail/%u" \
        "passdb {" "  driver = passwd-file" "  args = $d/users" "}" \
        "userdb {" "  driver = static" "  args = uid=dovecot gid=dovecot home=$d/mail/%u" "}" >"$d/dovecot.conf"
    start_bg $PREFIX-dovecot dovecot dovecot -F -c "$d/dovecot.conf"
    local dovecot=$!
    printf 'hello over FTP\n' >"$f/pub/hello.txt"
    printf '%s\n' listen=YES "listen_address=$ftp" background=NO anonymous_enable=YES "anon_root=$f/pub" \
        no_anon_password=YES local_enable=NO write_enable=NO pasv_min_port=21100 pasv_max_port=21110 \
        "secure_chroot_dir=$f/empty" seccomp_sandbox=NO ssl_enable=YES allow_anon_ssl=YES \
        force_anon_logins_ssl=NO force_anon_data_ssl=NO require_ssl_reuse=NO "rsa_cert_file=$TMP/cert.pem" \
        "rsa_private_key_file=$TMP/key.pem" "vsftpd_log_file=$f/vsftpd.log" >"$f/vsftpd.conf"
    start_bg $PREFIX-vsftpd vsftpd vsftpd "$f/vsftpd.conf"
    local vsftpd=$!
    local xmpp=${POD_IP4[prosody]} x=$TMP/prosody
    mkdir -p "$x/data"; chmod 644 "$TMP/key.pem"; chown -R prosody "$x"
    printf '%s\n' 'daemonize = false' "pidfile = \"$x/prosody.pid\"" "data_path = \"$x/data\"" \
        "interfaces = { \"$xmpp\" }" 'c2s_ports = { 5222 }' 'modules_disabled = { "s2s" }' \
        "log = { info = \"$x/prosody.log\" }" 'modules_enabled = { "saslauth"; "tls"; "disco"; "ping" }' \
        'c2s_require_encryption = true' 'authentication = "internal_plain"' \
        'VirtualHost "chat.example"' "  ssl = { certificate = \"$TMP/cert.pem\"; key = \"$TMP/key.pem\" }" \
        >"$x/prosody.cfg.lua"
    start_bg $PREFIX-prosody prosody setpriv --reuid=prosody --regid=prosody --init-groups \
        prosody --config "$x/prosody.cfg.lua"
    local prosody=$!
    wait_until 15 listening prosody tcp 5222
    local ldap=${POD_IP4[openldap]} l=$TMP/slapd
    mkdir -p "$l/db"
    printf '%s\n' 'include /etc/ldap/schema/core.schema' 'modulepath /usr/lib/ldap' 'moduleload back_mdb' \
        "pidfile $l/slapd.pid" "TLSCertificateFile $TMP/cert.pem" "TLSCertificateKeyFile $TMP/key.pem" \
        'database mdb' 'suffix "dc=example,dc=org"' 'rootdn "cn=admin,dc=example,dc=org"' 'rootpw secret' \
        "directory $l/db" >"$l/slapd.conf"
    start_bg $PREFIX-openldap slapd slapd -d 0 -h "ldap://$ldap/" -f "$l/slapd.conf"
    local slapd=$!
    wait_until 10 listening openldap tcp 389
    local smtp=${POD_IP4[exim]} e=$TMP/exim
    mkdir -p "$e/spool"; chown -R Debian-exim "$e"
    printf '%s\n' 'primary_hostname = mail.svc' 'daemon_smtp_ports = 25' "local_interfaces = $smtp" \
        'tls_advertise_hosts = *' "tls_certificate = $TMP/cert.pem" "tls_privatekey = $TMP/key.pem" \
        "spool_directory = $e/spool" "log_file_path = $e/%slog" 'acl_smtp_rcpt = accept' \
        'begin routers' 'discard:' '  driver = redirect' '  data = :blackhole:' >"$e/exim.conf"
    start_bg $PREFIX-exim exim exim4 -bdf -C "$e/exim.conf"
    local exim=$!
    wait_until 10 listening exim tcp 25
    wait_until 10 listening dovecot tcp 143
    wait_until 10 listening dovecot tcp 110
    wait_until 10 listening vsftpd tcp 21
    capture_start mail-starttls
    # curl asks for the capabilities first and upgrades after the answer, as mail clients do.
    printf 'Subject: hello\r\n\r\nover STARTTLS\r\n' >"$TMP/mail.txt"
    inpod mailer curl -sS -k --ssl-reqd --mail-from a@office.example --mail-rcpt b@mail.example \
        -T "$TMP/mail.txt" "smtp://$smtp/office.example"                       # EHLO, STARTTLS
    inpod mailer curl -sS -k --ssl-reqd -u alice:wonderland "imap://$imap/"   # CAPABILITY, STARTTLS
    inpod mailer curl -sS -k --ssl-reqd -u alice:wonderland "pop3://$imap/"   # CAPA, STLS
    inpod mailer curl -sS -u alice:wonderland "imap://$imap/"                  # LOGIN in plaintext
    inpod mailer curl -sS -k --ssl-reqd --ftp-pasv "ftp://$ftp/hello.txt"     # AUTH TLS, PROT P
    inpod mailer curl -sS --ftp-pasv "ftp://$ftp/hello.txt"                    # plaintext, data too
    # XMPP: stream header, <stream:features> with <starttls/>, <starttls/>, <proceed/>, then TLS.
    inpod mailer openssl s_client -starttls xmpp -xmpphost chat.example -connect "$xmpp:5222" \
        </dev/null 2>&1 | grep -E '^(CONNECTED|New,|Protocol)' || true
    # LDAP: the StartTLS extended request (RFC 4511 §4.14), then the search over TLS; and one without.
    inpod mailer env LDAPTLS_REQCERT=never ldapsearch -x -ZZ -LLL -H "ldap://$ldap/" -b "" -s base namingContexts
    inpod mailer ldapsearch -x -LLL -H "ldap://$ldap/" -b "" -s base namingContexts
    capture_stop
    stop_pid "$exim"
    stop_pid "$slapd"
    stop_pid "$prosody"
    stop_pid "$vsftpd"
    stop_pid "$dovecot"
    teardown_scenario
}

summary() {
    local s
    printf '\n%-26s %8s %8s  %s\n' scenario packets bytes linktype
    for s in "$@"; do
        local f=$HERE/$s/capture.pcap
        [[ -f $f ]] || { printf '%-26s missing\n' "$s"; continue; }
        printf '%-26s %8s %8s  %s\n' "$s" "$(tcpdump -r "$f" -n 2>/dev/null | wc -l)" \
            "$(stat -c %s "$f")" "$(tcpdump -r "$f" -c 1 2>&1 >/dev/null | sed -n 's/.*link-type //p')"
    done
}

main() {
    local scenarios=("$@") s
    ((${#scenarios[@]})) || scenarios=("${ALL_SCENARIOS[@]}")
    for s in "${scenarios[@]}"; do
        [[ " ${ALL_SCENARIOS[*]} " == *" $s "* ]] || die "unknown scenario $s (${ALL_SCENARIOS[*]})"
    done
    install_deps
    for s in "${scenarios[@]}"; do
        ip netns list | grep -q "^$PREFIX-" && die "stale $PREFIX-* namespaces exist; delete them first"
        log "== $s"
        "scenario_${s//-/_}"
    done
    summary "${scenarios[@]}"
}

TMP=$(mktemp -d /tmp/fwrec.XXXXXX)
trap cleanup EXIT
trap 'exit 130' INT TERM
main "$@"
