"""The headless bootstrap commands (createorg, createuser, createapikey) and
``audit verify``, called in-process and once through the real ``argus`` script."""

import subprocess
import sys
from datetime import timedelta
from io import StringIO
from pathlib import Path

import pytest
from allauth.account.models import EmailAddress
from django.core.management import call_command
from django.core.management.base import CommandError
from django.urls import reverse
from django.utils import timezone

from orgs import audit, services
from orgs.choices import Plan, Role
from orgs.models import ApiKey, AuditChainHead, AuditEvent, Membership, Organization, User
from orgs.permissions import Principal
from tests.support import processes

pytestmark = pytest.mark.django_db

GOOD_PASSWORD = "plum orchard lantern 42"
ARGUS = Path(sys.executable).with_name("argus")


def run(*args) -> tuple[str, str]:
    """Call a command in-process; its stdout and stderr."""
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def field(output: str, name: str) -> str:
    """The value of a ``name: value`` line of a command's output."""
    for line in output.splitlines():
        if line.startswith(f"{name}:"):
            return line.split(":", 1)[1].strip()
    raise AssertionError(f"no {name!r} line in {output!r}")


@pytest.fixture
def password_file(tmp_path):
    path = tmp_path / "password"
    path.write_text(f"  {GOOD_PASSWORD}  \nnot this line\n")
    return str(path)


def snapshot() -> tuple[int, ...]:
    """Row counts that a refused command must leave unchanged."""
    return (
        User.objects.count(),
        Organization.objects.count(),
        Membership.objects.count(),
        ApiKey.objects.count(),
        AuditEvent.objects.count(),
    )


# --- createorg --------------------------------------------------------------------------------


def test_createorg_creates_the_owner_who_can_sign_in_at_once(client, settings):
    out, _ = run("createorg", "Alpha", "--owner", "boss@alpha.test")

    organization = Organization.objects.get(slug="alpha")
    assert (organization.name, organization.plan) == ("Alpha", Plan.FREE)
    assert field(out, "slug") == "alpha"
    assert field(out, "login") == "boss@alpha.test"
    password = field(out, "password").split()[0]
    assert "shown only this once" in out
    user = User.objects.get(email="boss@alpha.test")
    assert user.check_password(password)
    assert Membership.objects.get(user=user, organization=organization).role == Role.ADMIN
    assert EmailAddress.objects.get(user=user).verified
    events = AuditEvent.objects.filter(organization=organization).order_by("seq")
    assert [(e.action, e.channel) for e in events] == [
        ("organization.create", "system"),
        ("member.add", "system"),
    ]

    # Even where addresses must be verified, the account signs in straight away.
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    response = client.post(reverse("account_login"), {"login": user.email, "password": password})
    assert response.status_code == 302, response.content[:500]
    assert client.session["_auth_user_id"] == str(user.pk)


def test_createorg_takes_the_first_line_of_the_password_file(password_file):
    out, _ = run(
        "createorg", "Beta Corp", "--owner", "owner@beta.test", "--password-file", password_file,
        "--plan", "pro", "--slug", "beta",
    )  # fmt: skip

    organization = Organization.objects.get(slug="beta")
    assert (organization.name, organization.plan) == ("Beta Corp", Plan.PRO)
    assert User.objects.get(email="owner@beta.test").check_password(GOOD_PASSWORD)
    assert field(out, "password") == "the one in the password file"
    assert GOOD_PASSWORD not in out


def test_createorg_derives_the_slug_from_the_name():
    out, _ = run("createorg", "Gamma Rays Ltd", "--owner", "g@gamma.test")
    assert field(out, "slug") == "gamma-rays-ltd"
    assert Organization.objects.filter(slug="gamma-rays-ltd").exists()


def test_createorg_keeps_an_existing_owners_password(member, password_file):
    out, _ = run("createorg", "Delta", "--owner", "ADA@acme.test", "--password-file", password_file)

    member.refresh_from_db()
    assert member.check_password("correct horse battery")
    assert field(out, "login") == member.email
    assert field(out, "password") == (
        "unchanged (the account already existed; the password file was not used)"
    )
    delta = Organization.objects.get(slug="delta")
    assert Membership.objects.get(user=member, organization=delta).role == Role.ADMIN
    assert User.objects.filter(email__iexact="ada@acme.test").count() == 1


