"""Failures of the shared-state backends, as the layers above them see them."""

from __future__ import annotations


class Unavailable(Exception):
    """The broker or presence store cannot be reached; the request was not carried out."""



class OutcomeUnknown(Unavailable):
    """A write was sent and no answer came: it may have been carried out. It cannot be
    carried out later any more (the publish script refuses to run past its deadline), so
    what the backend holds once it answers again is the truth."""
