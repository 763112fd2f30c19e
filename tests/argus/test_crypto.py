"""Encryption at rest: tokens, the encrypted field, key fallbacks and key rotation."""

import base64
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import call_command, load_command_class
from django.core.management.base import CommandError
from django.test import override_settings

from argus import crypto, env
from argus.crypto import DecryptionError, EncryptedField, UnknownKeyError
from tests.argus.test_settings import NAMES, PRODUCTION, load_settings
from tests.support import processes
from tools.models import MCPServer

CONTEXT = "tests.Thing.secret"
OLD = bytes(range(32))
UNKNOWN = bytes(range(100, 132))
FIELD = "tools.MCPServer.secrets"


def b64(key: bytes) -> str:
    return base64.urlsafe_b64encode(key).decode().rstrip("=")


def primary() -> bytes:
    return settings.ARGUS_ENCRYPTION_KEYS[0]


def under(*keys: bytes):
    """Settings where ``keys[0]`` encrypts and all of ``keys`` decrypt."""
    return override_settings(ARGUS_ENCRYPTION_KEYS=list(keys))


def tampered(token: str, position: int) -> str:
    """``token`` with one byte of its nonce + ciphertext flipped."""
    version, kid, data = token.split(":")
    blob = bytearray(base64.urlsafe_b64decode(data))
    blob[position] ^= 0x01
    return f"{version}:{kid}:{base64.urlsafe_b64encode(bytes(blob)).decode()}"


# --- tokens -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value", [{"TOKEN": "x", "other": "ünïcødé ✓"}, "plain", ["a", 1, None], 0, None, {}]
)
def test_round_trip(value):
    token = crypto.encrypt(value, context=CONTEXT)

    assert token.isascii()
    assert token.startswith(f"v1:{crypto.key_id(primary())}:")
    assert crypto.decrypt(token, context=CONTEXT) == value
    assert crypto.is_current(token)
    # A random nonce per encryption: equal values do not give equal tokens.
    assert crypto.encrypt(value, context=CONTEXT) != token


def test_key_id_is_short_stable_and_reveals_nothing():
    kid = crypto.key_id(OLD)

    assert kid == crypto.key_id(bytes(range(32)))
    assert len(kid) == 8
    assert int(kid, 16) >= 0
    assert kid != crypto.key_id(UNKNOWN)
    assert kid not in (OLD.hex(), b64(OLD))
    assert not OLD.hex().startswith(kid)


@pytest.mark.parametrize("position", [0, 11, 12, 20, -1])
def test_a_flipped_byte_fails_authentication(position):
    token = crypto.encrypt({"TOKEN": "x"}, context=CONTEXT)

    with pytest.raises(DecryptionError, match="fails authentication: it was altered"):
        crypto.decrypt(tampered(token, position), context=CONTEXT)


def test_a_token_does_not_decrypt_in_another_field():
    token = crypto.encrypt({"TOKEN": "x"}, context="tools.MCPServer.secrets")

    with pytest.raises(DecryptionError, match=r"belongs to another field than agents\.Agent\.key"):
        crypto.decrypt(token, context="agents.Agent.key")


@pytest.mark.parametrize(
    "token",
    [
        "",
        "secret",
        "v2:00000000:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:XYZ:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:0123abcd:AAAA",
        "v1:0123abcd:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        "v1:0123abcd:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\n",
        "v1:0123abcd:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA+/",
    ],
)
def test_malformed_tokens_are_refused(token):
    with pytest.raises(DecryptionError):
        crypto.decrypt(token, context=CONTEXT)
    with pytest.raises(DecryptionError):
        crypto.token_key_id(token)


def test_unknown_key_says_to_add_the_fallback():
    with under(UNKNOWN):
        token = crypto.encrypt("x", context=CONTEXT)

    with pytest.raises(UnknownKeyError) as error:
        crypto.decrypt(token, context=CONTEXT)

    assert error.value.key_id == crypto.key_id(UNKNOWN)
    assert f"encrypted under key {crypto.key_id(UNKNOWN)}" in str(error.value)
    assert "add the old key to ARGUS_ENCRYPTION_KEY_FALLBACKS" in str(error.value)


def test_a_fallback_key_decrypts_but_never_encrypts():
    with under(OLD):
        token = crypto.encrypt({"TOKEN": "old"}, context=CONTEXT)

    with under(primary(), OLD):
        assert crypto.decrypt(token, context=CONTEXT) == {"TOKEN": "old"}
        assert crypto.token_key_id(token) == crypto.key_id(OLD)
        assert not crypto.is_current(token)
        fresh = crypto.encrypt({"TOKEN": "old"}, context=CONTEXT)
        assert crypto.token_key_id(fresh) == crypto.key_id(primary())
        assert crypto.is_current(fresh)


