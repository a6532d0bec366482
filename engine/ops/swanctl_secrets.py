"""The ``secrets`` of a swanctl.conf, and the private keys swanctl loads from its folders, as a
secrets file (engine.ops.swanctl_import uses :class:`SecretsImport`).

Names: swanctl names each secret ``TYPE<suffix>`` (``ike-office``, ``eap-carol``,
``pkcs8-gw``); ours drop ``TYPE-`` (``[ike.office]``), so export (which writes
``ike-NAME``) and import give back the same names however often they go round.

Private keys: swanctl --load-creds loads every key file in its ``private/``,
``rsa/``, ``ecdsa/`` and ``pkcs8/`` folders; a ``TYPE<suffix> { file, secret }``
entry only gives the passphrase of the file of that name in the TYPE folder. So
a certificate gateway whose swanctl.conf names no key still has one: the key
in those folders whose public key is its certificate's becomes a ``[private]``
entry. Key files are read through engine.pki (only it imports `cryptography`).
Paths are written relative to the secrets file, as the engine reads them.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
from pathlib import Path

from engine.ops.swanctl_conf import Section
from engine.pki.keyfiles import SWANCTL_KEY_FOLDERS, certificate_file_public_der, key_file_public_der
from engine.policy.identity import IdentityError, parse_identity
from engine.secret import Secret

MAX_KEY_FILES = 256
"""Key files looked at per folder (they are parsed: a folder of thousands is not a key store)."""


class SecretsImport:
    """Mixed into the importer: needs ``conf_dir``, ``secrets_dir``, ``warn``, ``warnings`` and ``result``."""

    conf_dir: Path
    secrets_dir: Path

    def init_secrets(self) -> None:
        self.local_certs: list[tuple[Path, str, str]] = []
        """(certificate file, where, key path) of every local certificate: each needs its key."""
        self.key_files: dict[Path, Secret | None] = {}
        """Key files the secrets name (resolved), with their passphrase."""

    def key_ref(self, name: str, folder: str) -> str:
        path = Path(name) if os.path.isabs(name) else self.conf_dir / folder / name
        return os.path.relpath(path, self.secrets_dir)

    def secrets(self, sec: Section, doc: dict) -> None:
        for name, entry in sec.sections.items():
            path = f"secrets.{name}"
            if name.startswith("ike"):
                secret = entry.value("secret")
                if not secret:
                    self.warn(entry.where(), path, "no secret")
                    continue
                ids = []
                for key, setting in entry.settings.items():
                    if key.startswith("id"):
                        try:
                            parse_identity(setting.value)
                            ids.append(setting.value)
                        except IdentityError as exc:
                            self.warn(f"{setting.file}:{setting.line}", f"{path}.{key}", str(exc))
                    elif key != "secret":
                        self.warn(f"{setting.file}:{setting.line}", f"{path}.{key}", "not implemented")
                doc["ike"][secret_name(name, "ike", doc["ike"])] = {"ids": ids, "secret": secret}
                self.result.secrets += 1
            elif name.startswith("ppk"):
                secret = entry.value("secret")
                ids = [s for k, s in entry.settings.items() if k.startswith("id")]
                if not secret or not ids:
                    self.warn(entry.where(), path, "a PPK needs a secret and an id")
                    continue
                for extra in ids[1:]:
                    self.warn(f"{extra.file}:{extra.line}", path, "one PPK_ID per key here: the first is kept")
                doc["ppk"][secret_name(name, "ppk", doc["ppk"])] = {"id": ids[0].value, "secret": secret}
                self.result.secrets += 1
            elif name.startswith("eap"):
                secret = entry.value("secret")
                ids = [s.value for k, s in entry.settings.items() if k.startswith("id")]
                if not secret or not ids:
                    self.warn(entry.where(), path, "an EAP secret needs a secret and an id")
                    continue
                try:
                    secret = eap_password(secret)
                except ValueError as exc:
                    self.warn(entry.where(), f"{path}.secret", str(exc))
                    continue
                doc["eap"][secret_name(name, "eap", doc["eap"])] = {"id": ids if len(ids) > 1 else ids[0],
                                                                    "secret": secret}
                self.result.secrets += 1
            elif name.startswith(SWANCTL_KEY_FOLDERS):
                f = entry.value("file")
                if not f:
                    self.warn(entry.where(), path, "no file")
                    continue
                folder = re.match("|".join(SWANCTL_KEY_FOLDERS), name).group(0)
                item = {"file": self.key_ref(f, folder)}
                if entry.value("secret"):
                    item["passphrase"] = entry.value("secret")
                resolved = Path(os.path.normpath(self.secrets_dir / item["file"]))
                self.key_files[resolved] = Secret(item["passphrase"].encode()) if "passphrase" in item else None
                doc["private"][secret_name(name, folder, doc["private"])] = item
                self.result.secrets += 1
            else:
                kind = re.match(r"[a-z]+", name)
                self.warn(entry.where(), path, f"{kind.group(0) if kind else name} secrets are not implemented")

    def folder_keys(self, doc: dict) -> None:
        """The keys swanctl loads from its folders for our certificates (see the module docstring); a
        certificate with no key there and none in the secrets is said."""
        if not self.local_certs:
            return
        have = {der for f, pw in self.key_files.items() if (der := key_file_public_der(f, pw)) is not None}
        wanted = {}
        for cert, where, path in self.local_certs:
            der = certificate_file_public_der(cert)
            if der is not None and der not in have:  # an unreadable one is for `check` to report
                wanted.setdefault(der, (cert, where, path))
        unreadable: list[str] = []
        for folder in SWANCTL_KEY_FOLDERS:
            d = self.conf_dir / folder
            if not wanted or not d.is_dir():
                continue
            for f in sorted(d.iterdir())[:MAX_KEY_FILES]:
                if not f.is_file() or Path(os.path.normpath(f)) in self.key_files:
                    continue
                der = key_file_public_der(f)
                if der is None:
                    unreadable.append(f"{folder}/{f.name}")
                elif der in wanted:
                    del wanted[der]
                    name = secret_name(f.stem, "", doc["private"])
                    doc["private"][name] = {"file": os.path.relpath(f, self.secrets_dir)}
                    self.key_files[Path(os.path.normpath(f))] = None
                    self.result.secrets += 1
        for cert, where, path in wanted.values():
            hint = (f" ({', '.join(unreadable)}: encrypted or unreadable; a secrets entry with its passphrase lets "
                    "it be matched)") if unreadable else ""
            self.warnings.append(f"{where}: {path}: no private key for {cert} in the secrets nor in swanctl's "
                                 f"{', '.join(f + '/' for f in SWANCTL_KEY_FOLDERS)} folders{hint}: add it as "
                                 "[private.NAME] to the secrets file")


def eap_password(value: str) -> str:
    """swanctl decodes a secret written 0x<hex> or 0s<base64> (export writes EAP passwords so); our EAP
    passwords are the text itself (engine.policy.secrets: no decoding), so decode here. ValueError
    (naming no part of the value) when it is not valid hex/base64 or not UTF-8 text."""
    if not value.startswith(("0x", "0X", "0s", "0S")):
        return value
    try:
        raw = binascii.unhexlify(value[2:]) if value[1] in "xX" else base64.b64decode(value[2:], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("a value starting with 0x must be hex, with 0s base64") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ValueError("an EAP password here is text: this one decodes to bytes that are not UTF-8") from None
    if not text:
        raise ValueError("empty secret")
    return text


def secret_name(name: str, kind: str, taken: dict) -> str:
    """Our name of swanctl's secret ``name`` of type ``kind``: ``ike-office`` is ``office`` (export
    writes ``ike-office`` back); ``ike1`` or ``ike`` stay as they are; unique in ``taken``."""
    rest = name[len(kind):] if kind and name.startswith(kind) else ""
    if rest[:1] in ("-", "_") and rest[1:]:
        name = rest[1:]
    base = re.sub(r"[^A-Za-z0-9_-]", "-", name) or "secret"
    out, n = base, 2
    while out in taken:
        out, n = f"{base}-{n}", n + 1
    return out
