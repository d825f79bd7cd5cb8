#!/usr/bin/env bash
# TLS inspection side by side (issue 14): cardfw terminating TLS for an `inspect` rule against
# squid (Debian squid-openssl) with `ssl_bump bump`, both intercepting transparently, same
# nginx origin, same run.
#
#   sudo bash bench/inspectbench.sh     (after `cargo build --release -p cardfw`)
#
# Knobs (env): CARDFW=path/to/cardfw DURATION=10s RUNS=3 WARMUP=2s BENCH_DIR=/tmp/inspectbench
#               PROXIES="squid cardfw" (one of them alone, to check a setup)
#               CARDFW_LOG=debug (cardfw's RUST_LOG; warn by default)  DNS_LOG=1 (dnsmasq queries)
#
# Network namespaces (all made here, all named ibench-*, all deleted at exit):
#
#   ibench-cli ──usb0── ibench-card (cardfw, TPROXY, ip_forward=0) ──k1──┐
#        │                                                              ibench-origin (nginx :443,
#        └────s0──── ibench-squid (squid, nft redirect :443)  ─────s1───┘  203.0.113.50 and .51)
#
# The client reaches card.bench (203.0.113.50) only through cardfw and squid.bench (.51) only
# through squid: one nginx, one certificate (SAN both names, from a test CA both proxies
# trust), resolved for both proxies by one dnsmasq beside the origin. The proxies mint their
# own leaves; wrk and h2load do not check certificates, the verify step (curl) does, against
# each proxy's CA. Every packet stays in these namespaces.
# Processes are stopped by PID, namespaces by name.
set -euo pipefail

BASE=${BENCH_DIR:-${TMPDIR:-/tmp}/inspectbench}
RUN=$BASE/run
DURATION=${DURATION:-10s}
RUNS=${RUNS:-3}
WARMUP=${WARMUP:-2s}
CARDFW=${CARDFW:-$(cd "$(dirname "$0")/.." && pwd)/target/release/cardfw}
read -ra NAMES <<<"${PROXIES:-squid cardfw}"
THREADS=2
C_1K=50
C_NEW=50
C_1M=10
C_H2=50
NS=(ibench-cli ibench-card ibench-squid ibench-origin)
CARD_IP=203.0.113.50
SQUID_IP=203.0.113.51

