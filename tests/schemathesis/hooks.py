"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

The run authenticates with a few fixed principals: the admin, a plain user, a user whose
sessions /logout may end, a user for the endpoints that check the caller's password again,
and a browser session in cookie mode. Three things need more than a fixed Authorization
header, and each is done here, right before the request is sent:

* Stateful testing follows links (GET /admin/users yields ids that
  POST /admin/users/{user}/disable accepts, GET /users/me/sessions yields session ids...),
  so without a guard the run soon disables, deletes or signs out its own principals, and
  every later request is an uninformative 401. Such requests are pointed at a sacrificial
  user or session instead: the operation is still exercised, only not on the run's own
  identity.
* POST /session/refresh and POST /session/logout are authenticated by the session cookies
  and a CSRF token equal to the CSRF cookie (double submit). Without them every request was
  403 csrf_failed, and schemathesis warned that they "returned only 401/403". They get the
  cookies of a cookie-mode session (signed in with POST /session when there is none), and
  the CSRF token wherever the case sends one (header or form field): a case that sends none
  still checks the refusal. Each response's Set-Cookie is followed, as a browser would: a
  refresh rotates the cookies, a logout (or a refused refresh) deletes them, and the next
  request signs in again.
* POST /users/me/mfa/totp and POST /users/me/password need the caller's password in the
  body (a token alone must not turn on a second factor or change the password); without it
  every request was 403 (the password change's hidden behind the 429s of its session's
  bound on wrong passwords). Every other case of each gets the right one, so both the
  success and the refusal of a wrong password are exercised; a password change that
  succeeds makes its new password the one to send.
* POST /token authenticates by its body, not by a header: with the generated fields alone
  every answer is 400 invalid_grant, or 401 invalid_client whenever a case names a
  client_id (or sends a client_secret), which most cases do. So no case was ever accepted,
  and under a seed where one phase drew 90% of 401s, `missing_auth` failed the run (seed
  4242 did; 20261125 passed by luck). Every other schema-valid case is replaced by a valid
  password grant of a user of its own, which also checks the document's 200 answer.

One answer is not a failure: schemathesis sends a form body that is not an object (`AAA`)
as "incorrect type", but application/x-www-form-urlencoded has no such thing: `AAA` is a
form with one field, `AAA`, empty (WHATWG URL, application/x-www-form-urlencoded parsing).
The cookie endpoints' form has only optional fields and ignores unknown ones, so with the
session's cookies and CSRF header such a request rightly succeeds. `filter_failure` drops
that one report (the output counts what it drops); every other failure stands.
"""

import os
import threading

import requests
import schemathesis
from schemathesis import GenerationMode

PROTECTED = {
    v.strip().lower()
    for v in os.environ.get("TESSERA_SCHEMA_PROTECTED", "").split(",")
    if v.strip()
}
VICTIM_USER = os.environ.get("TESSERA_SCHEMA_VICTIM_USER", "schema-victim")
VICTIM_SESSION = os.environ.get("TESSERA_SCHEMA_VICTIM_SESSION", "no-such-session")
BASE_URL = os.environ.get("TESSERA_SCHEMA_BASE_URL", "")
PASSWORD = os.environ.get("TESSERA_SCHEMA_PASSWORD", "")
COOKIE_USER = os.environ.get("TESSERA_SCHEMA_COOKIE_USER", "")
TOKEN_USER = os.environ.get("TESSERA_SCHEMA_TOKEN_USER", "")

# crates/server/src/session.rs
ACCESS_COOKIE = "__Host-tessera_at"
REFRESH_COOKIE = "__Secure-tessera_rt"
CSRF_COOKIE = "__Host-tessera_csrf"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"
SESSION_COOKIES = (ACCESS_COOKIE, REFRESH_COOKIE, CSRF_COOKIE)

COOKIE_OPERATIONS = {"/session/refresh", "/session/logout"}
# The body field that carries the caller's password, by operation.
PASSWORD_FIELDS = {
    "/users/me/mfa/totp": "password",
    "/users/me/password": "current_password",
}


class CookieSession:
    """The cookies of one cookie-mode sign-in, kept as a browser's jar would keep them."""

    def __init__(self):
        self.cookies = {}
        self.lock = threading.Lock()

    def current(self):
        """The jar's cookies, after signing in when it holds no usable session."""
        with self.lock:
            if REFRESH_COOKIE not in self.cookies or CSRF_COOKIE not in self.cookies:
                self._sign_in()
            return dict(self.cookies)

    def follow(self, set_cookies):
        """Applies a response's Set-Cookie values."""
        with self.lock:
            self._apply(set_cookies)

    def _sign_in(self):
        response = requests.post(
            f"{BASE_URL}/session",
            data={"username": COOKIE_USER, "password": PASSWORD},
            timeout=30,
        )
        if response.status_code != 200:
            raise RuntimeError(
                f"cookie-mode sign-in of {COOKIE_USER} failed: {response.status_code} "
                f"{response.text}"
            )
        self.cookies = {}
        self._apply(response.raw.headers.getlist("Set-Cookie"))

    def _apply(self, set_cookies):
        for line in set_cookies:
            pair, _, attributes = line.partition(";")
            name, _, value = pair.strip().partition("=")
            if name not in SESSION_COOKIES:
                continue
            deleted = any(
                a.strip().lower() == "max-age=0" for a in attributes.split(";")
            )
            if deleted or not value:
                self.cookies.pop(name, None)
            else:
                self.cookies[name] = value