@pytest.mark.parametrize(
    ("arguments", "file_text", "message"),
    [
        (["Acme", "--owner", "new@acme.test"], None, "The slug 'acme' is already taken"),
        (["Zeta", "--owner", "new@acme.test", "--slug", "ACME"], None, "'acme' is already taken"),
        (["Zeta", "--owner", "not-an-address"], None, "is not a valid email address"),
        (["!!!", "--owner", "new@acme.test"], None, "needs a name made of letters or digits"),
        (["Zeta", "--owner", "new@acme.test", "--plan", "gold"], None, "unknown plan 'gold'"),
        (["Zeta", "--owner", "new@acme.test"], "short\n", "the password is refused: This pass"),
        (["Zeta", "--owner", "new@acme.test"], "12345678901234\n", "entirely numeric"),
        (["Zeta", "--owner", "new@acme.test"], "", "is empty: its first line must be"),
        (["Zeta", "--owner", "new@acme.test"], "\nsecond line\n", "is empty"),
        (["Zeta", "--owner", "new@acme.test"], "   \n", "is empty"),
        (["Zeta", "--owner", "new@acme.test"], "missing", "No such file or directory"),
        (["Zeta", "--owner", "new@acme.test"], "directory", "cannot read the password file"),
        (["Zeta", "--owner", "new@acme.test"], b"\xff\xfe\xfa", "cannot read the password file"),
    ],
)
def test_createorg_refuses_bad_input_and_creates_nothing(
    organization, tmp_path, arguments, file_text, message
):
    if file_text is not None:
        path = tmp_path / "password"
        if file_text == "directory":
            path.mkdir()
        elif isinstance(file_text, bytes):
            path.write_bytes(file_text)
        elif file_text != "missing":
            path.write_text(file_text)
        arguments = [*arguments, "--password-file", str(path)]
    before = snapshot()

    with pytest.raises(CommandError, match=message):
        run("createorg", *arguments)

    assert snapshot() == before
    assert not User.objects.filter(email="new@acme.test").exists()


def test_createorg_requires_an_owner():
    with pytest.raises(CommandError, match="the following arguments are required: --owner"):
        run("createorg", "Alpha")


# --- createuser --------------------------------------------------------------------------------


def test_createuser_adds_a_new_account_with_a_generated_password(organization):
    out, _ = run("createuser", "new@acme.test", "--org", "acme", "--role", "manager")

    user = User.objects.get(email="new@acme.test")
    assert user.check_password(field(out, "password").split()[0])
    assert EmailAddress.objects.get(user=user).verified
    assert Membership.objects.get(user=user, organization=organization).role == Role.MANAGER
    assert "Added new@acme.test to Acme as Manager." in out
    event = AuditEvent.objects.filter(organization=organization).latest("seq")
    assert (event.action, event.channel, event.actor_label) == ("member.add", "system", "system")
    assert event.changes == {"role": [None, Role.MANAGER]}


def test_createuser_with_a_password_file(organization, password_file):
    out, _ = run(
        "createuser", "new@acme.test", "--org", "acme", "--role", "VIEWER",
        "--password-file", password_file,
    )  # fmt: skip

    assert User.objects.get(email="new@acme.test").check_password(GOOD_PASSWORD)
    assert field(out, "password") == "the one in the password file"


