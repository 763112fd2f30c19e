"""Accounts (allauth): every page in the console's look, sign-in, the signup policy,
email verification, password reset and change, TOTP, rate limits and the audit trail."""

import base64
import hashlib
import hmac
import re
import struct
import time

import pytest
from allauth.account.models import EmailAddress
from allauth.mfa.models import Authenticator
from django.core import mail
from django.urls import reverse

from orgs import services
from orgs.choices import Role
from orgs.models import AuditEvent, Membership, User
from orgs.permissions import Principal
from tests.support.personas import PASSWORD, make_user

NEW_PASSWORD = "a much longer passphrase 42"
INLINE_SCRIPT = re.compile(r"<script(?![^>]*\bsrc=)[^>]*>", re.IGNORECASE)


# --- helpers -------------------------------------------------------------------------------


def html(response) -> str:
    return response.content.decode()


def assert_console_look(response, *, layout: str, signed_in: bool) -> str:
    """The page is drawn by the console (brand, stylesheet, shell), not allauth's bare
    templates, and carries no inline script."""
    assert response.status_code == 200, response
    page = html(response)
    assert "argus/argus.css" in page
    assert 'class="brand-name">Argus</span>' in page
    assert f'class="{"layout-console" if signed_in else "layout-plain"}"' in page
    if layout == "entrance":
        assert 'class="card auth-card' in page
        assert 'class="auth-title"' in page
    else:
        assert 'class="account-manage"' in page
        assert 'class="page-title"' in page
    assert "Menu:" not in page  # allauth's own layout
    assert not INLINE_SCRIPT.search(page)
    return page


def sign_in(client, email, password=PASSWORD, **extra):
    return client.post(reverse("account_login"), {"login": email, "password": password}, **extra)


def signed_in_user_id(client):
    return client.session.get("_auth_user_id")


def link_in_last_mail(path_pattern: str) -> str:
    """The path of the link matching ``path_pattern`` in the last email sent."""
    match = re.search(rf"https?://[^/\s]+({path_pattern})", mail.outbox[-1].body)
    assert match, mail.outbox[-1].body
    return match.group(1)


def totp_code(secret: str, step: int = 0) -> str:
    """RFC 6238 (SHA-1, 30 s, 6 digits) for the current time step plus ``step``."""
    counter = int(time.time()) // 30 + step
    key = base64.b32decode(secret, casefold=True)
    digest = hmac.new(key, struct.pack(">Q", counter), hashlib.sha1).digest()
    offset = digest[-1] & 0x0F
    value = (struct.unpack(">I", digest[offset : offset + 4])[0] & 0x7FFFFFFF) % 10**6
    return f"{value:06d}"


def fresh_totp_code(secret: str) -> str:
    """A code that stays valid for the next few seconds (never one about to roll over)."""
    remaining = 30 - time.time() % 30
    if remaining < 3:
        time.sleep(remaining + 0.1)
    return totp_code(secret)


def wrong_totp_code(secret: str) -> str:
    valid = {totp_code(secret, step) for step in (-1, 0, 1)}
    return next(code for code in ("000000", "111111", "222222", "333333") if code not in valid)


def reauthenticate(client, password=PASSWORD):
    """Confirm the password, as allauth asks before MFA changes."""
    response = client.post(reverse("account_reauthenticate"), {"password": password})
    assert response.status_code == 302, html(response)


def activate_totp(client, django_capture_on_commit_callbacks) -> str:
    """Turn TOTP on through the MFA pages; returns the secret."""
    reauthenticate(client)
    response = client.get(reverse("mfa_activate_totp"))
    secret = response.context["form"].secret
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(reverse("mfa_activate_totp"), {"code": fresh_totp_code(secret)})
    assert response.status_code == 302, html(response)
    assert response.url == reverse("mfa_view_recovery_codes")
    return secret


def recovery_codes(user) -> list[str]:
    authenticator = Authenticator.objects.get(user=user, type=Authenticator.Type.RECOVERY_CODES)
    return authenticator.wrap().get_unused_codes()


@pytest.fixture
def admin(organization):
    user = make_user("grace@acme.test")
    Membership.objects.create(user=user, organization=organization, role=Role.ADMIN)
    return user


