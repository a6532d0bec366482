"""Errors raised by engine.pki."""

from __future__ import annotations


class PkiError(Exception):
    """A certificate, CRL, key file or CA folder we cannot use. The message names
    what (a file, a serial, a subject) and what is wrong, in one line."""
