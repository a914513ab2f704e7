"""Who may call what. The routes are walked from the app's own OpenAPI document, so a route
added later is checked here without anyone remembering to list it."""

from __future__ import annotations

import re
from pathlib import Path

from api.app import create_app
from api.auth import PERMISSIONS, ROLES
from runtime.settings import load_settings
from tests.api_support import api, settings  # noqa: F401 (fixtures)

# The only operation anyone may call without a token.
# /healthz, and the providers' receipt pushes, which carry a secret in the URL instead
# (api/routes/callbacks.py; tests/test_voice.py checks a wrong one is a 404).
PUBLIC = {("get", "/healthz"), ("post", "/v1/voice/report"), ("post", "/v1/sms/reply")}


def _operations() -> list[tuple[str, str, dict]]:
    schema = create_app(load_settings()).openapi()
    return [(method, path, op) for path, ops in schema["paths"].items()
            for method, op in ops.items()]


def _roles(op: dict) -> list[str]:
    return [role for requirement in op.get("security", []) for role in
            requirement.get("HTTPBearer", [])]


def _concrete(path: str) -> str:
    # Any well-formed id will do: the role check comes before the lookup.
    return re.sub(r"\{(\w+)\}", lambda m: "1" if m.group(1).endswith(("token_id", "ticket_id"))
                  else "X1", path)


def test_every_operation_declares_its_roles():
    operations = _operations()
    assert len(operations) > 30
    for method, path, op in operations:
        if (method, path) in PUBLIC:
            assert not _roles(op), f"{method} {path} is public but declares roles"
            continue
        roles = _roles(op)
        assert roles, f"{method.upper()} {path} declares no roles: guard it with auth.allow()"
        assert set(roles) <= set(ROLES), (method, path, roles)
        assert tuple(roles) in PERMISSIONS.values(), (method, path, roles)


def test_every_operation_refuses_other_roles_and_missing_tokens(api):
    for method, path, op in _operations():
        if (method, path) in PUBLIC:
            continue
        url = _concrete(path)
        body = {} if "requestBody" in op else None
        r = api.anonymous().request(method, url, json=body)
        assert r.status_code == 401, (method, path, r.status_code)
        r = api.client.request(method, url, json=body,
                               headers={"Authorization": "Bearer fg_not-a-real-token"})
        assert r.status_code == 401, (method, path, r.status_code)
        for role in set(ROLES) - set(_roles(op)):
            r = api.as_(role).request(method, url, json=body)
            assert r.status_code == 403, (role, method, path, r.status_code)


# The policy of issue 3 stated independently of PERMISSIONS: (role, method, path, allowed).
POLICY = [
    # field technicians: register, move, maintenance, rotate, retire, claim; read the registry
    ("field_technician", "POST", "/v1/devices", True),
    ("field_technician", "POST", "/v1/devices/X1/move", True),
    ("field_technician", "POST", "/v1/devices/X1/state", True),
    ("field_technician", "POST", "/v1/devices/X1/rotate-credentials", True),
    ("field_technician", "POST", "/v1/devices/X1/retire", True),
    ("field_technician", "POST", "/v1/quarantine/X1/claim", True),
    ("field_technician", "POST", "/v1/tickets/1/close", True),
    ("field_technician", "GET", "/v1/devices/X1/history", True),
    ("field_technician", "GET", "/v1/quarantine", True),
    ("field_technician", "PUT", "/v1/buildings/X1", False),
    ("field_technician", "PUT", "/v1/workers/X1", False),
    ("field_technician", "POST", "/v1/tokens", False),
    # duty officers read the registry, tickets, quarantine and history; change nothing
    ("street_duty", "GET", "/v1/devices", True),
    ("street_duty", "GET", "/v1/tickets", True),
    ("community_duty", "GET", "/v1/quarantine", True),
    ("community_duty", "GET", "/v1/devices/X1/history", True),
    ("street_duty", "POST", "/v1/devices", False),
    ("community_duty", "POST", "/v1/devices/X1/retire", False),
    ("community_duty", "POST", "/v1/tickets/1/close", False),
    ("street_duty", "PUT", "/v1/grids/X1", False),
    ("street_duty", "POST", "/v1/roster", False),
    # grid workers and leaders: nothing in the registry (their screen is the duty console)
    ("grid_worker", "GET", "/v1/devices", False),
    ("grid_worker", "GET", "/v1/tickets", False),
    ("grid_leader", "GET", "/v1/devices/X1", False),
    ("grid_leader", "GET", "/v1/buildings", False),
    ("grid_leader", "POST", "/v1/devices", False),
    ("grid_worker", "GET", "/v1/workers", False),
    # admins: everything, including people, hierarchy and tokens
    ("admin", "PUT", "/v1/streets/X1", True),
    ("admin", "PUT", "/v1/workers/X1", True),
    ("admin", "POST", "/v1/roster", True),
    ("admin", "GET", "/v1/tokens", True),
    ("admin", "POST", "/v1/devices", True),
]


def test_the_issue_policy(api):
    wrong = []
    for role, method, path, allowed in POLICY:
        r = api.as_(role).request(method, path, json={} if method != "GET" else None)
        if allowed != (r.status_code not in (401, 403)) or (not allowed and r.status_code != 403):
            wrong.append(f"{role} {method} {path}: {r.status_code} {r.text[:120]}")
    assert not wrong, "\n".join(wrong)


def test_docs_permission_table_matches_the_code():
    """docs/api.md's table is the one humans read; it must say what PERMISSIONS says."""
    text = (Path(__file__).parent.parent / "docs" / "api.md").read_text(encoding="utf-8")
    table = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("| `") and len(cells) == 1 + len(ROLES):
            table[cells[0].strip("`")] = tuple(r for r, c in zip(ROLES, cells[1:], strict=True)
                                               if c == "yes")
    assert table == {name: tuple(r for r in ROLES if r in roles)
                     for name, roles in PERMISSIONS.items()}
