"""Plain HTTP against a real Argus process, as a browser would do it."""

import http.cookiejar
import re
import urllib.error
import urllib.parse
import urllib.request


def get(url, opener=None, timeout=5):
    """(status, body), or (None, "") when nothing answers."""
    opener = opener or urllib.request.build_opener()
    try:
        with opener.open(url, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()
    except OSError:
        return None, ""


def submit(opener, url, fields, timeout=30):
    """Open the form page at ``url`` and post ``fields`` with its CSRF token;
    returns (status, final URL, body) after redirects."""
    status, page = get(url, opener, timeout)
    assert status == 200, (status, page[:500])
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)
    data = urllib.parse.urlencode({"csrfmiddlewaretoken": token, **fields}).encode()
    request = urllib.request.Request(url, data=data, headers={"Referer": url})  # noqa: S310
    with opener.open(request, timeout=timeout) as response:
        return response.status, response.geturl(), response.read().decode()


def browser():
    """An opener that keeps cookies, like a browser session."""
    jar = http.cookiejar.CookieJar()
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))


def log_in(base_url, email, password, timeout=30, opener=None):
    """Fill in the login form; returns (status, final URL, body) after redirects."""
    return submit(
        opener or browser(),
        f"{base_url}/accounts/login/",
        {"login": email, "password": password},
        timeout,
    )
