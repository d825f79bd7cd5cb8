#!/usr/bin/env python3
"""Writes corpus-seeds/<target>/ for cardfw's fuzz targets from real traffic on loopback:
ClientHellos from curl and openssl s_client, HTTP heads and chunked bodies from curl and
Python's http.server, DNS queries from dig and answers from dnsmasq.

Needs curl, openssl, dig and dnsmasq (./x test installs them). Run from anywhere; the seeds
are committed, so this only needs running again to change them."""

import hashlib
import http.server
import os
import pathlib
import shutil
import socket
import subprocess
import tempfile
import threading
import time

SEEDS = pathlib.Path(__file__).resolve().parent / "corpus-seeds"


def save(target, data):
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def listener():
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    return server, server.getsockname()[1]


def first_bytes(command_for_port, settle=0.5):
    """Runs the command against a listener that reads what the client sends first."""
    server, port = listener()
    process = subprocess.Popen(command_for_port(port), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    server.settimeout(3)
    try:
        connection, _ = server.accept()
    except socket.timeout:
        # The client gave up before connecting (an option this version lacks, say).
        server.close()
        process.kill()
        process.wait()
        return b""
    connection.settimeout(settle)
    data = b""
    try:
        while True:
            chunk = connection.recv(65536)
            if not chunk:
                break
            data += chunk
    except socket.timeout:
        pass
    connection.close()
    server.close()
    process.kill()
    process.wait()
    return data


def client_hellos():
    commands = [
        lambda p: ["curl", "-sk", "--max-time", "2", f"https://example.com:{p}/",
                   "--resolve", f"example.com:{p}:127.0.0.1"],
        lambda p: ["curl", "-sk", "--max-time", "2", "--http1.1", "--tlsv1.2", "--tls-max", "1.2",
                   f"https://WWW.Example.org:{p}/", "--resolve", f"www.example.org:{p}:127.0.0.1"],
        lambda p: ["curl", "-sk", "--max-time", "2", f"https://127.0.0.1:{p}/"],
        lambda p: ["openssl", "s_client", "-connect", f"127.0.0.1:{p}", "-servername",
                   "ads.example", "-alpn", "h2,http/1.1"],
        lambda p: ["openssl", "s_client", "-connect", f"127.0.0.1:{p}", "-noservername",
                   "-tls1_2"],
        lambda p: ["openssl", "s_client", "-connect", f"127.0.0.1:{p}", "-servername",
                   "tracker.example", "-tls1_3", "-groups", "X25519MLKEM768:X25519"],
    ]
    for command in commands:
        hello = first_bytes(command)
        if not hello:
            continue
        save("client_hello", hello)
        # The same hello cut into records of 7 bytes, as a filter-evading client sends it.
        length = int.from_bytes(hello[3:5], "big")
        message = hello[5:5 + length]
        records = b"".join(b"\x16\x03\x01" + len(message[i:i + 7]).to_bytes(2, "big")
                           + message[i:i + 7] for i in range(0, len(message), 7))
        save("client_hello", records)
    save("client_hello", b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self):
        body = b"hello\n"
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_HEAD(self):
        self.send_response(304)
        self.send_header("ETag", '"x"')
        self.end_headers()

    def do_POST(self):
        self.send_response(200)
        self.send_header("Transfer-Encoding", "chunked")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"5;ext=1\r\nhello\r\n0\r\nX-Trailer: t\r\n\r\n")

    def log_message(self, *args):
        pass


def response_head(port, request):
    with socket.create_connection(("127.0.0.1", port)) as connection:
        connection.sendall(request)
        connection.settimeout(1)
        data = b""
        try:
            while b"\r\n\r\n" not in data:
                chunk = connection.recv(4096)
                if not chunk:
                    break
                data += chunk
        except socket.timeout:
            pass
        return data


def http_heads_and_bodies():
    for command in [
        lambda p: ["curl", "-s", "--max-time", "2", f"http://127.0.0.1:{p}/a/b?c=d"],
        lambda p: ["curl", "-s", "--max-time", "2", "-x", f"http://127.0.0.1:{p}",
                   "http://example.com/index.html", "-H", "Connection: keep-alive, X-Drop",
                   "-H", "X-Drop: 1", "-A", "Mozilla/5.0"],
        lambda p: ["curl", "-s", "--max-time", "2", "-x", f"http://127.0.0.1:{p}", "-p",
                   "https://example.com/"],
        lambda p: ["curl", "-s", "--max-time", "2", "--http1.0", "-d", "a=1&b=2",
                   f"http://127.0.0.1:{p}/form"],
        lambda p: ["curl", "-s", "--max-time", "2", "-H", "Transfer-Encoding: chunked",
                   "--data-binary", "chunked body from curl", f"http://127.0.0.1:{p}/up"],
        lambda p: ["curl", "-s", "--max-time", "2", "-H", "Upgrade: websocket", "-H",
                   "Connection: Upgrade", f"http://127.0.0.1:{p}/ws"],
    ]:
        request = first_bytes(command)
        save("http1_head", b"\x00" + request)
        save("http1_head", b"\x02" + request)
        head, _, body = request.partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            save("http1_chunks", b"\x03\x05" + body)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    for request in [b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", b"HEAD / HTTP/1.1\r\nHost: a\r\n\r\n",
                    b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
                    b"BREW / HTTP/1.1\r\nHost: a\r\n\r\n"]:
        response = response_head(port, request)
        save("http1_head", b"\x01" + response)
        head, _, body = response.partition(b"\r\n\r\n")
        if b"chunked" in head.lower():
            save("http1_chunks", b"\x01\x02" + body)
    server.shutdown()
    for body in [b"0\r\n\r\n", b"1a\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\n\r\nGET / HTTP/1.1\r\n",
                 b"4 ; a=b\r\nwiki\r\n5\r\npedia\r\n0\r\nExpires: never\r\nX: y\r\n\r\n"]:
        save("http1_chunks", b"\x07\x0b" + body)


