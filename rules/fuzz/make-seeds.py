#!/usr/bin/env python3
"""Writes corpus-seeds/<target>/ for the rules fuzz targets: the `parse` target's real rule
files, and for `bundle` the example policy as a payload (mode byte odd: the target signs it)
and as a whole bundle signed with the target's key (mode byte even), as policyd sends it.

Needs Python's `cryptography` for the Ed25519 signature. The seeds are committed."""

import base64
import hashlib
import pathlib

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

HERE = pathlib.Path(__file__).resolve().parent
EXAMPLES = HERE.parent / "examples"
SEEDS = HERE / "corpus-seeds"


def save(target, data):
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def payload(version, group, files):
    out = (f"cardwall-policy 1\nversion: {version}\ngroup: {group}\n"
           "issued-at: 2026-11-25T22:00:00Z\nexpires-at: 2026-12-25T22:00:00Z\n")
    for name, text in files:
        out += f"file: {name} {len(text.encode())}\n"
    out += "\n" + "".join(text for _, text in files)
    return out.encode()


def main():
    rules = (EXAMPLES / "family.rules").read_text()
    ads = (EXAMPLES / "ads.txt").read_text()
    for path in EXAMPLES.iterdir():
        save("parse", path.read_bytes())
    key = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32))
    key_id = base64.b64encode(key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw))
    for body in [payload(2, "g", [("family.rules", rules), ("ads.txt", ads)]),
                 payload(7, "g", [("rules.txt", "allow dns\ndefault deny\n")]),
                 payload(3, "laptops", [("rules.txt", "default allow\n")])]:
        save("bundle", b"\x01" + body)
        signature = base64.b64encode(key.sign(body))
        envelope = b"cardwall-bundle 1\nkey: " + key_id + b"\nsignature: " + signature + b"\n\n"
        save("bundle", b"\x00" + envelope + body)


if __name__ == "__main__":
    main()
