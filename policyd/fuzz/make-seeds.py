#!/usr/bin/env python3
"""Writes corpus-seeds/wire/ for the `wire` target: the JSON bodies cards and policyd send,
with a real CSR and certificates from openssl and a real Ed25519 policy key. Needs openssl
and Python's `cryptography`. The seeds are committed."""

import hashlib
import json
import pathlib
import subprocess
import tempfile

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

SEEDS = pathlib.Path(__file__).resolve().parent / "corpus-seeds"


def save(target, value):
    data = json.dumps(value).encode() if not isinstance(value, bytes) else value
    directory = SEEDS / target
    directory.mkdir(parents=True, exist_ok=True)
    (directory / hashlib.sha1(data).hexdigest()).write_bytes(data)


def openssl(*arguments, cwd):
    subprocess.run(["openssl", *arguments], cwd=cwd, check=True, capture_output=True)


def main():
    with tempfile.TemporaryDirectory() as d:
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "ca.key", "-out", "ca.pem", "-subj", "/CN=cardwall fleet CA",
                "-days", "3650", cwd=d)
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
                "-keyout", "card.key", "-out", "card.csr", "-subj", "/CN=card", cwd=d)
        openssl("x509", "-req", "-in", "card.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
                "-out", "card.pem", "-days", "365", "-set_serial", "7", cwd=d)
        read = lambda name: (pathlib.Path(d) / name).read_text()
        csr, ca, card = read("card.csr"), read("ca.pem"), read("card.pem")
    policy_key = Ed25519PrivateKey.from_private_bytes(bytes([7] * 32)).public_key()
    policy_key_pem = policy_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    save("wire", {"token": "k3J9-enrol-once", "csr_pem": csr})
    save("wire", {"card_id": "card-000042", "group": "laptops", "certificate_pem": card,
                  "ca_pem": ca, "policy_key_pem": policy_key_pem.decode()})
    save("wire", {"running_version": 7, "offered_version": 8, "outcome": "refused",
                  "error": "bundle expired at 2026-12-25T22:00:00Z (card time 2026-12-26T01:00:00Z)"})
    save("wire", {"running_version": 8, "offered_version": 8, "outcome": "applied", "error": None})
    save("wire", {"running_version": 0, "offered_version": None, "outcome": "applied",
                  "error": None})
    save("wire", {"error": "unknown or used enrolment token"})


if __name__ == "__main__":
    main()