@pytest.fixture
def invitation_link(admin, organization):
    """The link (path) of a pending invitation of newcomer@acme.test as VIEWER."""
    principal = Principal.member(admin, organization)
    _, token = services.invite(principal, "newcomer@acme.test", Role.VIEWER)
    return reverse("orgs:invitation_accept", args=[token])


@pytest.fixture
def signed_in(client, member):
    """``client`` signed in as ``member`` through the login form."""
    response = sign_in(client, member.email)
    assert response.status_code == 302
    return client


# --- every page in the console's look ---------------------------------------------------


@pytest.mark.parametrize(
    "url_name",
    [
        "account_login",
        "account_signup",  # closed by default (invite): the "signup closed" page
        "account_reset_password",
        "account_reset_password_done",
        "account_reset_password_from_key_done",
        "account_email_verification_sent",
    ],
)
def test_entrance_pages_render_in_the_plain_card(client, db, url_name):
    assert_console_look(client.get(reverse(url_name)), layout="entrance", signed_in=False)


def test_signup_form_renders_in_the_plain_card(client, db, settings):
    settings.ARGUS_SIGNUP = "open"
    page = assert_console_look(
        client.get(reverse("account_signup")), layout="entrance", signed_in=False
    )
    assert 'name="email"' in page
    assert 'autocomplete="new-password"' in page


def test_bad_password_reset_link_renders_in_the_plain_card(client, db):
    response = client.get(
        reverse("account_reset_password_from_key", kwargs={"uidb36": "zz", "key": "nope"})
    )
    page = assert_console_look(response, layout="entrance", signed_in=False)
    assert reverse("account_reset_password") in page


@pytest.mark.parametrize(
    "url_name", ["account_logout", "account_change_password", "account_email", "mfa_index"]
)
def test_account_pages_render_in_the_console_shell(signed_in, url_name):
    assert_console_look(signed_in.get(reverse(url_name)), layout="manage", signed_in=True)


def test_reauthentication_renders_in_the_card_inside_the_console(signed_in):
    page = assert_console_look(
        signed_in.get(reverse("account_reauthenticate")), layout="entrance", signed_in=True
    )
    assert 'autocomplete="current-password"' in page


def test_email_page_lists_the_address_with_its_state(signed_in, member):
    page = html(signed_in.get(reverse("account_email")))
    assert member.email in page
    assert 'class="badge badge-green"' in page  # verified
    assert 'type="radio"' in page


def test_totp_pages_render_in_the_console_shell(
    signed_in, member, django_capture_on_commit_callbacks
):
    response = signed_in.get(reverse("mfa_activate_totp"))
    assert response.url.startswith(reverse("account_reauthenticate"))
    reauthenticate(signed_in)
    response = signed_in.get(reverse("mfa_activate_totp"))
    page = assert_console_look(response, layout="manage", signed_in=True)
    secret = response.context["form"].secret
    assert secret in page
    assert 'src="data:image/svg+xml;base64,' in page
    assert 'autocomplete="one-time-code"' in page

    activate_totp(signed_in, django_capture_on_commit_callbacks)

    page = assert_console_look(
        signed_in.get(reverse("mfa_view_recovery_codes")), layout="manage", signed_in=True
    )
    codes = recovery_codes(member)
    assert codes and all(code in page for code in codes)
    for url_name in ("mfa_index", "mfa_deactivate_totp", "mfa_generate_recovery_codes"):
        assert_console_look(signed_in.get(reverse(url_name)), layout="manage", signed_in=True)
    assert_console_look(
        signed_in.get(reverse("mfa_reauthenticate")), layout="entrance", signed_in=True
    )

    download = signed_in.get(reverse("mfa_download_recovery_codes"))
    assert download.status_code == 200
    assert "attachment" in download["Content-Disposition"]
    assert download.content.decode().split() == codes


# --- signing in ---------------------------------------------------------------------------


def test_login_form_fields(client, db):
    page = html(client.get(reverse("account_login")))
    assert re.search(r'<input type="email" name="login"[^>]*autocomplete="username"', page)
    assert re.search(
        r'<input type="password" name="password"[^>]*autocomplete="current-password"', page
    )
    assert f'href="{reverse("account_reset_password")}">Forgot your password?</a>' in page


