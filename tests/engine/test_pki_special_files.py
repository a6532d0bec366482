"""A policy naming a device or a FIFO as a certificate or CRL: read without end (/dev/zero) or
blocking for a writer (a FIFO) in check, doc, audit and the engine. Only regular files are read,
bounded."""

from __future__ import annotations

import os

import pytest

from engine.pki import PkiError, load_certificate_file, load_crl_files


def test_devices_and_fifos_are_not_read(tmp_path):
    fifo = tmp_path / "cert.fifo"
    os.mkfifo(fifo)
    for path in ("/dev/zero", str(fifo)):
        with pytest.raises(PkiError, match="not a regular file"):
            load_certificate_file(path)
        with pytest.raises(PkiError, match="not a regular file"):
            load_crl_files([path])


def test_a_missing_file_is_still_named(tmp_path):
    with pytest.raises(PkiError, match="cannot read certificate"):
        load_certificate_file(tmp_path / "nope.crt")
