"""Datatype rules beyond the definitions: https://hl7.org/fhir/R4/datatypes.html#Attachment.

``Attachment.size`` is the number of bytes of the data, and ``Attachment.hash`` its base64-encoded
SHA-1: when ``data`` is inline, both must agree with it (the HL7 reference validator checks the same).
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from fhir_exchange.validation.issues import IssueSink
from fhir_exchange.validation.structure import Visited


def check_attachments(attachments: list[Visited], sink: IssueSink) -> None:
    for v in attachments:
        att = v.node
        data = att.get("data")
        if not isinstance(data, str):
            continue
        try:
            raw = base64.b64decode("".join(data.split()), validate=True)
        except (binascii.Error, ValueError):
            continue  # reported as a primitive format error
        size = att.get("size")
        if isinstance(size, int) and not isinstance(size, bool) and size != len(raw):
            sink.error("value", "attachment-size",
                       f"Attachment.size is {size}, but the data is {len(raw)} bytes", f"{v.path}.size")
        digest = att.get("hash")
        if isinstance(digest, str) and digest != base64.b64encode(hashlib.sha1(raw).digest()).decode():
            sink.error("value", "attachment-hash",
                       "Attachment.hash is not the base64 SHA-1 of the data", f"{v.path}.hash")
