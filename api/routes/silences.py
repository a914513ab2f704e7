"""/v1/silences: mute the pages for a device (test mode), a building (renovation) or a
grid (a drill) for a while. Alerts and incidents are still recorded; only nobody is paged
(alerts/silences.py has the rules). Each caller sees and creates silences in their own area
only (auth.area_scope); a target outside it reads as unknown."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field

from alerts import silences
from alerts.queries import Row
from api.auth import Actor, allow, area_scope
from api.deps import Conn
from api.schemas import Limit, Offset, Page, Paged, QueryId, RowId, page
from devices.models import EARLIEST, LATEST, Ident

router = APIRouter(prefix="/v1/silences", tags=["silences"])

Reader = Annotated[Actor, allow("incidents:read")]
Writer = Annotated[Actor, allow("silences:write")]

When = Annotated[AwareDatetime, Field(ge=EARLIEST, le=LATEST)]


class SilenceBody(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)
    device_id: Ident | None = Field(None, description="give exactly one of device_id, "
                                                      "building_id, grid_id")
    building_id: Ident | None = None
    grid_id: Ident | None = None
    starts_at: When | None = Field(None, description="default: now")
    ends_at: When = Field(description=f"at most {silences.LONGEST.days} days after starts_at")
    reason: str = Field(min_length=1, max_length=silences.REASON_MAX,
                        description="why, e.g. 'detector in test mode during repair'")


class SilenceOut(BaseModel):
    id: int
    device_id: str | None
    building_id: str | None
    grid_id: str | None
    starts_at: datetime
    ends_at: datetime
    reason: str
    created_by: str
    created_at: datetime
    running: bool = Field(description="muting pages right now")


@router.get("", response_model=Page[SilenceOut],
            summary="Silences in your area, latest ending first")
def list_silences(actor: Reader, conn: Conn,
                  active: Annotated[bool, Query(description="only those not over yet")] = True,
                  device_id: QueryId = None, building_id: QueryId = None,
                  grid_id: QueryId = None, limit: Limit = 100,
                  offset: Offset = 0) -> Paged[Row]:
    rows = silences.list_silences(conn, active_only=active, scope=area_scope(conn, actor),
                                  device_id=device_id, building_id=building_id,
                                  grid_id=grid_id, limit=limit + 1, offset=offset)
    return page(rows, limit, offset)


@router.post("", status_code=201, response_model=SilenceOut,
             summary="Mute the pages for a device, building or grid until ends_at")
def create_silence(body: SilenceBody, actor: Writer, conn: Conn) -> Row:
    return silences.create(conn, actor.history_name, device_id=body.device_id,
                           building_id=body.building_id, grid_id=body.grid_id,
                           starts_at=body.starts_at, ends_at=body.ends_at, reason=body.reason,
                           scope=area_scope(conn, actor))


@router.post("/{silence_id}/end", response_model=SilenceOut,
             summary="End a silence now; ending one that is over changes nothing")
def end_silence(silence_id: RowId, actor: Writer, conn: Conn) -> Row:
    return silences.end(conn, silence_id, actor.history_name, scope=area_scope(conn, actor))
