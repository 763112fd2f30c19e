"""Encryption at rest: secrets stored in the database are AES-256-GCM tokens.

A token is ``v1:<key id>:<URL-safe base64 of nonce + ciphertext>``. The key id picks the
key among ``ARGUS_ENCRYPTION_KEY`` (the primary, which encrypts) and
``ARGUS_ENCRYPTION_KEY_FALLBACKS`` (older keys, which only decrypt), so
``argus rotate-encryption-key`` can find what older keys hold and re-encrypt it while
Argus runs. The field a token belongs to ("app.Model.field") is its associated data: a
token copied into another field does not decrypt.
"""

import base64
import binascii
import hashlib
import json
import os
import re
from functools import lru_cache
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from django.apps import apps
from django.conf import settings
from django.db import models

VERSION = "v1"
NONCE_BYTES = 12
TAG_BYTES = 16
TOKEN = re.compile(r"v1:([0-9a-f]{8}):([A-Za-z0-9_-]+={0,2})")
# Shown when a token needs a key Argus was not given.
ADD_FALLBACK = "add the old key to ARGUS_ENCRYPTION_KEY_FALLBACKS"


class DecryptionError(Exception):
    """A token that cannot be decrypted: malformed, altered, moved to another field, or
    encrypted under a key Argus does not have."""


class UnknownKeyError(DecryptionError):
    """A well-formed token encrypted under a key that is neither the primary nor a fallback."""

    def __init__(self, key_id: str):
        super().__init__(
            f"the value is encrypted under key {key_id}, which is neither "
            f"ARGUS_ENCRYPTION_KEY nor in ARGUS_ENCRYPTION_KEY_FALLBACKS; {ADD_FALLBACK}"
        )
        self.key_id = key_id


class RotationError(Exception):
    """Rotation re-encrypted what it could but some tokens cannot be decrypted.

    ``rotated`` counts the values re-encrypted per "app.Model.field"; ``failures`` maps
    "app.Model.field" to ``{reason: [pk, ...]}``.
    """

    def __init__(self, rotated: dict[str, int], failures: dict[str, dict[str, list]]):
        lines = []
        for label, reasons in failures.items():
            for reason, pks in reasons.items():
                shown = ", ".join(str(pk) for pk in pks[:10]) + (", …" if len(pks) > 10 else "")
                lines.append(f"  {label}: {_plural(len(pks), 'row')} {reason} (pk {shown})")
        total = sum(len(pks) for reasons in failures.values() for pks in reasons.values())
        super().__init__(
            f"{_plural(total, 'encrypted value')} could not be re-encrypted:\n" + "\n".join(lines)
        )
        self.rotated = rotated
        self.failures = failures


def key_id(key: bytes) -> str:
    """A short stable name for ``key`` (8 hex digits) that reveals nothing of it."""
    return hashlib.sha256(b"argus encryption key id\x00" + key).hexdigest()[:8]


def current_key_id() -> str:
    """The id of ``ARGUS_ENCRYPTION_KEY``, the key new values are encrypted under."""
    return key_id(settings.ARGUS_ENCRYPTION_KEYS[0])


@lru_cache(maxsize=8)
def _keyring(keys: tuple[bytes, ...]) -> dict[str, AESGCM]:
    ring: dict[str, AESGCM] = {}
    for key in keys:
        ring.setdefault(key_id(key), AESGCM(key))
    return ring


def _associated_data(context: str) -> bytes:
    return f"argus:{VERSION}:{context}".encode()


def encrypt(value: Any, *, context: str) -> str:
    """The token for the JSON-serialisable ``value`` in the field named by ``context``,
    under the primary key. Raises ``TypeError`` when ``value`` is not JSON-serialisable."""
    keys = tuple(settings.ARGUS_ENCRYPTION_KEYS)
    kid = key_id(keys[0])
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(value, separators=(",", ":")).encode()
    sealed = _keyring(keys)[kid].encrypt(nonce, plaintext, _associated_data(context))
    return f"{VERSION}:{kid}:{base64.urlsafe_b64encode(nonce + sealed).decode('ascii')}"


def _parse(token: str) -> tuple[str, bytes]:
    """The key id and the nonce + ciphertext of ``token``; ``DecryptionError`` when malformed."""
    match = TOKEN.fullmatch(token) if isinstance(token, str) else None
    if match is None:
        raise DecryptionError(
            "the stored value is not an Argus encrypted token (v1:<key id>:<data>); "
            "it was damaged or written around Argus"
        )
    try:
        blob = base64.b64decode(match[2], altchars=b"-_", validate=True)
    except binascii.Error:
        blob = b""
    if len(blob) < NONCE_BYTES + TAG_BYTES:
        raise DecryptionError(f"the token under key {match[1]} is truncated or damaged")
    return match[1], blob


def decrypt(token: str, *, context: str) -> Any:
    """The value ``token`` holds, decrypted with the key its key id names.

    Raises ``UnknownKeyError`` (a ``DecryptionError``) when that key is neither the primary
    nor a fallback, and ``DecryptionError`` when the token is malformed, was altered or
    belongs to another field than ``context``.
    """
    kid, blob = _parse(token)
    cipher = _keyring(tuple(settings.ARGUS_ENCRYPTION_KEYS)).get(kid)
    if cipher is None:
        raise UnknownKeyError(kid)
    try:
        plaintext = cipher.decrypt(
            blob[:NONCE_BYTES], blob[NONCE_BYTES:], _associated_data(context)
        )
    except InvalidTag:
        raise DecryptionError(
            f"the token under key {kid} fails authentication: it was altered, or it "
            f"belongs to another field than {context}"
        ) from None
    return json.loads(plaintext)