SESSION = CookieSession()
# The password of the user behind PASSWORD_FIELDS' operations, as it is now.
REAUTH_PASSWORD = [PASSWORD]
PASSWORD_CALLS = {path: 0 for path in PASSWORD_FIELDS}
TOKEN_CALLS = [0]


def _with_cookie_session(case):
    cookies = SESSION.current()
    headers = dict(case.headers or {})
    headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
    csrf = cookies.get(CSRF_COOKIE, "")
    for name in list(headers):
        if name.lower() == CSRF_HEADER:
            headers[name] = csrf
    case.headers = headers
    if isinstance(case.body, dict) and isinstance(case.body.get(CSRF_FIELD), str):
        case.body[CSRF_FIELD] = csrf


def _with_password(case):
    path = case.operation.path
    field = PASSWORD_FIELDS[path]
    if not (isinstance(case.body, dict) and isinstance(case.body.get(field), str)):
        return
    PASSWORD_CALLS[path] += 1
    if PASSWORD_CALLS[path] % 2:
        case.body[field] = REAUTH_PASSWORD[0]


def _with_password_grant(case):
    # Only schema-valid cases: a schema-invalid one made valid would be accepted, and
    # reported as such (negative_data_rejection).
    meta = case.meta
    if meta is None or meta.generation.mode != GenerationMode.POSITIVE:
        return
    if not isinstance(case.body, dict):
        return
    TOKEN_CALLS[0] += 1
    if TOKEN_CALLS[0] % 2:
        # RFC 6749 §4.3.2, the public client's (no client_id: the default one).
        case.body = {"grant_type": "password", "username": TOKEN_USER, "password": PASSWORD}


def _spare_own_principals(case):
    params = case.path_parameters
    if not params:
        return
    for name, replacement in (("user", VICTIM_USER), ("id", VICTIM_SESSION)):
        value = params.get(name)
        if isinstance(value, str) and value.strip().lower() in PROTECTED:
            params[name] = replacement


@schemathesis.hook
def before_call(context, case, kwargs):
    path = case.operation.path
    if path in COOKIE_OPERATIONS:
        _with_cookie_session(case)
    elif path in PASSWORD_FIELDS:
        _with_password(case)
    elif path == "/token" and case.method.upper() == "POST":
        _with_password_grant(case)
    _spare_own_principals(case)


@schemathesis.hook
def after_call(context, case, response):
    path = case.operation.path
    if path in COOKIE_OPERATIONS:
        SESSION.follow(response.headers.get("set-cookie", []))
    elif (
        path == "/users/me/password"
        and 200 <= response.status_code < 300
        and isinstance(case.body, dict)
        and isinstance(case.body.get("new_password"), str)
    ):
        REAUTH_PASSWORD[0] = case.body["new_password"]


@schemathesis.hook
def filter_failure(context, failure, case, response):
    return not (
        getattr(failure, "code", None) == "ST201"
        and case.operation.path in COOKIE_OPERATIONS
        and case.body is not None
        and not isinstance(case.body, dict)
    )
