#!/usr/bin/env python3
"""Writes corpus-seeds/peerio_frame/ for the `peerio_frame` target, one seed per mode (the
first byte): a link stream of length-prefixed Ethernet frames (an ARP request and an IPv4
ping), a card's answers, a host's commands, and frames for an honest link. The seeds are
committed."""

import hashlib
import pathlib

SEEDS = pathlib.Path(__file__).resolve().parent / "corpus-seeds"

ARP = bytes.fromhex("ffffffffffff02000000000108060001080006040001020000000001c0a80101"
                    "000000000000c0a80102")
PING = bytes.fromhex("02000000000202000000000108004500001c00004000400100000a0000020a00"
                     "00010800f7ff00000000")


def save(target, data):
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def framed(frame):
    return len(frame).to_bytes(2, "big") + frame


def records(items):
    return b"".join(bytes([len(item)]) + item for item in items)


def main():
    stream = framed(ARP) + framed(PING) + framed(ARP)[:7]
    save("peerio_frame", b"\x00\x05" + stream)
    # The card: something to send (6Cxx), its bytes with 9000, nothing more, a refusal.
    answers = [bytes([0x6C, len(framed(ARP))]), framed(ARP) + b"\x90\x00", b"\x90\x00",
               b"\x90\x00", b"\x6A\x86", b"\x6C\x00", framed(PING) + b"\x6C\x05"]
    save("peerio_frame", b"\x01" + records(answers))
    put = framed(PING)
    commands = [bytes([0x12, 0xE8, 0, 0, 1, 0]), bytes([0x12, 0xEC, 0, 0, 0]),
                bytes([0x12, 0xEA, 0, 0, len(put)]) + put, bytes([0x12, 0xE8, 0, 0, 1, 0]),
                bytes([0x12, 0xEC, 0, 0, 0x10]), bytes([0x12, 0xEC, 0, 0])]
    save("peerio_frame", b"\x02" + records(commands))
    save("peerio_frame", b"\x03" + records([ARP, PING, bytes(range(200)), ARP]))


if __name__ == "__main__":
    main()