def test_createuser_adds_an_existing_account_keeping_its_password(organization, outsider):
    out, _ = run("createuser", "eve@other.test", "--org", "acme", "--role", "Operator")

    outsider.refresh_from_db()
    assert outsider.check_password("correct horse battery")
    assert field(out, "password") == "unchanged (the account already existed)"
    assert Membership.objects.get(user=outsider, organization=organization).role == Role.OPERATOR


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["new@acme.test", "--org", "nope", "--role", "VIEWER"], "no organization with the slug"),
        (["ada@acme.test", "--org", "acme", "--role", "VIEWER"], "already a member of Acme"),
        (["new@acme.test", "--org", "acme", "--role", "boss"], "unknown role 'boss'"),
        (["not-an-address", "--org", "acme", "--role", "VIEWER"], "not a valid email address"),
        (["new@acme.test", "--role", "VIEWER"], "arguments are required: --org"),
        (["new@acme.test", "--org", "acme"], "arguments are required: --role"),
    ],
)
def test_createuser_refuses_bad_input_and_creates_nothing(member, arguments, message):
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        run("createuser", *arguments)
    assert snapshot() == before


@pytest.mark.parametrize(
    ("file_text", "message"),
    [("password\n", "too common"), ("", "is empty"), (None, "No such file or directory")],
)
def test_createuser_refuses_a_bad_password_file(organization, tmp_path, file_text, message):
    path = tmp_path / "password"
    if file_text is not None:
        path.write_text(file_text)
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        run(
            "createuser", "new@acme.test", "--org", "acme", "--role", "VIEWER",
            "--password-file", str(path),
        )  # fmt: skip
    assert snapshot() == before


def test_createuser_at_the_plan_limit_leaves_no_account_behind(organization):
    for number in range(5):  # the Free plan's member limit
        user = User.objects.create_user(f"m{number}@acme.test", GOOD_PASSWORD)
        Membership.objects.create(user=user, organization=organization, role=Role.VIEWER)
    before = snapshot()

    with pytest.raises(CommandError, match="allows at most 5 members"):
        run("createuser", "sixth@acme.test", "--org", "acme", "--role", "VIEWER")

    assert snapshot() == before


# --- createapikey ------------------------------------------------------------------------------


def test_createapikey_prints_only_the_secret_on_stdout(member, organization):
    out, err = run(
        "createapikey", "--org", "acme", "--email", "Ada@Acme.test", "--scopes", "read,Execute"
    )

    secret = out.strip()
    assert out == secret + "\n"
    assert secret.startswith(services.API_KEY_PREFIX)
    key = services.authenticate_api_key(secret)
    assert key is not None
    assert (key.organization, key.created_by) == (organization, member)
    assert (key.scopes, key.role, key.expires_at) == (["read", "execute"], Role.OPERATOR, None)
    assert secret not in err
    assert key.prefix in err and "shown only this once" in err
    event = AuditEvent.objects.filter(organization=organization).latest("seq")
    assert (event.action, event.channel, event.actor) == ("apikey.create", "system", member)
    assert secret not in str(event.changes)


def test_createapikey_with_name_role_cap_and_expiry(member):
    out, _ = run(
        "createapikey", "--org", "acme", "--email", member.email, "--scopes", "read",
        "--name", "CI pipeline", "--role", "viewer", "--expires-days", "30",
    )  # fmt: skip

    key = ApiKey.objects.get(prefix=out.strip()[: len(services.API_KEY_PREFIX) + 8])
    assert (key.name, key.role) == ("CI pipeline", Role.VIEWER)
    expected = timezone.now() + timedelta(days=30)
    assert abs(key.expires_at - expected) < timedelta(minutes=1)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["--scopes", "read,destroy"], "unknown scope 'destroy'"),
        (["--scopes", " , "], "give at least one scope"),
        (["--scopes", "read", "--expires-days", "0"], "must be at least 1 day, not 0"),
        (["--scopes", "read", "--expires-days", "-3"], "must be at least 1 day, not -3"),
        (["--scopes", "read", "--expires-days", "soon"], "'soon' is not a whole number"),
        (["--scopes", "read", "--role", "admin"], "cannot give a role higher than your own"),
        (["--scopes", "read", "--role", "chief"], "unknown role 'chief'"),
        (["--scopes", "read", "--name", "   "], "Give the key a name"),
        (["--scopes", "read", "--email", "eve@other.test"], "eve@other.test is not a member"),
        (["--scopes", "read", "--email", "nobody@acme.test"], "no account with the email"),
        (["--scopes", "read", "--org", "nope"], "no organization with the slug 'nope'"),
        ([], "arguments are required: --scopes"),
    ],
)
def test_createapikey_refuses_bad_input(member, outsider, arguments, message):
    defaults = {"--org": "acme", "--email": member.email}
    for option, value in defaults.items():
        if option not in arguments:
            arguments = [*arguments, option, value]
    before = snapshot()
    with pytest.raises(CommandError, match=message):
        run("createapikey", *arguments)
    assert snapshot() == before


