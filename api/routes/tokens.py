"""/v1/tokens: admins issue and revoke API tokens (also `firegrid api token create`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Response

from api.auth import Actor, allow, issue_token, revoke_token
from api.deps import Conn
from api.schemas import RowId, TokenCreated, TokenInfo, TokenRequest
from devices import queries
from devices.queries import Row

router = APIRouter(prefix="/v1/tokens", tags=["tokens"])

Admin = Annotated[Actor, allow("tokens:manage")]


@router.get("", response_model=list[TokenInfo], summary="List tokens (never the tokens themselves)")
def list_tokens(_: Admin, conn: Conn, revoked: bool = False) -> list[Row]:
    return queries.tokens(conn, revoked=revoked)


@router.post("", status_code=201, response_model=TokenCreated,
             summary="Issue a token; answered once, only its hash is kept")
def create(body: TokenRequest, actor: Admin, conn: Conn, response: Response) -> TokenCreated:
    token_id, token = issue_token(conn, body.name, body.role, body.worker_id,
                                  actor=actor.history_name)
    response.headers["Cache-Control"] = "no-store"
    return TokenCreated(id=token_id, name=body.name, role=body.role, worker_id=body.worker_id,
                        token=token)


@router.post("/{token_id}/revoke", response_model=TokenInfo,
             summary="Revoke a token: it is refused from now on")
def revoke(token_id: RowId, actor: Admin, conn: Conn) -> Row:
    revoke_token(conn, token_id, actor=actor.history_name)  # NotFound for an unknown id
    row = queries.token(conn, token_id)
    assert row is not None  # tokens are revoked, never deleted
    return row
