"""The SOPS format of application secrets (agent/sops.py): unit tests, then the real sops binary.

The last two tests build getsops/sops from its Go module (scripts/build-sops.sh, cached) and check
both directions: `sops --decrypt` reads what Conveyor writes, and Conveyor reads what sops writes.
"""

from __future__ import annotations

import base64
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from conveyor.agent import sops

ROOT = Path(__file__).resolve().parents[2]


def secret(**data: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Secret",
            "metadata": {"name": "db", "namespace": "hello-dev", "annotations": {"fp": "abc"}},
            "type": "Opaque", "data": {k: base64.b64encode(v.encode()).decode() for k, v in data.items()}}


@pytest.fixture(scope="module")
def keypair() -> tuple[str, str]:
    return sops.new_identity()


def test_round_trip_keeps_metadata_readable_and_values_encrypted(keypair: tuple[str, str]) -> None:
    private, public = keypair
    doc = secret(PASSWORD="correct horse battery staple", TOKEN="t0k3n")
    text = sops.encrypt(doc, [public])
    assert "correct horse" not in text and base64.b64encode(b"correct horse").decode()[:12] not in text
    parsed = yaml.safe_load(text)
    assert parsed["metadata"] == doc["metadata"] and parsed["kind"] == "Secret"
    assert all(re.match(r"^ENC\[AES256_GCM,data:.+,iv:.+,tag:.+,type:str\]$", v) for v in parsed["data"].values())
    meta = parsed["sops"]
    assert meta["age"][0]["recipient"] == public
    assert meta["age"][0]["enc"].startswith("-----BEGIN AGE ENCRYPTED FILE-----\n")
    assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$", meta["lastmodified"])
    assert meta["encrypted_regex"] == sops.ENCRYPTED_REGEX and "mac" in meta
    assert sops.decrypt(parsed, [private]) == doc


def test_each_encryption_uses_a_fresh_data_key_and_nonces(keypair: tuple[str, str]) -> None:
    _, public = keypair
    a, b = (yaml.safe_load(sops.encrypt(secret(PASSWORD="same"), [public])) for _ in range(2))
    assert a["data"]["PASSWORD"] != b["data"]["PASSWORD"]
    assert a["sops"]["age"][0]["enc"] != b["sops"]["age"][0]["enc"]


def test_a_changed_readable_field_breaks_the_mac(keypair: tuple[str, str]) -> None:
    """The MAC covers unencrypted values too: renaming the Secret in the repo is detected."""
    private, public = keypair
    parsed = yaml.safe_load(sops.encrypt(secret(PASSWORD="x1"), [public]))
    parsed["metadata"]["name"] = "other"
    with pytest.raises(sops.SopsError, match="MAC mismatch"):
        sops.decrypt(parsed, [private])


def test_a_moved_or_changed_ciphertext_fails_authentication(keypair: tuple[str, str]) -> None:
    private, public = keypair
    parsed = yaml.safe_load(sops.encrypt(secret(A="one", B="two"), [public]))
    parsed["data"]["A"], parsed["data"]["B"] = parsed["data"]["B"], parsed["data"]["A"]  # path is the AAD
    with pytest.raises(sops.SopsError, match="failed authentication"):
        sops.decrypt(parsed, [private])
    parsed = yaml.safe_load(sops.encrypt(secret(A="one"), [public]))
    parsed["data"]["A"] = parsed["data"]["A"].replace("data:", "data:AA", 1)
    with pytest.raises(sops.SopsError):
        sops.decrypt(parsed, [private])


def test_the_wrong_key_is_refused_naming_the_recipient_not_the_value(keypair: tuple[str, str]) -> None:
    _, public = keypair
    other_private, _ = sops.new_identity()
    parsed = yaml.safe_load(sops.encrypt(secret(PASSWORD="s3cr3t-value"), [public]))
    with pytest.raises(sops.SopsError) as info:
        sops.decrypt(parsed, [other_private])
    assert public in str(info.value) and "s3cr3t" not in str(info.value)


def test_any_of_several_recipients_opens_it(keypair: tuple[str, str]) -> None:
    private, public = keypair
    second_private, second_public = sops.new_identity()
    parsed = yaml.safe_load(sops.encrypt(secret(K="v"), [second_public, public]))
    assert sops.decrypt(parsed, [private]) == sops.decrypt(parsed, [second_private]) == secret(K="v")


def test_recipients_are_checked() -> None:
    assert sops.check_recipient(sops.new_identity()[1])
    with pytest.raises(ValueError, match="age public key"):
        sops.check_recipient("age1notakey")
    private, public = sops.new_identity()
    assert sops.recipient_of(private) == public


def test_mac_matches_sops_definition(keypair: tuple[str, str]) -> None:
    """The MAC is SHA-512 over every value's bytes in document order, uppercase hex (sops.go)."""
    import hashlib

    private, public = keypair
    doc = secret(PASSWORD="p")
    parsed = yaml.safe_load(sops.encrypt(doc, [public]))
    key = sops._data_key(parsed["sops"], [private])
    mac = sops.decrypt_value(parsed["sops"]["mac"], key, parsed["sops"]["lastmodified"])
    values = ["v1", "Secret", "db", "hello-dev", "abc", "Opaque", doc["data"]["PASSWORD"]]
    assert mac == hashlib.sha512("".join(values).encode()).hexdigest().upper()


# --- the real sops ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def sops_bin() -> str:
    p = subprocess.run([str(ROOT / "scripts/build-sops.sh")], capture_output=True, text=True, timeout=3600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout.strip()


def _env(private: str, tmp_path: Path) -> dict[str, str]:
    keys = tmp_path / "keys.txt"
    keys.write_text(private + "\n")
    return {**os.environ, "SOPS_AGE_KEY_FILE": str(keys), "HOME": str(tmp_path)}


def test_real_sops_decrypts_what_conveyor_writes(sops_bin: str, keypair: tuple[str, str], tmp_path: Path) -> None:
    private, public = keypair
    doc = secret(PASSWORD="from conveyor", URL="postgres://db:5432/app")
    path = tmp_path / "db.sops.yaml"
    path.write_text(sops.encrypt(doc, [public]))
    p = subprocess.run([sops_bin, "--decrypt", str(path)], capture_output=True, text=True,
                       env=_env(private, tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr
    assert yaml.safe_load(p.stdout) == doc
    # and sops, too, refuses a changed readable field
    tampered = yaml.safe_load(path.read_text())
    tampered["metadata"]["name"] = "other"
    path.write_text(yaml.safe_dump(tampered, sort_keys=False))
    p = subprocess.run([sops_bin, "--decrypt", str(path)], capture_output=True, text=True,
                       env=_env(private, tmp_path), timeout=60)
    assert p.returncode != 0 and "MAC mismatch" in p.stderr


def test_conveyor_decrypts_what_real_sops_writes(sops_bin: str, keypair: tuple[str, str], tmp_path: Path) -> None:
    private, public = keypair
    doc = secret(PASSWORD="from sops")
    plain = tmp_path / "db.yaml"
    plain.write_text(yaml.safe_dump(doc, sort_keys=False))
    p = subprocess.run([sops_bin, "--encrypt", "--age", public, "--encrypted-regex", sops.ENCRYPTED_REGEX,
                        str(plain)], capture_output=True, text=True, env=_env(private, tmp_path), timeout=60)
    assert p.returncode == 0, p.stderr
    assert "from sops" not in p.stdout
    assert sops.decrypt_text(p.stdout, [private]) == doc