def test_createapikey_refuses_a_deactivated_account(member):
    User.objects.filter(pk=member.pk).update(is_active=False)
    with pytest.raises(CommandError, match="is deactivated"):
        run("createapikey", "--org", "acme", "--email", member.email, "--scopes", "read")
    assert not ApiKey.objects.exists()


# --- audit verify ------------------------------------------------------------------------------

EVENTS = 5


@pytest.fixture
def chain(organization, member):
    """Five events in Acme's chain, every hashed field filled in."""
    for number in range(1, EVENTS + 1):
        principal = Principal.member(
            member,
            organization,
            channel="console",
            ip="192.0.2.10",
            user_agent="pytest",
            request_id=f"request-{number}",
        )
        audit.record(principal, "test.event", organization, changes={"number": [None, number]})
    return organization


def verify_fails(*args) -> str:
    with pytest.raises(CommandError) as failure:
        run("audit", "verify", *args)
    return str(failure.value)


def test_verify_reports_each_intact_chain(chain, outsider):
    other = Organization.objects.get(slug="other")
    services.create_organization("Third", owner=outsider)
    audit.record(None, "login.failed", changes={"email": [None, "who@where.test"]})

    out, _ = run("audit", "verify")

    third = Organization.objects.get(slug="third")
    assert f"org:{chain.pk} (acme): 5 events verified (head " in out
    assert f"org:{other.pk} (other): 0 events verified" in out
    assert f"org:{third.pk} (third): 2 events verified (head " in out
    assert "installation: 1 event verified (head " in out
    assert "4 audit chains intact." in out

    out, _ = run("audit", "verify", "--org", "acme")
    assert out.splitlines()[0].startswith(f"org:{chain.pk} (acme): 5 events verified (head ")
    assert "1 audit chain intact." in out


TAMPERED = {
    "action": "member.remove",
    "changes": {"number": [None, 99]},
    "target_label": "Forged",
    "target_type": "orgs.membership",
    "target_id": "999",
    "actor_label": "mallory@evil.test",
    "actor_id": 424242,
    "api_key_id": 424242,
    "channel": "api",
    "created_at": timezone.now() - timedelta(days=3),
    "ip": "203.0.113.9",
    "user_agent": "curl/8",
    "request_id": "forged",
    "prev_hash": "0" * 64,
    "hash": "f" * 64,
}


@pytest.mark.parametrize("name", list(TAMPERED))
def test_verify_names_the_row_whose_field_was_edited(chain, name):
    AuditEvent.objects.filter(organization=chain, seq=3).update(**{name: TAMPERED[name]})

    message = verify_fails()

    assert f"org:{chain.pk} (acme): broken at #3: " in message
    reason = message.split("broken at #3: ", 1)[1].splitlines()[0]
    if name == "prev_hash":
        assert reason == "its link to the previous event does not match"
    else:
        assert reason == "its content does not match its hash"
    assert f"org:{chain.pk} (acme): broken at #3" in verify_fails("--org", "acme")


def test_every_hashed_field_is_tampered_in_the_test():
    assert set(audit.HASHED_FIELDS) - set(TAMPERED) == {"organization_id", "seq"}


def test_verify_names_a_renumbered_row(chain):
    AuditEvent.objects.filter(organization=chain, seq=3).update(seq=30)
    assert "broken at #3: event #3 is missing" in verify_fails()