def token_key_id(token: str) -> str:
    """The id of the key ``token`` was encrypted under; ``DecryptionError`` when malformed."""
    return _parse(token)[0]


def is_current(token: str) -> bool:
    """Whether ``token`` is under the primary key; ``DecryptionError`` when malformed."""
    return token_key_id(token) == current_key_id()


class EncryptedField(models.TextField):
    """One encrypted value, stored as its token; ``""`` when there is none.

    The attribute holds the token, never the plaintext, so reading rows costs no
    decryption: write ``obj.secrets = field.encrypt(value)`` and read
    ``field.decrypt(obj.secrets)``, with ``field = Model._meta.get_field("secrets")``.
    Saving anything but a token raises ``ValueError``.

    The context (associated data) is "app_label.ModelName.field_name": renaming the model
    or the field would leave stored tokens undecryptable, so pass ``context=`` with the old
    name when renaming.
    """

    description = "Encrypted value"
    # Never in forms, blank meaning "no value"; not repeated in migrations.
    FIXED = {"editable": False, "default": "", "blank": True}

    def __init__(self, *args, context: str | None = None, **kwargs):
        for option, value in self.FIXED.items():
            kwargs.setdefault(option, value)
        super().__init__(*args, **kwargs)
        self.pinned_context = context
        self.context = context

    def contribute_to_class(self, cls, name, private_only=False):
        super().contribute_to_class(cls, name, private_only=private_only)
        self.context = self.pinned_context or f"{cls._meta.label}.{name}"

    def deconstruct(self):
        name, _, args, kwargs = super().deconstruct()
        for option, value in self.FIXED.items():
            current = getattr(self, option)
            if current == value:
                kwargs.pop(option, None)
            else:
                kwargs[option] = current
        if self.pinned_context:
            kwargs["context"] = self.pinned_context
        return name, "argus.crypto.EncryptedField", args, kwargs

    def get_prep_value(self, value):
        value = super().get_prep_value(value)
        if value and not TOKEN.fullmatch(value):
            raise ValueError(
                f"{self.context} stores tokens from field.encrypt(value), never plain values"
            )
        return value

    def encrypt(self, value: Any) -> str:
        """The token for ``value`` in this field; ``""`` for ``None``."""
        return "" if value is None else encrypt(value, context=self.context)

    def decrypt(self, token: str) -> Any:
        """The value ``token`` holds; ``None`` for ``""``. Raises ``DecryptionError``."""
        return decrypt(token, context=self.context) if token else None


def encrypted_fields() -> list[tuple[type[models.Model], EncryptedField]]:
    """Every encrypted field of the installed models, with its model (proxies left out)."""
    return [
        (model, field)
        for model in apps.get_models()
        if not model._meta.proxy
        for field in model._meta.local_fields
        if isinstance(field, EncryptedField)
    ]


def _label(model: type[models.Model], field: EncryptedField) -> str:
    return f"{model._meta.label}.{field.name}"


def _under_old_keys(model: type[models.Model], field: EncryptedField) -> models.QuerySet:
    current = f"{VERSION}:{current_key_id()}:"
    return (
        model._base_manager.exclude(**{field.attname: ""})
        .exclude(**{f"{field.attname}__startswith": current})
        .order_by("pk")
    )


def pending() -> dict[str, int]:
    """How many values each encrypted field ("app.Model.field") holds under older keys."""
    return {
        _label(model, field): _under_old_keys(model, field).count()
        for model, field in encrypted_fields()
    }


def reencrypt(model: type[models.Model], field: EncryptedField, pk: Any, token: str) -> bool:
    """Replace the row's ``token`` with the same value under the primary key.

    Compare-and-swap: ``False`` when the row no longer holds ``token`` (a writer changed or
    deleted it meanwhile; its value stands). Raises ``DecryptionError`` when ``token``
    cannot be decrypted.
    """
    fresh = encrypt(decrypt(token, context=field.context), context=field.context)
    rows = model._base_manager.filter(pk=pk, **{field.attname: token})
    return rows.update(**{field.attname: fresh}) == 1


def rotate(*, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt under the primary key every value an older key holds, ``batch_size`` rows
    per query, each row by compare-and-swap so it can run while Argus writes.

    Returns how many values each field ("app.Model.field") had re-encrypted. Raises
    ``RotationError`` at the end, after rotating all it could, when some tokens cannot be
    decrypted (unknown key, damaged).
    """
    if batch_size < 1:
        raise ValueError("batch_size must be at least 1")
    rotated: dict[str, int] = {}
    failures: dict[str, dict[str, list]] = {}
    for model, field in encrypted_fields():
        label = _label(model, field)
        rotated[label] = 0
        rows = _under_old_keys(model, field)
        last = None
        while True:
            page = rows if last is None else rows.filter(pk__gt=last)
            batch = list(page.values_list("pk", field.attname)[:batch_size])
            if not batch:
                break
            for pk, token in batch:
                try:
                    if reencrypt(model, field, pk, token):
                        rotated[label] += 1
                except UnknownKeyError as exc:
                    reason = f"under unknown key {exc.key_id} ({ADD_FALLBACK} and run again)"
                    failures.setdefault(label, {}).setdefault(reason, []).append(pk)
                except DecryptionError:
                    reason = "cannot be decrypted (altered or damaged; enter those values again)"
                    failures.setdefault(label, {}).setdefault(reason, []).append(pk)
            last = batch[-1][0]
    if failures:
        raise RotationError(rotated, failures)
    return rotated


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"
