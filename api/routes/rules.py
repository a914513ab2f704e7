"""/v1/rules: the alert rules in force (what raises an alert, what confirms a fire, the
ladders and the repeat), read and changed at run time (alerts/ruleset.py). A change is a
whole rules file, validated like the file, saved as a new version; every alert core takes
it at once, for new incidents and the next rung of open ones. Street duty and admins
change them; duty officers read them.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter
from pydantic import BaseModel, ConfigDict, Field

from alerts import ruleset
from api.auth import Actor, allow
from api.deps import AppSettings, Conn
from api.schemas import Limit

router = APIRouter(prefix="/v1/rules", tags=["rules"])

Reader = Annotated[Actor, allow("people:read")]
Writer = Annotated[Actor, allow("rules:write")]


class Rules(BaseModel):
    version: int | None = Field(description="the saved version in force; null: the file's")
    body: str = Field(description="the rules file (TOML), as alerts/default_rules.toml")


class RulesBody(BaseModel):
    model_config = ConfigDict(extra="forbid")
    body: str = Field(min_length=1, max_length=100_000, description="a whole rules file")
    note: str | None = Field(None, max_length=2000, description="why it changed")


class Version(BaseModel):
    version: int
    note: str | None
    created_by: str
    created_at: datetime


@router.get("", response_model=Rules, summary="The rules in force, to read or edit")
def get_rules(_: Reader, conn: Conn, settings: AppSettings) -> Rules:
    version, body = ruleset.text(conn, settings.alerts.rules_file)
    return Rules(version=version, body=body)


@router.put("", response_model=Rules,
            summary="修改规则 Save new rules: every alert core follows them from the next rung")
def put_rules(body: RulesBody, actor: Writer, conn: Conn) -> Rules:
    version = ruleset.save(conn, body.body, actor.history_name, body.note)
    return Rules(version=version, body=body.body)


@router.get("/history", response_model=list[Version], summary="Saved versions, newest first")
def get_history(_: Reader, conn: Conn, limit: Limit = 50) -> list[dict[str, Any]]:
    return ruleset.history(conn, limit)
