"""The sandbox's HTTP routes: payments, mail and the fault knobs."""

import asyncio
import json
import uuid
from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException, Query, Response
from psycopg.rows import dict_row
from pydantic import BaseModel, Field

from app.sandbox.database import pool
from app.sandbox.faults import DroppedResponse, Fault, FaultCreate, add_fault, take_fault

router = APIRouter(tags=["sandbox"])
IdempotencyKey = Annotated[str, Header(alias="Idempotency-Key", min_length=1, max_length=255)]


class ChargeCreate(BaseModel):
    customer_id: str
    amount_cents: int = Field(gt=0)
    description: str


class RefundCreate(BaseModel):
    charge_id: str
    reason: str = "requested"


class MessageCreate(BaseModel):
    to: str
    subject: str
    body: str


CHARGE_COLUMNS = "charge_id, idempotency_key, customer_id, amount_cents, description, status"


@router.post("/payments/charges", status_code=201)
async def create_charge(charge: ChargeCreate, key: IdempotencyKey, response: Response) -> Any:
    """Charge a customer once per `Idempotency-Key`; a repeated key returns the original charge."""
    fault = await take_fault_or_refuse("payments", charge.model_dump_json())
    async with pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        async with conn.transaction():
            known = await (await cursor.execute("SELECT 1 FROM sandbox.customers WHERE id = %s", (charge.customer_id,))).fetchone()
            if not known:
                raise HTTPException(404, f"no customer {charge.customer_id}")
            created = await (await cursor.execute(
                f"""INSERT INTO sandbox.payments (charge_id, idempotency_key, customer_id, amount_cents, description)
                    VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING RETURNING {CHARGE_COLUMNS}""",
                (f"ch_{uuid.uuid4().hex[:16]}", key, charge.customer_id, charge.amount_cents, charge.description),
            )).fetchone()
            row = created or await (await cursor.execute(
                f"SELECT {CHARGE_COLUMNS} FROM sandbox.payments WHERE idempotency_key = %s", (key,))).fetchone()
    if (row["customer_id"], row["amount_cents"]) != (charge.customer_id, charge.amount_cents):
        raise HTTPException(409, "Idempotency-Key reused with different parameters")
    if not created:
        response.status_code = 200
    return await after_commit(fault, row)


@router.get("/payments/charges")
async def list_charges(idempotency_key: Annotated[str | None, Query()] = None,
                       customer_id: Annotated[str | None, Query()] = None) -> list[dict[str, Any]]:
    async with pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        query = f"SELECT {CHARGE_COLUMNS} FROM sandbox.payments"
        if idempotency_key is not None:
            return await (await cursor.execute(f"{query} WHERE idempotency_key = %s", (idempotency_key,))).fetchall()
        if customer_id is not None:
            return await (await cursor.execute(f"{query} WHERE customer_id = %s ORDER BY id DESC LIMIT 100", (customer_id,))).fetchall()
        return await (await cursor.execute(f"{query} ORDER BY id DESC LIMIT 100")).fetchall()


@router.post("/payments/refunds", status_code=201)
async def create_refund(refund: RefundCreate, key: IdempotencyKey, response: Response) -> Any:
    """Refund a charge in full, once per `Idempotency-Key`."""
    fault = await take_fault_or_refuse("payments", refund.model_dump_json())
    async with pool().connection() as conn:
        cursor = conn.cursor(row_factory=dict_row)
        async with conn.transaction():
            charge = await (await cursor.execute(
                "SELECT amount_cents, status FROM sandbox.payments WHERE charge_id = %s FOR UPDATE", (refund.charge_id,))).fetchone()
            if charge is None:
                raise HTTPException(404, f"no charge {refund.charge_id}")
            created = await (await cursor.execute(
                """INSERT INTO sandbox.refunds (refund_id, idempotency_key, charge_id, amount_cents) VALUES (%s, %s, %s, %s)
                   ON CONFLICT (idempotency_key) DO NOTHING RETURNING refund_id, charge_id, amount_cents""",
                (f"re_{uuid.uuid4().hex[:16]}", key, refund.charge_id, charge["amount_cents"]))).fetchone()
            if created is None:
                response.status_code = 200
                created = await (await cursor.execute(
                    "SELECT refund_id, charge_id, amount_cents FROM sandbox.refunds WHERE idempotency_key = %s", (key,))).fetchone()
            elif charge["status"] == "refunded":
                raise HTTPException(409, f"charge {refund.charge_id} is already refunded")
            await cursor.execute("UPDATE sandbox.payments SET status = 'refunded' WHERE charge_id = %s", (refund.charge_id,))
    return await after_commit(fault, created)


@router.post("/mail/messages", status_code=202)
async def send_message(message: MessageCreate, key: IdempotencyKey) -> Any:
    """Send an email once per `Idempotency-Key`."""
    fault = await take_fault_or_refuse("mail", message.model_dump_json())
    async with pool().connection() as conn:
        await conn.execute(
            """INSERT INTO sandbox.emails (message_id, idempotency_key, recipient, subject, body)
               VALUES (%s, %s, %s, %s, %s) ON CONFLICT (idempotency_key) DO NOTHING""",
            (f"msg_{uuid.uuid4().hex[:16]}", key, message.to, message.subject, message.body),
        )
        row = await (await conn.execute("SELECT message_id FROM sandbox.emails WHERE idempotency_key = %s", (key,))).fetchone()
    return await after_commit(fault, {"message_id": row[0], "status": "queued"})


@router.post("/faults", status_code=201)
async def create_fault(fault: FaultCreate) -> dict[str, int]:
    async with pool().connection() as conn:
        return {"id": await add_fault(conn, fault)}


@router.delete("/faults")
async def clear_faults() -> dict[str, int]:
    async with pool().connection() as conn:
        cursor = await conn.execute("DELETE FROM sandbox.faults")
        return {"cleared": cursor.rowcount}


async def take_fault_or_refuse(service: str, request_text: str) -> Fault | None:
    """The fault this request meets, if any; an `unavailable` one refuses it with a 503 at once, a `reject` one with a 422."""
    fault = await take_fault(service, request_text)
    if fault and fault.kind == "unavailable":
        raise HTTPException(503, f"{service} unavailable (sandbox fault)", headers={"Retry-After": f"{fault.seconds:g}"})
    if fault and fault.kind == "reject":
        raise HTTPException(422, f"{service} rejected the request (sandbox fault)")
    return fault


async def after_commit(fault: Fault | None, body: dict[str, Any]) -> Any:
    if fault and fault.kind == "delay_response":
        await asyncio.sleep(fault.seconds)
    if fault and fault.kind == "drop_response":
        return DroppedResponse()
    return json.loads(json.dumps(body, default=str))