@pytest.mark.parametrize("policy", ["invite", "closed"])
def test_login_page_offers_no_signup_when_it_is_closed(client, db, settings, policy):
    settings.ARGUS_SIGNUP = policy
    assert "Create an account" not in html(client.get(reverse("account_login")))


def test_login_page_offers_signup_when_it_is_open(client, db, settings):
    settings.ARGUS_SIGNUP = "open"
    page = html(client.get(reverse("account_login")))
    assert f'href="{reverse("account_signup")}">Create an account</a>' in page


def test_login_page_offers_signup_to_an_invited_visitor(client, invitation_link):
    client.get(invitation_link)
    page = html(client.get(reverse("account_login")))
    assert f'href="{reverse("account_signup")}">Create an account</a>' in page


def test_wrong_password_shows_an_error_and_signs_nobody_in(client, member):
    response = sign_in(client, member.email, "not the password")
    assert response.status_code == 200
    page = html(response)
    assert 'class="form-errors" role="alert" id="login-errors"' in page
    assert "not correct" in page
    assert re.search(
        r'name="password"[^>]*aria-invalid="true" aria-describedby="login-errors"', page
    )
    assert f'value="{member.email}"' in page  # the address is kept, the password is not
    assert signed_in_user_id(client) is None


def test_login_is_case_insensitive_and_lands_on_the_dashboard(client, member):
    response = sign_in(client, "ADA@Acme.TEST")
    assert response.status_code == 302
    assert response.url == "/"
    assert signed_in_user_id(client) == str(member.pk)


def test_login_keeps_the_next_page(client, member):
    response = client.get(reverse("account_login"), {"next": "/profile/"})
    assert "Sign in to continue." in html(response)
    response = client.post(
        reverse("account_login"),
        {"login": member.email, "password": PASSWORD, "next": "/profile/"},
    )
    assert response.url == "/profile/"


def test_logout_signs_out(signed_in):
    response = signed_in.post(reverse("account_logout"))
    assert response.status_code == 302
    assert signed_in_user_id(signed_in) is None


# --- signup policy --------------------------------------------------------------------------


