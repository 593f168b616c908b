"""Schemathesis hooks for scripts/schemathesis.sh (loaded through SCHEMATHESIS_HOOKS).

The run authenticates with a few fixed principals: the admin, a plain user and a user whose
sessions /logout may end. Stateful testing follows links (GET /admin/users yields ids that
POST /admin/users/{user}/disable accepts, GET /users/me/sessions yields session ids...), so
without a guard the run soon disables, deletes or signs out its own principals, and every
later request is an uninformative 401. This hook points such requests at a sacrificial user
or session instead: the operation is still exercised, only not on the run's own identity.
"""

import os

import schemathesis

PROTECTED = {
    v.strip().lower()
    for v in os.environ.get("TESSERA_SCHEMA_PROTECTED", "").split(",")
    if v.strip()
}
VICTIM_USER = os.environ.get("TESSERA_SCHEMA_VICTIM_USER", "schema-victim")
VICTIM_SESSION = os.environ.get("TESSERA_SCHEMA_VICTIM_SESSION", "no-such-session")


@schemathesis.hook
def before_call(context, case, kwargs):
    params = case.path_parameters
    if not params:
        return
    for name, replacement in (("user", VICTIM_USER), ("id", VICTIM_SESSION)):
        value = params.get(name)
        if isinstance(value, str) and value.strip().lower() in PROTECTED:
            params[name] = replacement