def dns():
    workdir = tempfile.mkdtemp()
    dnsmasq_port = listener_udp_port()
    dnsmasq = subprocess.Popen([
        "dnsmasq", "--keep-in-foreground", "--no-resolv", "--no-hosts", "--port",
        str(dnsmasq_port), "--listen-address=127.0.0.1", "--bind-interfaces",
        f"--pid-file={workdir}/pid", "--address=/allowed.test/192.0.2.1",
        "--address=/allowed.test/2001:db8::1", "--mx-host=allowed.test,mail.allowed.test,10",
        "--txt-record=allowed.test,\"v=spf1 -all\"", "--cname=www.allowed.test,allowed.test",
        "--auth-server=ns.allowed.test", "--auth-zone=zone.test", "--host-record=h.zone.test,192.0.2.7",
        "--local=/local.test/", "--user=" + os.environ.get("USER", "root")],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    queries = [
        ["allowed.test"], ["allowed.test", "AAAA"], ["allowed.test", "MX"],
        ["allowed.test", "TXT"], ["www.allowed.test"], ["nowhere.local.test"],
        ["h.zone.test"], ["zone.test", "SOA"], ["allowed.test", "+noedns"],
        ["allowed.test", "+dnssec", "+cd"], ["use-application-dns.net"],
        ["zone.test", "AXFR", "+notcp"], ["Mixed.CASE.Allowed.Test", "ANY"],
        ["allowed.test", "+bufsize=4096", "+cookie"],
    ]
    for arguments in queries:
        udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        udp.bind(("127.0.0.1", 0))
        udp.settimeout(2)
        port = udp.getsockname()[1]
        process = subprocess.Popen(["dig", "@127.0.0.1", "-p", str(port), "+tries=1",
                                    "+time=1"] + arguments, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            query, _ = udp.recvfrom(4096)
        except socket.timeout:
            process.kill()
            continue
        process.kill()
        process.wait()
        udp.close()
        upstream = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        upstream.settimeout(2)
        upstream.sendto(query, ("127.0.0.1", dnsmasq_port))
        try:
            answer, _ = upstream.recvfrom(65536)
        except socket.timeout:
            answer = b""
        upstream.close()
        length = len(query).to_bytes(2, "big")
        save("dns_query", b"\x00\x00\x00" + length + query + answer)
        save("dns_query", b"\x01\x00\x3c" + length + query + answer)
    dnsmasq.kill()
    dnsmasq.wait()
    shutil.rmtree(workdir)


def listener_udp_port():
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()
    return port


def message(payload):
    return len(payload).to_bytes(2, "big") + payload


def vpcd():
    """What pcscd's vpcd driver sends: power on, the ATR, then APDUs. Peer I/O (class 12)
    POLL, PUT_PACKET with a length-prefixed frame, GET_PACKET; the card application's SELECT;
    then power off."""
    frame = bytes(range(64))
    put = bytes([0x12, 0xEA, 0, 0, 2 + len(frame)]) + len(frame).to_bytes(2, "big") + frame
    session = [bytes([1]), bytes([4]), bytes([0x12, 0xE8, 0, 0, 1, 0]), put,
               bytes([0x12, 0xEC, 0, 0, 0x3E]), bytes([0x12, 0xE8, 0, 0, 1, 0]),
               bytes([0x12, 0xEC, 0, 0, 0x00]),
               bytes([0x00, 0xA4, 0x04, 0x00, 0x07, 0xF0, 0x63, 0x61, 0x72, 0x64, 0x77, 0x6C]),
               bytes([2]), bytes([0])]
    save("vpcd_frame", b"".join(message(m) for m in session))
    save("vpcd_frame", message(bytes([4])) + message(bytes([0x12, 0xEC, 0, 0, 0, 1, 0x2C])))


if __name__ == "__main__":
    client_hellos()
    http_heads_and_bodies()
    dns()
    vpcd()
    for target in sorted(SEEDS.iterdir()):
        print(target.name, len(list(target.iterdir())))
