"""Failures of the shared-state backends, as the layers above them see them."""

from __future__ import annotations


class Unavailable(Exception):
    """The broker or presence store cannot be reached; the request was not carried out."""