@pytest.mark.parametrize(
    ("seq", "reason"),
    [
        (1, "event #1 is missing"),
        (3, "event #3 is missing"),
        (EVENTS, f"events #{EVENTS} to #{EVENTS} are missing"),
    ],
)
def test_verify_names_a_deleted_row(chain, seq, reason):
    AuditEvent.objects.filter(organization=chain, seq=seq).delete()
    assert f"org:{chain.pk} (acme): broken at #{seq}: {reason}" in verify_fails()


def test_verify_notices_a_forged_chain_head(chain):
    AuditChainHead.objects.filter(key=f"org:{chain.pk}").update(hash="e" * 64)
    assert "broken at #5: the chain head does not match the last event" in verify_fails()


def test_verify_of_one_organization_ignores_the_others(chain, outsider):
    other = Organization.objects.get(slug="other")
    audit.record(Principal.system(other), "test.event", other)
    AuditEvent.objects.filter(organization=other).update(action="forged")

    out, _ = run("audit", "verify", "--org", "acme")
    assert "5 events verified" in out
    message = verify_fails()
    assert f"org:{other.pk} (other): broken at #1" in message
    assert "(acme)" not in message
    assert message.startswith("1 audit chain failed verification")


def test_verify_names_the_chain_of_a_deleted_organization(chain):
    organization_id = chain.pk
    AuditEvent.objects.filter(organization=chain, seq=2).update(action="forged")
    chain.delete()  # its events stay: they are not tied to the row
    assert f"org:{organization_id} (deleted organization): broken at #2" in verify_fails()


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["verify", "--org", "nope"], "no organization with the slug 'nope'"),
        ([], "the following arguments are required: ACTION"),
        (["repair"], "invalid choice: 'repair'"),
    ],
)
def test_audit_refuses_bad_arguments(arguments, message):
    with pytest.raises(CommandError, match=message):
        run("audit", *arguments)


# --- the real console script -----------------------------------------------------------------


def argus(*args, env=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(ARGUS), *args],
        env=env or processes.child_env(),
        cwd=processes.ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.django_db(transaction=True)
def test_console_script_bootstraps_and_verifies_against_the_database(tmp_path):
    env = processes.child_env()
    password = tmp_path / "password"
    password.write_text(GOOD_PASSWORD + "\n")

    created = argus(
        "createorg", "Alpha", "--owner", "boss@alpha.test", "--password-file", str(password),
        env=env,
    )  # fmt: skip
    assert created.returncode == 0, created.stderr
    assert field(created.stdout, "slug") == "alpha"
    organization = Organization.objects.get(slug="alpha")
    owner = User.objects.get(email="boss@alpha.test")
    assert owner.check_password(GOOD_PASSWORD)

    key = argus(
        "createapikey", "--org", "alpha", "--email", owner.email, "--scopes", "read", env=env
    )
    assert key.returncode == 0, key.stderr
    secret = key.stdout.strip()
    assert key.stdout == secret + "\n"
    assert services.authenticate_api_key(secret).created_by == owner

    verified = argus("audit", "verify", "--org", "alpha", env=env)
    assert verified.returncode == 0, verified.stderr
    assert f"org:{organization.pk} (alpha): 3 events verified" in verified.stdout

    AuditEvent.objects.filter(organization=organization, seq=2).update(target_label="forged")
    broken = argus("audit", "verify", env=env)
    assert broken.returncode == 1
    assert f"org:{organization.pk} (alpha): broken at #2: its content does not match" in (
        broken.stderr
    )


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["createorg", "Alpha"], "the following arguments are required: --owner"),
        (["createorg", "Alpha", "--owner", "a@b.test", "--plan", "gold"], "unknown plan"),
        (["createuser", "a@b.test", "--org", "x", "--role", "boss"], "unknown role 'boss'"),
        (["createapikey", "--org", "x", "--email", "a@b.test", "--scopes", "all"], "unknown scope"),
        (["createapikey", "--org", "x", "--expires-days", "0"], "must be at least 1 day"),
        (["audit"], "the following arguments are required: ACTION"),
    ],
)
def test_console_script_rejects_bad_arguments_with_usage(arguments, message):
    result = argus(*arguments)
    assert result.returncode == 2
    assert "usage: argus" in result.stderr
    assert message in result.stderr
