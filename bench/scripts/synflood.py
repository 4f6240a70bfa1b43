#!/usr/bin/env python3
# A raw SYN flooder for bench/scripts/synflood.sh: sends bare TCP SYNs (IPv4 + TCP
# headers built by hand, checksums included, MSS option) through an IPPROTO_RAW socket
# (IP_HDRINCL), each from a random source address in --src-cidr and a random source
# port, to --dst:--dport. Never completes a handshake, so every SYN the target answers
# leaves a half-open connection (or a SYN cookie) behind. Paced at --rate SYNs per
# second (open loop, sent in small bursts on a 1 ms tick) or `max` (as fast as it can),
# and stops after --duration seconds or --count SYNs, whichever comes first. Prints one
# JSON object on stdout: SYNs sent, send errors, elapsed time, achieved rate, its own CPU.
#
#   python3 bench/scripts/synflood.py --dport 7002 [--dst 127.0.0.1]
#       [--src-cidr 10.78.0.0/16] [--rate 5000|max] [--duration 8] [--count 10000000]
#
# Needs root (CAP_NET_RAW). Stdlib only. Safety: refuses any destination outside
# 127.0.0.0/8, and refuses to run in a network namespace with any interface but lo, so
# neither the SYNs nor the SYN-ACKs to the spoofed sources can leave the host
# (synflood.sh makes such a namespace and routes the spoofed range back into its lo).
import argparse
import ipaddress
import json
import os
import random
import socket
import struct
import sys
import time


def fold(s):
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return s


def words(b):
    return sum(struct.unpack(f"!{len(b) // 2}H", b))


def main():
    ap = argparse.ArgumentParser(description="raw SYN flood with spoofed sources (loopback only)")
    ap.add_argument("--dst", default="127.0.0.1")
    ap.add_argument("--dport", type=int, required=True)
    ap.add_argument("--src-cidr", default="10.78.0.0/16")
    ap.add_argument("--rate", default="5000", help="SYNs per second, or 'max'")
    ap.add_argument("--duration", type=float, default=8.0, help="seconds (upper bound)")
    ap.add_argument("--count", type=int, default=10_000_000, help="SYNs (upper bound)")
    a = ap.parse_args()

    dst = ipaddress.IPv4Address(a.dst)
    if not dst.is_loopback:
        sys.exit(f"synflood.py: refusing destination {dst}: loopback (127.0.0.0/8) only")
    with open("/proc/self/net/dev") as f:
        ifaces = sorted(line.split(":")[0].strip() for line in f.readlines()[2:])
    if ifaces != ["lo"]:
        sys.exit(f"synflood.py: refusing to run in a network namespace with interfaces {ifaces}: "
                 "only in one whose sole interface is lo (ip netns add NS; ip netns exec NS ...)")
    net = ipaddress.IPv4Network(a.src_cidr, strict=False)
    if a.rate != "max" and float(a.rate) <= 0:
        sys.exit("synflood.py: --rate must be positive or 'max'")
    if not 0 < a.duration <= 600 or not 0 < a.count <= 100_000_000:
        sys.exit("synflood.py: --duration must be in (0, 600] s, --count in (0, 1e8]")
    rate = None if a.rate == "max" else float(a.rate)
    base = int(net.network_address)
    # Hosts only (no network or broadcast address) where the prefix leaves room for them.
    lo_host, span = (1, net.num_addresses - 2) if net.num_addresses > 2 else (0, net.num_addresses)

    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    s.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4 << 20)

    daddr = int(dst)
    dport = a.dport
    # IPv4 header (20 bytes) + TCP header with one option, MSS 1460 (24 bytes).
    tot_len, tcp_len = 44, 24
    # Checksum parts that never change: IP version/IHL/TOS, length, flags/fragment,
    # TTL/protocol, destination; TCP pseudo header (destination, protocol, length),
    # destination port, ack (0), offset/flags, window, urgent (0), MSS option.
    ip_fixed = 0x4500 + tot_len + 0x4000 + ((64 << 8) | 6) + (daddr >> 16) + (daddr & 0xFFFF)
    tcp_fixed = ((daddr >> 16) + (daddr & 0xFFFF) + 6 + tcp_len
                 + dport + ((6 << 12) | 0x02) + 64240 + 0x0204 + 1460)
    pkt = bytearray(tot_len)
    dest = (str(dst), 0)
    rnd = random.getrandbits
    pack = struct.pack_into

    sent = errors = 0
    err_samples = {}
    cpu0 = os.times()
    start = time.monotonic()
    deadline = start + a.duration
    while sent < a.count:
        now = time.monotonic()
        if now >= deadline:
            break
        if rate is None:
            burst = min(256, a.count - sent)
        else:
            burst = min(int((now - start) * rate) + 1 - sent, 1000, a.count - sent)
            if burst <= 0:
                time.sleep(0.001)
                continue
        for _ in range(burst):
            saddr = base + lo_host + rnd(32) % span
            sport = 1024 + rnd(16) % 64512
            seq = rnd(32)
            ipid = rnd(16)
            sa_hi, sa_lo = saddr >> 16, saddr & 0xFFFF
            ip_csum = 0xFFFF - fold(ip_fixed + ipid + sa_hi + sa_lo)
            tcp_csum = 0xFFFF - fold(tcp_fixed + sa_hi + sa_lo + sport + (seq >> 16) + (seq & 0xFFFF))
            pack("!BBHHHBBHII", pkt, 0, 0x45, 0, tot_len, ipid, 0x4000, 64, 6, ip_csum, saddr, daddr)
            pack("!HHIIBBHHHBBH", pkt, 20, sport, dport, seq, 0, 6 << 4, 0x02, 64240, tcp_csum, 0,
                 2, 4, 1460)
            try:
                s.sendto(pkt, dest)
                sent += 1
            except OSError as e:
                errors += 1
                err_samples[e.strerror] = err_samples.get(e.strerror, 0) + 1
                if errors > 1000 and sent == 0:
                    sys.exit(f"synflood.py: every send fails: {err_samples}")
    elapsed = time.monotonic() - start
    cpu1 = os.times()
    # Self-check of the checksum arithmetic on the last packet: a valid header sums to 0xFFFF.
    if sent:
        ph = pkt[12:20] + struct.pack("!BBH", 0, 6, tcp_len)
        assert fold(words(bytes(pkt[:20]))) == 0xFFFF, "IPv4 checksum"
        assert fold(words(bytes(ph + pkt[20:]))) == 0xFFFF, "TCP checksum"
    print(json.dumps({
        "dst": f"{dst}:{dport}",
        "src_cidr": str(net),
        "target_rate": a.rate,
        "sent": sent,
        "send_errors": errors,
        "error_kinds": err_samples,
        "elapsed_s": round(elapsed, 3),
        "rate_pps": round(sent / elapsed, 1) if elapsed > 0 else 0.0,
        "cpu_s": round((cpu1.user - cpu0.user) + (cpu1.system - cpu0.system), 3),
    }))


if __name__ == "__main__":
    main()