log() { echo "[$(date +%T)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }
[[ $(id -u) == 0 ]] || die "run as root (namespaces, nftables, apt-get)"
runs() { [[ " ${NAMES[*]} " == *" $1 "* ]]; }
! runs cardfw || [[ -x $CARDFW ]] || die "$CARDFW missing: cargo build --release -p cardfw"

# ---------------------------------------------------------------- install-check
need=()
command -v squid   >/dev/null || need+=(squid-openssl)
command -v nginx   >/dev/null || need+=(nginx)
command -v wrk     >/dev/null || need+=(wrk)
command -v h2load  >/dev/null || need+=(nghttp2-client)
command -v curl    >/dev/null || need+=(curl)
command -v nft     >/dev/null || need+=(nftables)
command -v dnsmasq >/dev/null || need+=(dnsmasq-base)
command -v openssl >/dev/null || need+=(openssl)
if ((${#need[@]})); then
  log "installing: ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
squid -v | grep -q -- '--with-openssl' || die "this squid has no OpenSSL (install squid-openssl)"
CERTGEN=/usr/lib/squid/security_file_certgen
[[ -x $CERTGEN ]] || die "$CERTGEN missing (squid-openssl)"
pkgv() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || echo '?'; }

# -------------------------------------------------------------------- cleanup
declare -A PID
ORDER=()
stop_pid() {
  local pid=$1 i
  [[ -n $pid ]] && kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  log "pid $pid ignored TERM, sending KILL"; kill -KILL "$pid" 2>/dev/null || true
}
cleanup() {
  local i n
  for ((i=${#ORDER[@]}-1; i>=0; i--)); do n=${ORDER[i]}; stop_pid "${PID[$n]}"; done
  for n in "${NS[@]}"; do
    ip netns del "$n" 2>/dev/null || true
    rm -rf "/etc/netns/$n"
  done
}
# Leftovers of an interrupted run: its PIDs (only if they still name our files), its namespaces.
if [[ -d $RUN/pids ]]; then
  for f in "$RUN"/pids/*.pid; do
    [[ -e $f ]] || continue
    pid=$(tr -dc 0-9 <"$f"); [[ -n $pid ]] || continue
    if tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "$RUN"; then
      log "stopping leftover $(basename "$f" .pid) pid $pid"; stop_pid "$pid"
    fi
  done
fi
cleanup
trap cleanup EXIT
trap 'exit 130' INT TERM

# ------------------------------------------------------------------- network
nsx() { local ns=$1; shift; ip netns exec "ibench-$ns" "$@"; }
for n in "${NS[@]}"; do ip netns add "$n"; ip -n "$n" link set lo up; done
veth() { # ns1 if1 addr1 ns2 if2 addr2
  ip link add "$2" netns "ibench-$1" type veth peer name "$5" netns "ibench-$4"
  ip -n "ibench-$1" addr add "$3" dev "$2"; ip -n "ibench-$1" link set "$2" up
  ip -n "ibench-$4" addr add "$6" dev "$5"; ip -n "ibench-$4" link set "$5" up
}
veth cli usb0 10.231.1.2/24 card usb0 10.231.1.1/24
veth cli s0 10.231.2.2/24 squid s0 10.231.2.1/24
veth card k1 10.231.3.1/24 origin o1 10.231.3.2/24
veth squid s1 10.231.4.1/24 origin o2 10.231.4.2/24
ip -n ibench-origin addr add $CARD_IP/32 dev lo
ip -n ibench-origin addr add $SQUID_IP/32 dev lo
ip -n ibench-cli route add $CARD_IP/32 via 10.231.1.1
ip -n ibench-cli route add $SQUID_IP/32 via 10.231.2.1
ip -n ibench-card route add 203.0.113.0/24 via 10.231.3.2
ip -n ibench-squid route add 203.0.113.0/24 via 10.231.4.2
nsx card sysctl -qw net.ipv4.ip_forward=0
nsx squid sysctl -qw net.ipv4.ip_forward=0
mkdir -p /etc/netns/ibench-cli
printf '%s card.bench\n%s squid.bench\n' $CARD_IP $SQUID_IP > /etc/netns/ibench-cli/hosts

# -------------------------------------------------------------------- config
rm -rf "$RUN"
mkdir -p "$RUN"/{www,logs,pids,raw,nginx-tmp,card}
chmod 755 "$BASE" "$RUN" "$RUN/www"
head -c 1024    /dev/urandom > "$RUN/www/1k"
head -c 1048576 /dev/urandom > "$RUN/www/1m"
chmod 644 "$RUN"/www/*

# The origin's CA (trusted by both proxies), its certificate, and squid's bumping CA.
ossl() { openssl "$@" 2>/dev/null; }
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=inspectbench origin CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$RUN/ca.key" -out "$RUN/ca.pem"
ossl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=card.bench \
  -keyout "$RUN/origin.key" -out "$RUN/origin.csr"
printf 'subjectAltName=DNS:card.bench,DNS:squid.bench\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$RUN/origin.ext"
ossl x509 -req -in "$RUN/origin.csr" -CA "$RUN/ca.pem" -CAkey "$RUN/ca.key" -CAcreateserial \
  -days 2 -extfile "$RUN/origin.ext" -out "$RUN/origin.crt"
ossl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
  -subj "/CN=inspectbench squid CA" -addext basicConstraints=critical,CA:TRUE \
  -addext keyUsage=critical,keyCertSign,cRLSign -keyout "$RUN/squid-ca.key" -out "$RUN/squid-ca.pem"
chown proxy:proxy "$RUN/squid-ca.key"

cat > "$RUN/nginx.conf" <<NGX
user www-data;
worker_processes 1;
daemon off;
pid $RUN/nginx.pid;
error_log $RUN/logs/nginx-error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  sendfile on; tcp_nopush on; tcp_nodelay on;
  keepalive_timeout 65s;
  keepalive_requests 1000000;
  default_type application/octet-stream;
  client_body_temp_path $RUN/nginx-tmp/body;
  proxy_temp_path $RUN/nginx-tmp/proxy;
  fastcgi_temp_path $RUN/nginx-tmp/fastcgi;
  uwsgi_temp_path $RUN/nginx-tmp/uwsgi;
  scgi_temp_path $RUN/nginx-tmp/scgi;
  server {
    listen 443 ssl http2; root $RUN/www; location / { }
    ssl_certificate $RUN/origin.crt; ssl_certificate_key $RUN/origin.key;
    ssl_protocols TLSv1.2 TLSv1.3;
    ssl_session_cache shared:bench:10m;
  }
}
NGX

# Requests inside an inspected connection are decided as plain `http` requests: hence `inside`.
cat > "$RUN/rules.txt" <<R
inspected: allow https host card.bench inspect
inside:    allow http host card.bench
default deny
R
cat > "$RUN/cardfw.toml" <<C
rules = "$RUN/rules.txt"
store = "$RUN/card/store"
inside_address = "10.231.1.1"
outside_address = "10.231.3.1"
appliance_address = "10.231.1.2"
link = "usb0"
transparent = true
[dns]
upstream = "10.231.3.2:53"
[inspect]
trusted_cas = "$RUN/ca.pem"
C

# squid: intercepted :443 (nft redirect to 3129), peek at the hello, then bump everything.
mkdir -p "$RUN/squid"; chown proxy:proxy "$RUN/squid"
printf '%s card.bench\n%s squid.bench\n' $CARD_IP $SQUID_IP > "$RUN/bench-hosts"
cat > "$RUN/squid.conf" <<SQ
http_port 127.0.0.1:3128
https_port 3129 intercept ssl-bump tls-cert=$RUN/squid-ca.pem tls-key=$RUN/squid-ca.key generate-host-certificates=on dynamic_cert_mem_cache_size=16MB
sslcrtd_program $CERTGEN -s $RUN/squid/ssl_db -M 16MB
sslcrtd_children 5 startup=1 idle=1
acl step1 at_step SslBump1
ssl_bump peek step1
ssl_bump bump all
tls_outgoing_options cafile=$RUN/ca.pem
hosts_file none
dns_nameservers 10.231.4.2
acl bench src 10.231.2.0/24
http_access allow bench
http_access deny all
workers 1
cache deny all
cache_mem 0 MB
access_log none
cache_store_log none
cache_log $RUN/logs/squid-cache.log
logfile_rotate 0
pid_filename $RUN/squid.pid
coredump_dir $RUN/squid
cache_effective_user proxy
pinger_enable off
visible_hostname inspectbench
shutdown_lifetime 1 seconds
max_filedescriptors 16384
SQ
touch "$RUN/logs/squid-cache.log"; chown proxy:proxy "$RUN/logs/squid-cache.log"
nsx squid "$CERTGEN" -c -s "$RUN/squid/ssl_db" -M 16MB >/dev/null
chown -R proxy:proxy "$RUN/squid/ssl_db"
cat > "$RUN/squid.nft" <<NFT
table ip ibench_squid {
  chain prerouting {
    type nat hook prerouting priority dstnat; policy accept;
    iifname "s0" tcp dport 443 redirect to :3129
  }
}
NFT
nsx squid nft -f "$RUN/squid.nft"

# -------------------------------------------------------------------- start
start() { # name ns logfile cmd...   (cmd must stay in the foreground)
  local n=$1 ns=$2 lf=$3; shift 3
  ip netns exec "ibench-$ns" "$@" >"$lf" 2>&1 &
  PID[$n]=$!; ORDER+=("$n"); echo "${PID[$n]}" > "$RUN/pids/$n.pid"
  log "started $n pid ${PID[$n]} in ibench-$ns"
}
wait_port() { # name ns port
  local i
  for i in $(seq 150); do
    [[ -n $(nsx "$2" ss -Hltn "sport = :$3") ]] && return 0
    kill -0 "${PID[$1]}" 2>/dev/null || die "$1 exited; see $RUN/logs"
    sleep 0.1
  done
  die "$1 not listening on :$3"
}
start nginx origin "$RUN/logs/nginx.out" nginx -c "$RUN/nginx.conf"
wait_port nginx origin 443
# One resolver for both proxies, beside the origin: cardfw connects to the address the hello's
# name resolves to, squid asks DNS on every intercepted connection (with no resolver each
# would measure a DNS timeout, not TLS).
start dnsmasq origin "$RUN/logs/dnsmasq.out" dnsmasq -k --no-resolv --no-hosts \
  --addn-hosts="$RUN/bench-hosts" --listen-address=10.231.3.2,10.231.4.2 --bind-interfaces \
  --pid-file="$RUN/dnsmasq.pid" --user=root ${DNS_LOG:+--log-queries --log-facility=$RUN/logs/dnsmasq.log}
wait_port dnsmasq origin 53
if runs cardfw; then
  start cardfw card "$RUN/logs/cardfw.out" env RUST_LOG="${CARDFW_LOG:-warn}" "$CARDFW" --config "$RUN/cardfw.toml"
  wait_port cardfw card 10443
  nsx card "$CARDFW" --config "$RUN/cardfw.toml" inspection-ca > "$RUN/card-ca.pem"
fi
if runs squid; then
  start squid squid "$RUN/logs/squid.out" squid -N -f "$RUN/squid.conf"
  wait_port squid squid 3129
fi

# ------------------------------------------------------------------- verify
declare -A HOST=([cardfw]=card.bench [squid]=squid.bench)
declare -A ADDR=([cardfw]=$CARD_IP [squid]=$SQUID_IP)
declare -A PROXY_CA=([cardfw]=$RUN/card-ca.pem [squid]=$RUN/squid-ca.pem)
declare -A ISSUER=([cardfw]="cardwall card CA" [squid]="inspectbench squid CA")
for n in "${NAMES[@]}"; do
  for v in --http1.1 --http2; do
    for o in 1k:1024 1m:1048576; do
      r=$(nsx cli curl -sS -v $v --max-time 10 --cacert "${PROXY_CA[$n]}" -o /dev/null \
          -w '%{http_code} %{size_download} %{http_version}' "https://${HOST[$n]}/${o%%:*}" 2>"$RUN/raw/verify-$n.txt") \
        || die "verify $n $v ${o%%:*}: $(tail -3 "$RUN/raw/verify-$n.txt")"
      [[ $r == "200 ${o##*:} "* ]] || die "verify $n $v ${o%%:*}: got '$r'"
      grep -q "issuer: CN=${ISSUER[$n]}" "$RUN/raw/verify-$n.txt" \
        || die "verify $n: the leaf is not the proxy's own (not inspected?)"
    done
  done
  log "verified $n: inspected (leaf from ${ISSUER[$n]}), HTTP/1.1 and HTTP/2, 1k and 1m, 200 + length"
done

# --------------------------------------------------- per-process-tree stats
CLK=$(getconf CLK_TCK)
tree() { local c; echo "$1"; for c in $(pgrep -P "$1" 2>/dev/null); do tree "$c"; done; }
cpu_ticks() { # utime+stime of the whole process tree (all threads)
  local t=0 p s f
  for p in $(tree "${PID[$1]}"); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    read -ra f <<<"${s##*) }"; t=$((t + f[11] + f[12]))
  done; echo "$t"
}
hwm_reset() { local p; for p in $(tree "${PID[$1]}"); do echo 5 > "/proc/$p/clear_refs" 2>/dev/null || true; done; }
hwm_kb() { local p t=0 v
  for p in $(tree "${PID[$1]}"); do
    v=$(awk '/^VmHWM/{print $2}' "/proc/$p/status" 2>/dev/null) || continue; t=$((t + ${v:-0}))
  done; echo "$t"; }

cat > "$RUN/bench.lua" <<'LUA'
-- IB_CLOSE=1: every request on a new connection (a full TLS handshake each time).
if os.getenv("IB_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
function done(s, lat, req)
  local e = s.errors
  io.write(string.format("IBRESULT %d %d %d %d %d %d %d\n", s.requests, s.bytes, s.duration,
    lat:percentile(50), lat:percentile(99), e.read, e.connect + e.write + e.status + e.timeout))
end
LUA

# Fixed-rate new connections: wrk's latency leaves out the TCP and TLS handshakes and a
# closed loop gives the faster proxy more load, so at equal concurrency the two p99s are not
# comparable. This client starts NEW_RATE connections per second for both proxies alike and
# times each from when it was due (so a proxy that falls behind is charged for the wait: no
# coordinated omission) to the last byte, handshakes included.
cat > "$RUN/rate.py" <<'PY'
import socket, ssl, sys, threading, time
ip, name, path, rate, secs = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4]), float(sys.argv[5])
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
ctx.options |= getattr(ssl, "OP_IGNORE_UNEXPECTED_EOF", 0)
ctx.set_alpn_protocols(["http/1.1"])
request = f"GET {path} HTTP/1.1\r\nHost: {name}\r\nConnection: close\r\n\r\n".encode()
total = int(rate * secs)
start = time.monotonic() + 0.2
lock = threading.Lock()
state = {"next": 0, "bytes": 0, "errors": 0}
latencies = []
def one(due):
    with socket.create_connection((ip, 443), timeout=10) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            tls.sendall(request)
            got = b""
            while True:
                chunk = tls.recv(65536)
                if not chunk:
                    break
                got += chunk
    if not got.startswith(b"HTTP/1.1 200"):
        raise ValueError(got[:40])
    return time.monotonic() - due, len(got)
def worker():
    while True:
        with lock:
            i = state["next"]
            state["next"] += 1
        if i >= total:
            return
        due = start + i / rate
        wait = due - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        try:
            took, size = one(due)
        except Exception:
            with lock:
                state["errors"] += 1
            continue
        with lock:
            latencies.append(took)
            state["bytes"] += size
threads = [threading.Thread(target=worker) for _ in range(64)]
for t in threads:
    t.start()
for t in threads:
    t.join()
elapsed = time.monotonic() - start
latencies.sort()
pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else 0
print(f"IBRESULT {len(latencies)} {state['bytes']} {int(elapsed * 1e6)} {int(pick(0.5) * 1e6)} {int(pick(0.99) * 1e6)} 0 {state['errors']}")
PY
NEW_RATE=${NEW_RATE:-100}

# ------------------------------------------------------------------ measure
# Load kinds: new = 1k with Connection: close (new TLS connections/s); ka1k = 1k kept alive;
# ka1m = 1m kept alive (MB/s); all HTTP/1.1 by wrk. h2 = 1k over HTTP/2 by h2load.
RES=$RUN/results.tsv; : > "$RES"
load_once() { # name kind duration outfile
  local n=$1 k=$2 d=$3 out=$4 url="https://${HOST[$1]}"
  case $k in
    new)  IB_CLOSE=1 nsx cli timeout 120 wrk -t$THREADS -c$C_NEW -d"$d" --latency -s "$RUN/bench.lua" "$url/1k" ;;
    rate) nsx cli timeout 120 python3 "$RUN/rate.py" "${ADDR[$1]}" "${HOST[$1]}" /1k "$NEW_RATE" "${d%s}" ;;
    ka1k) IB_CLOSE=0 nsx cli timeout 120 wrk -t$THREADS -c$C_1K -d"$d" --latency -s "$RUN/bench.lua" "$url/1k" ;;
    ka1m) IB_CLOSE=0 nsx cli timeout 120 wrk -t$THREADS -c$C_1M -d"$d" --latency -s "$RUN/bench.lua" "$url/1m" ;;
    h2)   nsx cli timeout 120 h2load -t$THREADS -c$C_H2 -m1 -D"${d%s}" "$url/1k" ;;
  esac >"$out" 2>&1
}
result_of() { # kind outfile -> "reqs bytes dur_us p50_us p99_us read_errs other_errs"
  if [[ $1 == h2 ]]; then
    # h2load: "finished in 10.00s, 1234.5 req/s, 1.2MB/s", "requests: N total, N started, N done,
    # N succeeded, N failed, N errored", "time for request: min max mean sd"; no percentiles.
    awk '/^finished in/{d=$3+0; sub(/s,/,"",$3)} /^requests:/{ok=$8; bad=$10+$12}
         /^traffic:/{b=$3; gsub(/[()]/,"",b)} /^time for request:/{mean=$6}
         function us(v){ if (v ~ /ms$/) return v*1000; if (v ~ /us$/) return v+0; return v*1e6 }
         END{ if (ok=="") exit 1; printf "%d %d %d %d -1 0 %d\n", ok, b, d*1e6, us(mean), bad }' "$2"
  else
    grep '^IBRESULT' "$2" | cut -d' ' -f2-
  fi
}
KINDS=(new rate ka1k ka1m h2)
for k in "${KINDS[@]}"; do
  for n in "${NAMES[@]}"; do
    # squid 5 speaks no HTTP/2 to clients (h2load would fall back to HTTP/1.1).
    [[ $k == h2 && $n == squid ]] && continue
    load_once "$n" "$k" "$WARMUP" "$RUN/raw/$n-$k-warmup.txt"
    for i in $(seq "$RUNS"); do
      sleep 1
      hwm_reset "$n"; t0=$(cpu_ticks "$n")
      load_once "$n" "$k" "$DURATION" "$RUN/raw/$n-$k-$i.txt"
      t1=$(cpu_ticks "$n"); hwm=$(hwm_kb "$n")
      read -r reqs bytes dur p50 p99 rerr oerr < <(result_of "$k" "$RUN/raw/$n-$k-$i.txt") \
        || die "no result in $RUN/raw/$n-$k-$i.txt"
      awk -v n="$n" -v k="$k" -v i="$i" -v r="$reqs" -v b="$bytes" -v d="$dur" -v p50="$p50" \
          -v p99="$p99" -v re="$rerr" -v oe="$oerr" -v h="$hwm" -v cpu="$((t1 - t0))" -v clk="$CLK" \
        'BEGIN{printf "%s\t%s\t%s\t%.1f\t%.2f\t%.3f\t%s\t%.1f\t%.2f\t%.3f\t%d\t%d\n",
               n,k,i,r/(d/1e6),b/(d/1e6)/1e6,p50/1e3,(p99<0?"-":sprintf("%.3f",p99/1e3)),
               h/1024,cpu/clk,(r>0?cpu/clk/r*1e3:0),re,oe}' >> "$RES"
      log "$n $k run $i: $(tail -1 "$RES" | cut -f4-)"
    done
  done
done

# ------------------------------------------------------------------- report
col() { awk -F'\t' -v n="$2" -v k="$3" -v c="$4" '$1==n&&$2==k{print $c}' "$1"; }
med() { col "$@" | sort -g |
  awk '{a[NR]=$1} END{if(NR==0||a[1]=="-"){print "-";exit} if(NR%2)print a[(NR+1)/2]; else printf "%.3f\n",(a[NR/2]+a[NR/2+1])/2}'; }
rng() { col "$@" | sort -g | awk 'NR==1{lo=$1} {hi=$1} END{printf "%.0f–%.0f", lo, hi}'; }
mx()  { col "$@" | awk '$1>m{m=$1} END{print m+0}'; }
declare -A WHAT=([new]="new TLS conn/s (1k, Connection: close)"
                 [rate]="new TLS conn at a fixed $NEW_RATE/s (1k; latency from due time, handshakes included)"
                 [ka1k]="req/s kept alive, 1k"
                 [ka1m]="MB/s kept alive, 1m" [h2]="req/s HTTP/2, 1k (h2load)")
declare -A CONNS=([new]=$C_NEW [rate]="≤64" [ka1k]=$C_1K [ka1m]=$C_1M [h2]=$C_H2)

echo
echo "## TLS inspection side by side ($(date -u '+%F %H:%M UTC'), $(nproc) CPUs, $(uname -r))"
echo
echo "cardfw $("$CARDFW" --version | awk '{print $2}') (release), squid $(squid -v | sed -n '1s/.*Version //p') (deb squid-openssl $(pkgv squid-openssl)), nginx (deb $(pkgv nginx)), wrk (deb $(pkgv wrk)), h2load (deb $(pkgv nghttp2-client))"
echo "wrk -t$THREADS -d$DURATION --latency / h2load -t$THREADS -m1 -D${DURATION%s}; median of $RUNS runs (warm-up $WARMUP discarded). MB = 10^6 bytes."
echo "CPU s = utime+stime of the proxy's process tree in one run; CPU ms/req = that over the requests served."
echo "RSS = peak VmHWM of the proxy's process tree in the run."
echo
echo "| load | proxy | conns | req/s | req/s min–max | MB/s | p50 ms | p99 ms | proxy CPU s | CPU ms/req | peak RSS MiB | read errs | other errs |"
echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for k in "${KINDS[@]}"; do for n in "${NAMES[@]}"; do
  printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "${WHAT[$k]}" "$n" \
    "${CONNS[$k]}" "$(med "$RES" "$n" "$k" 4)" "$(rng "$RES" "$n" "$k" 4)" "$(med "$RES" "$n" "$k" 5)" \
    "$(med "$RES" "$n" "$k" 6)" "$(med "$RES" "$n" "$k" 7)" "$(med "$RES" "$n" "$k" 9)" \
    "$(med "$RES" "$n" "$k" 10)" "$(med "$RES" "$n" "$k" 8)" "$(mx "$RES" "$n" "$k" 11)" "$(mx "$RES" "$n" "$k" 12)"
done; done
echo
echo "squid 5 offers no HTTP/2 to clients (no ALPN h2 on bumped connections): no HTTP/2 row for it."
echo "h2load reports no percentiles: its p50 column is the mean time per request, p99 '-'."
echo
echo "Ratios cardfw / squid (medians):"
for k in new rate ka1k ka1m; do
  awk -v k="${WHAT[$k]}" -v cr="$(med "$RES" cardfw "$k" 4)" -v sr="$(med "$RES" squid "$k" 4)" \
      -v cp="$(med "$RES" cardfw "$k" 7)" -v sp="$(med "$RES" squid "$k" 7)" \
    'BEGIN{printf "- %s: req/s %.2f×", k, cr/sr; if (cp!="-" && sp!="-") printf ", p99 %.2f×", cp/sp; print ""}'
done
echo
echo "raw: $RES $RUN/raw/"