# --- settings ---------------------------------------------------------------------------------

SETTING_NAMES = [
    *NAMES, "ARGUS_ENCRYPTION_KEY_FALLBACKS", "ARGUS_ENCRYPTION_KEY_FALLBACKS_FILE",
]  # fmt: skip


@pytest.fixture
def environment(monkeypatch, tmp_path):
    """A production environment with a fresh data dir; returns a setter."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ARGUS_DATA_DIR", str(tmp_path / "data"))
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)

    def set_env(**values):
        for name, value in values.items():
            monkeypatch.setenv(name, value)

    return set_env


def test_settings_list_the_keys_primary_first(environment):
    loaded = load_settings()
    primary_key = base64.urlsafe_b64decode(PRODUCTION["ARGUS_ENCRYPTION_KEY"] + "=")
    assert loaded["ARGUS_ENCRYPTION_KEYS"] == [primary_key]
    assert loaded["ARGUS_ENCRYPTION_KEY_FALLBACKS"] == []

    environment(ARGUS_ENCRYPTION_KEY_FALLBACKS=f" {b64(OLD)} , {b64(UNKNOWN)}==")
    loaded = load_settings()
    assert loaded["ARGUS_ENCRYPTION_KEYS"] == [primary_key, OLD, UNKNOWN]


def test_fallbacks_from_a_file(environment, tmp_path):
    secret = tmp_path / "fallbacks"
    secret.write_text(f"{b64(OLD)},\n{b64(UNKNOWN)}\n")
    environment(ARGUS_ENCRYPTION_KEY_FALLBACKS_FILE=str(secret))

    assert load_settings()["ARGUS_ENCRYPTION_KEYS"][1:] == [OLD, UNKNOWN]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("too-short", "key 1 of 1 is not 32 bytes in URL-safe base64"),
        (f"{b64(OLD)},{b64(OLD)[:-2]}", "key 2 of 2 is not 32 bytes in URL-safe base64"),
        (f"{b64(OLD)},,{b64(UNKNOWN)}", "key 2 of 3 is empty"),
        (f"{b64(OLD)},", "key 2 of 2 is empty"),
        (f"{b64(OLD)},{b64(OLD + b'!')}", "key 2 of 2 is not 32 bytes"),
    ],
)
def test_bad_fallbacks_name_the_variable_and_position(environment, value, message):
    environment(ARGUS_ENCRYPTION_KEY_FALLBACKS=value)

    with pytest.raises(env.SettingError) as error:
        load_settings()

    assert str(error.value).startswith(f"ARGUS_ENCRYPTION_KEY_FALLBACKS: {message}")
    assert "previous values of ARGUS_ENCRYPTION_KEY" in str(error.value)
    assert b64(OLD) not in str(error.value)


def test_fallbacks_in_both_variable_and_file_are_refused(environment, tmp_path):
    secret = tmp_path / "fallbacks"
    secret.write_text(b64(OLD))
    environment(
        ARGUS_ENCRYPTION_KEY_FALLBACKS=b64(OLD), ARGUS_ENCRYPTION_KEY_FALLBACKS_FILE=str(secret)
    )

    with pytest.raises(env.SettingError, match="ARGUS_ENCRYPTION_KEY_FALLBACKS: set either"):
        load_settings()


def test_bad_primary_keeps_its_message(environment):
    environment(ARGUS_ENCRYPTION_KEY="too-short", ARGUS_ENCRYPTION_KEY_FALLBACKS=b64(OLD))

    with pytest.raises(env.SettingError, match=r"^ARGUS_ENCRYPTION_KEY: must be 32 random bytes"):
        load_settings()


# --- the field --------------------------------------------------------------------------------


def secrets_field() -> EncryptedField:
    return MCPServer._meta.get_field("secrets")


def test_field_knows_its_context_and_deconstructs_cleanly():
    field = secrets_field()

    assert field.context == FIELD
    assert (field.editable, field.default, field.blank) == (False, "", True)
    name, path, args, kwargs = field.deconstruct()
    assert (name, path, args, kwargs) == (
        "secrets",
        "argus.crypto.EncryptedField",
        [],
        {"verbose_name": "secrets"},
    )
    assert EncryptedField(*args, **kwargs).deconstruct()[1:] == (path, args, kwargs)


def test_field_keeps_a_pinned_context_and_other_options():
    field = EncryptedField("key", context="agents.Agent.api_key", blank=False)
    field.set_attributes_from_name("renamed")

    _, _, _, kwargs = field.deconstruct()
    assert kwargs == {"verbose_name": "key", "context": "agents.Agent.api_key", "blank": False}
    assert EncryptedField(**kwargs).deconstruct()[3] == kwargs


def test_field_encrypts_for_itself():
    field = secrets_field()

    assert field.encrypt(None) == ""
    assert field.decrypt("") is None
    token = field.encrypt({"TOKEN": "x"})
    assert field.decrypt(token) == {"TOKEN": "x"}
    assert crypto.decrypt(token, context=FIELD) == {"TOKEN": "x"}
    with pytest.raises(DecryptionError):
        crypto.decrypt(token, context="tools.MCPServer.headers")


def test_encrypted_fields_lists_the_server_secrets():
    assert (MCPServer, secrets_field()) in crypto.encrypted_fields()
    assert all(isinstance(field, EncryptedField) for _, field in crypto.encrypted_fields())


def server(organization, name: str, secrets: str) -> MCPServer:
    return MCPServer.objects.create(
        organization=organization, name=name, transport="stdio", command="true", secrets=secrets
    )


def token(row: MCPServer) -> str:
    return MCPServer.objects.values_list("secrets", flat=True).get(pk=row.pk)


def test_the_row_holds_the_token_and_refuses_plain_values(organization):
    row = server(organization, "one", secrets_field().encrypt({"TOKEN": "x"}))

    fetched = MCPServer.objects.get(pk=row.pk)
    assert fetched.secrets.startswith("v1:")
    assert fetched.decrypted_secrets() == {"TOKEN": "x"}
    with pytest.raises(ValueError, match=r"tools\.MCPServer\.secrets stores tokens"):
        server(organization, "two", {"TOKEN": "x"})
    with pytest.raises(ValueError, match="never plain values"):
        MCPServer.objects.filter(pk=row.pk).update(secrets="hunter2")


# --- rotation ---------------------------------------------------------------------------------


@pytest.fixture
def rotating():
    """Settings mid-rotation: the test key is primary, OLD the fallback."""
    with under(primary(), OLD):
        yield


def encrypt_old(value) -> str:
    with under(OLD):
        return secrets_field().encrypt(value)


def run(*args) -> str:
    out = StringIO()
    call_command("rotate-encryption-key", *args, stdout=out, stderr=StringIO())
    return out.getvalue()


@pytest.mark.django_db
def test_rotation_re_encrypts_old_tokens_and_leaves_current_ones(organization, rotating):
    olds = [server(organization, f"old-{n}", encrypt_old({"TOKEN": f"v{n}"})) for n in range(5)]
    current = server(organization, "current", secrets_field().encrypt({"TOKEN": "now"}))
    empty = server(organization, "empty", "")
    current_token = token(current)
    assert crypto.pending()[FIELD] == 5

    assert crypto.rotate(batch_size=2)[FIELD] == 5

    for number, row in enumerate(olds):
        assert crypto.is_current(token(row))
        assert secrets_field().decrypt(token(row)) == {"TOKEN": f"v{number}"}
    assert token(current) == current_token
    assert token(empty) == ""
    assert crypto.pending()[FIELD] == 0
    assert crypto.rotate()[FIELD] == 0
    # The old key can go now.
    with under(primary()):
        assert MCPServer.objects.get(pk=olds[0].pk).decrypted_secrets() == {"TOKEN": "v0"}


@pytest.mark.django_db
def test_rotation_never_overwrites_a_concurrent_write(organization, rotating, monkeypatch):
    row = server(organization, "raced", encrypt_old({"TOKEN": "stale"}))
    other = server(organization, "calm", encrypt_old({"TOKEN": "calm"}))
    stale = token(row)
    written = secrets_field().encrypt({"TOKEN": "written meanwhile"})
    reencrypt = crypto.reencrypt

    def writer_gets_there_first(model, field, pk, old_token):
        # Between the batch read and the compare-and-swap, someone saves the row.
        if pk == row.pk:
            MCPServer.objects.filter(pk=pk).update(secrets=written)
        return reencrypt(model, field, pk, old_token)

    monkeypatch.setattr(crypto, "reencrypt", writer_gets_there_first)

    assert crypto.rotate()[FIELD] == 1

    assert token(row) == written
    assert crypto.is_current(token(other))
    # Called on its own, the compare-and-swap answers whether it replaced the value.
    assert reencrypt(MCPServer, secrets_field(), row.pk, stale) is False
    assert token(row) == written


@pytest.mark.django_db
def test_rotation_reports_what_it_cannot_decrypt_after_rotating_the_rest(organization, rotating):
    with under(UNKNOWN):
        lost = [server(organization, f"lost-{n}", secrets_field().encrypt("x")) for n in range(2)]
    fine = server(organization, "fine", encrypt_old({"TOKEN": "ok"}))
    damaged = server(organization, "damaged", encrypt_old({"TOKEN": "bad"}))
    MCPServer.objects.filter(pk=damaged.pk).update(secrets=tampered(token(damaged), 20))

    with pytest.raises(crypto.RotationError) as error:
        crypto.rotate(batch_size=1)

    message = str(error.value)
    assert message.startswith("3 encrypted values could not be re-encrypted:")
    pks = ", ".join(str(row.pk) for row in lost)
    assert (
        f"{FIELD}: 2 rows under unknown key {crypto.key_id(UNKNOWN)} (add the old key to "
        f"ARGUS_ENCRYPTION_KEY_FALLBACKS and run again) (pk {pks})"
    ) in message
    assert f"{FIELD}: 1 row cannot be decrypted (altered or damaged" in message
    assert f"(pk {damaged.pk})" in message
    assert error.value.rotated[FIELD] == 1
    assert crypto.is_current(token(fine))
    assert crypto.pending()[FIELD] == 3


# --- the command ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_command_checks_rotates_and_checks_again(organization, rotating):
    for number in range(3):
        server(organization, f"old-{number}", encrypt_old({"TOKEN": "x"}))
    server(organization, "current", secrets_field().encrypt({"TOKEN": "y"}))

    with pytest.raises(CommandError, match="3 values still under old keys") as failure:
        run("--check")
    assert failure.value.returncode == 1

    out = run("--batch-size", "2")
    assert f"{FIELD}: 3 values re-encrypted" in out
    kid = crypto.key_id(primary())
    assert f"3 values re-encrypted; all encrypted values are under the current key {kid}." in out

    out = run("--check")
    assert f"{FIELD}: 0 values under old keys" in out
    assert f"All encrypted values are under the current key {kid}." in out


@pytest.mark.django_db
def test_command_fails_on_unknown_keys(organization, rotating):
    with under(UNKNOWN):
        lost = server(organization, "lost", secrets_field().encrypt("x"))
    server(organization, "old", encrypt_old("y"))

    out = StringIO()
    with pytest.raises(CommandError) as failure:
        call_command("rotate-encryption-key", stdout=out)

    assert f"{FIELD}: 1 value re-encrypted" in out.getvalue()
    assert "1 encrypted value could not be re-encrypted" in str(failure.value)
    assert f"unknown key {crypto.key_id(UNKNOWN)}" in str(failure.value)
    assert f"(pk {lost.pk})" in str(failure.value)
    assert failure.value.returncode == 1


@pytest.mark.parametrize("size", ["0", "-3", "many"])
def test_command_refuses_a_bad_batch_size(size):
    with pytest.raises(CommandError, match=r"argument --batch-size: (must be at least 1|expected)"):
        run("--batch-size", size)


def test_help_describes_the_procedure():
    command = load_command_class("argus", "rotate-encryption-key")
    text = command.create_parser("argus", "rotate-encryption-key").format_help()

    assert "1. Generate a new key" in text
    assert "ARGUS_ENCRYPTION_KEY_FALLBACKS" in text
    assert "4. Remove the old key from ARGUS_ENCRYPTION_KEY_FALLBACKS" in text


@pytest.mark.django_db(transaction=True)
def test_console_script_rotates(organization):
    with under(OLD):
        row = server(organization, "old", secrets_field().encrypt({"TOKEN": "x"}))
    child = processes.child_env(ARGUS_ENCRYPTION_KEY_FALLBACKS=b64(OLD))

    def argus(*args):
        return subprocess.run(
            [sys.executable, "-m", "argus", "rotate-encryption-key", *args],
            env=child,
            cwd=processes.ROOT,
            capture_output=True,
            text=True,
            timeout=120,
        )

    check = argus("--check")
    assert check.returncode == 1, check.stdout + check.stderr
    assert "1 value still under old keys" in check.stderr

    rotated = argus()
    assert rotated.returncode == 0, rotated.stderr
    assert f"{FIELD}: 1 value re-encrypted" in rotated.stdout

    check = argus("--check")
    assert check.returncode == 0, check.stderr
    assert crypto.is_current(token(row))