def test_closed_signup_says_so_and_creates_nobody(client, db, settings):
    settings.ARGUS_SIGNUP = "closed"
    response = client.get(reverse("account_signup"))
    assert "Sign-up is closed" in html(response)
    response = client.post(
        reverse("account_signup"),
        {"email": "someone@example.test", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert "Sign-up is closed" in html(response)
    assert not User.objects.filter(email__iexact="someone@example.test").exists()


def test_open_signup_creates_an_account(client, db, settings):
    settings.ARGUS_SIGNUP = "open"
    settings.ACCOUNT_EMAIL_VERIFICATION = "none"
    response = client.post(
        reverse("account_signup"),
        {"email": "someone@example.test", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302, html(response)
    assert response.url == "/"
    user = User.objects.get(email="someone@example.test")
    assert signed_in_user_id(client) == str(user.pk)
    assert not user.memberships.exists()


def test_signup_errors_are_tied_to_their_fields(client, db, settings):
    settings.ARGUS_SIGNUP = "open"
    response = client.post(
        reverse("account_signup"),
        {"email": "not an address", "password1": NEW_PASSWORD, "password2": "something else"},
    )
    assert response.status_code == 200
    page = html(response)
    assert re.search(r'<input type="email" name="email"[^>]*aria-invalid="true"', page)
    assert re.search(
        r'<input type="email" name="email"[^>]*aria-describedby="id_email_error"', page
    )
    assert '<ul class="errorlist" id="id_email_error"><li>Enter a valid email address.' in page
    assert re.search(r'name="password2"[^>]*aria-invalid="true"', page)
    assert '<ul class="errorlist" id="id_password2_error">' in page
    assert '<div class="form-errors" role="alert">' in page
    assert not User.objects.filter(email__iexact="not an address").exists()


def test_invite_policy_closes_plain_signup(client, db):
    response = client.get(reverse("account_signup"))
    assert "Sign-up is closed" in html(response)


def test_invited_signup_only_accepts_the_invited_address_and_joins(
    client, invitation_link, organization
):
    link = invitation_link
    assert client.get(link).status_code == 200  # the token now waits in the session
    page = assert_console_look(
        client.get(reverse("account_signup")), layout="entrance", signed_in=False
    )
    assert 'name="email"' in page

    data = {"email": "someone-else@acme.test", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD}
    response = client.post(reverse("account_signup"), data)
    assert response.status_code == 200
    assert "Your invitation is for newcomer@acme.test" in html(response)
    assert not User.objects.filter(email="someone-else@acme.test").exists()

    response = client.post(reverse("account_signup"), {**data, "email": "Newcomer@acme.test"})
    assert response.status_code == 302, html(response)
    assert response.url == link
    user = User.objects.get(email__iexact="newcomer@acme.test")
    assert signed_in_user_id(client) == str(user.pk)

    assert "Accept and join" in html(client.get(link))
    response = client.post(link)
    assert response.status_code == 302
    assert response.url == "/"
    membership = Membership.objects.get(user=user, organization=organization)
    assert membership.role == Role.VIEWER


# --- email verification (mandatory when not embedded) -----------------------------------------


def test_open_signup_must_verify_the_address_before_signing_in(client, db, settings):
    settings.ARGUS_SIGNUP = "open"
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    response = client.post(
        reverse("account_signup"),
        {"email": "someone@example.test", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert signed_in_user_id(client) is None
    assert len(mail.outbox) == 1
    assert mail.outbox[0].body.startswith("Hello from Argus")
    confirm_path = link_in_last_mail(r"/accounts/confirm-email/[^/\s]+/")

    # Signing in is refused until the link is followed.
    response = sign_in(client, "someone@example.test", NEW_PASSWORD)
    assert response.status_code == 302
    assert response.url == reverse("account_email_verification_sent")
    assert signed_in_user_id(client) is None

    page = assert_console_look(client.get(confirm_path), layout="entrance", signed_in=False)
    assert "someone@example.test" in page
    response = client.post(confirm_path)
    assert response.status_code == 302
    assert EmailAddress.objects.get(email="someone@example.test").verified

    client.logout()
    response = sign_in(client, "someone@example.test", NEW_PASSWORD)
    assert response.status_code == 302
    assert response.url == "/"
    assert signed_in_user_id(client) is not None


def test_an_unknown_confirmation_link_says_so(client, db):
    response = client.get(reverse("account_confirm_email", args=["not-a-key"]))
    assert_console_look(response, layout="entrance", signed_in=False)


def test_invited_signup_is_verified_by_the_invitation(client, invitation_link, settings):
    settings.ACCOUNT_EMAIL_VERIFICATION = "mandatory"
    link = invitation_link
    client.get(link)
    response = client.post(
        reverse("account_signup"),
        {"email": "newcomer@acme.test", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    assert response.url == link
    assert EmailAddress.objects.get(email="newcomer@acme.test").verified
    assert signed_in_user_id(client) is not None


# --- passwords --------------------------------------------------------------------------------


def test_password_reset_by_the_emailed_link(client, member):
    response = client.post(reverse("account_reset_password"), {"email": "Ada@acme.test"})
    assert response.status_code == 302
    assert response.url == reverse("account_reset_password_done")
    key_path = link_in_last_mail(r"/accounts/password/reset/key/[^/\s]+/")

    response = client.get(key_path)  # allauth moves the key into the session
    assert response.status_code == 302
    form_path = response.url
    page = assert_console_look(client.get(form_path), layout="entrance", signed_in=False)
    assert 'name="password1"' in page

    response = client.post(form_path, {"password1": NEW_PASSWORD, "password2": NEW_PASSWORD})
    assert response.status_code == 302
    assert response.url == reverse("account_reset_password_from_key_done")

    member.refresh_from_db()
    assert member.check_password(NEW_PASSWORD)
    assert sign_in(client, member.email, PASSWORD).status_code == 200  # old one refused
    assert sign_in(client, member.email, NEW_PASSWORD).url == "/"


def test_password_reset_for_an_unknown_address_reveals_nothing(client, db):
    response = client.post(reverse("account_reset_password"), {"email": "nobody@acme.test"})
    assert response.status_code == 302
    assert response.url == reverse("account_reset_password_done")


def test_password_change(signed_in, member):
    response = signed_in.post(
        reverse("account_change_password"),
        {"oldpassword": "wrong", "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 200
    assert re.search(r'name="oldpassword"[^>]*aria-invalid="true"', html(response))

    response = signed_in.post(
        reverse("account_change_password"),
        {"oldpassword": PASSWORD, "password1": NEW_PASSWORD, "password2": NEW_PASSWORD},
    )
    assert response.status_code == 302
    member.refresh_from_db()
    assert member.check_password(NEW_PASSWORD)
    assert signed_in_user_id(signed_in) == str(member.pk)  # still signed in


# --- two-factor authentication (TOTP) -----------------------------------------------------


def test_totp_activation_refuses_a_wrong_code(signed_in, member):
    reauthenticate(signed_in)
    response = signed_in.get(reverse("mfa_activate_totp"))
    secret = response.context["form"].secret
    response = signed_in.post(reverse("mfa_activate_totp"), {"code": wrong_totp_code(secret)})
    assert response.status_code == 200
    assert re.search(r'name="code"[^>]*aria-invalid="true"', html(response))
    assert not Authenticator.objects.filter(user=member).exists()


def test_totp_then_sign_in_asks_for_the_code(
    client, signed_in, member, organization, django_capture_on_commit_callbacks
):
    secret = activate_totp(client, django_capture_on_commit_callbacks)
    types = set(Authenticator.objects.filter(user=member).values_list("type", flat=True))
    assert types == {Authenticator.Type.TOTP, Authenticator.Type.RECOVERY_CODES}
    assert AuditEvent.objects.filter(
        organization=organization, action="account.mfa_add", actor=member
    ).exists()

    client.post(reverse("account_logout"))
    response = sign_in(client, member.email)
    assert response.status_code == 302
    assert response.url == reverse("mfa_authenticate")
    assert signed_in_user_id(client) is None
    page = assert_console_look(client.get(response.url), layout="entrance", signed_in=False)
    assert 'autocomplete="one-time-code"' in page

    response = client.post(reverse("mfa_authenticate"), {"code": wrong_totp_code(secret)})
    assert response.status_code == 200
    assert re.search(r'name="code"[^>]*aria-invalid="true"', html(response))
    assert signed_in_user_id(client) is None

    response = client.post(reverse("mfa_authenticate"), {"code": fresh_totp_code(secret)})
    assert response.status_code == 302
    assert response.url == "/"
    assert signed_in_user_id(client) == str(member.pk)


def test_a_recovery_code_signs_in_once(
    client, signed_in, member, django_capture_on_commit_callbacks
):
    activate_totp(client, django_capture_on_commit_callbacks)
    code = recovery_codes(member)[0]
    client.post(reverse("account_logout"))

    sign_in(client, member.email)
    response = client.post(reverse("mfa_authenticate"), {"code": code})
    assert response.status_code == 302
    assert response.url == "/"
    assert signed_in_user_id(client) == str(member.pk)
    assert code not in recovery_codes(member)

    client.post(reverse("account_logout"))
    sign_in(client, member.email)
    response = client.post(reverse("mfa_authenticate"), {"code": code})
    assert response.status_code == 200
    assert signed_in_user_id(client) is None


# --- rate limits (allauth's, kept in the Redis cache) ------------------------------------------


def test_repeated_failures_lock_the_account_for_a_while(client, member):
    for _ in range(5):
        assert sign_in(client, member.email, "not the password").status_code == 200
    response = sign_in(client, member.email)  # even the right password now
    assert response.status_code == 200
    assert "Too many failed login attempts" in html(response)
    assert signed_in_user_id(client) is None


def test_too_many_sign_in_attempts_from_one_address_get_429(client, member):
    # A documentation address of our own, so no other test's attempts count here.
    address = {"REMOTE_ADDR": "198.51.100.23"}
    statuses = [
        sign_in(client, f"nobody{n}@acme.test", "x", **address).status_code for n in range(31)
    ]
    assert statuses[:30] == [200] * 30
    assert statuses[30] == 429


# --- audit trail ----------------------------------------------------------------------------


def test_logins_and_failures_are_audited(client, member, organization):
    sign_in(client, member.email, "not the password")
    assert AuditEvent.objects.filter(
        organization=organization, action="account.login_failed", actor=member
    ).exists()
    sign_in(client, member.email)
    assert AuditEvent.objects.filter(
        organization=organization, action="account.login", actor=member
    ).exists()
