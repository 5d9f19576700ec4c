"""Run IDs are Keel's: a client's `Idempotency-Key` maps to a run that Keel names, scoped to the API
key that sent it, so no client can take a name Keel derives (`<run>:rollback`, `<run>:compensate:<n>`,
forks) or reach another key's run."""

import re
import subprocess
import sys
import uuid
from pathlib import Path

import httpx
import pytest

from steps import ids
from tests.conftest import wait_for_approval, wait_for_run
from tests.processes import ROOT, Worker

KEEL = str(Path(sys.executable).parent / "keel")
KEEL_RUN_ID = re.compile(r"^[0-9a-f]{32}$")


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


async def new_key(api: httpx.AsyncClient, name: str, role: str = "submit") -> str:
    return (await api.post("/v1/keys", json={"name": name, "role": role})).json()["key"]


@pytest.mark.parametrize("suffix", [":rollback", ":compensate:1", ":approval:7", "-fork-00000000"])
async def test_an_idempotency_key_cannot_take_a_name_keel_derives_from_another_run(
    api: httpx.AsyncClient, service: Worker, customer: str, suffix: str
) -> None:
    """The reproduction of issue 13 item 4: a second submit key names the victim's rollback."""
    owner, attacker = await new_key(api, "owner"), await new_key(api, "attacker")
    async with service.client(timeout=30) as client:
        client.headers.pop("Authorization")
        victim = (await client.post("/v1/runs", headers=bearer(owner),
                                    json={"agent": "billing", "input": f"Upgrade customer {customer} to the enterprise plan"})).json()["run_id"]
        await wait_for_approval(api, victim)

        attack = await client.post("/v1/runs", headers={**bearer(attacker), "Idempotency-Key": f"{victim}{suffix}"},
                                   json={"agent": "probe", "input": "say hi"})
        attack_run = await wait_for_run(api, attack.json()["run_id"])
        still = (await api.get(f"/v1/runs/{victim}")).json()
        cancelled = await client.post(f"/v1/runs/{victim}/cancel", headers=bearer(owner))
    victim_run = await wait_for_run(api, victim)

    assert attack.status_code == 202
    assert KEEL_RUN_ID.match(attack.json()["run_id"]) and victim not in attack.json()["run_id"]
    assert attack_run["status"] == "succeeded" and attack_run["output"] == "hi"
    assert still["status"] == "awaiting_approval"
    assert cancelled.status_code == 200
    assert victim_run["status"] == "cancelled"


async def test_idempotency_keys_are_scoped_per_api_key(api: httpx.AsyncClient, service: Worker) -> None:
    """Issue 13 item 5: the same key from another API key is another run, and reveals nothing of the first."""
    first, second = await new_key(api, "first"), await new_key(api, "second")
    key = f"order-{uuid.uuid4()}"
    async with service.client(timeout=30) as client:
        client.headers.pop("Authorization")
        mine = await client.post("/v1/runs", headers={**bearer(first), "Idempotency-Key": key}, json={"agent": "probe", "input": "say mine"})
        again = await client.post("/v1/runs", headers={**bearer(first), "Idempotency-Key": key}, json={"agent": "probe", "input": "say mine"})
        theirs = await client.post("/v1/runs", headers={**bearer(second), "Idempotency-Key": key}, json={"agent": "probe", "input": "say theirs"})

    assert [r.status_code for r in (mine, again, theirs)] == [202, 202, 202]
    assert mine.json()["run_id"] == again.json()["run_id"] != theirs.json()["run_id"]
    assert (await wait_for_run(api, mine.json()["run_id"]))["output"] == "mine"
    assert (await wait_for_run(api, theirs.json()["run_id"]))["output"] == "theirs"


async def test_every_new_run_is_named_by_keel(api: httpx.AsyncClient) -> None:
    keyed = await api.post("/v1/runs", json={"agent": "probe", "input": "say keyed"}, headers={"Idempotency-Key": "my-own-name"})
    plain = await api.post("/v1/runs", json={"agent": "probe", "input": "say plain"})

    assert keyed.json()["run_id"] != "my-own-name"
    assert KEEL_RUN_ID.match(keyed.json()["run_id"]) and KEEL_RUN_ID.match(plain.json()["run_id"])


async def test_with_keys_off_one_implicit_owner_keeps_idempotency(start_worker) -> None:
    worker = start_worker("ids-auth-off", KEEL_AUTH="off")
    async with httpx.AsyncClient(base_url=worker.url, timeout=30) as client:
        first = await client.post("/v1/runs", json={"agent": "probe", "input": "say once"}, headers={"Idempotency-Key": "k-1"})
        second = await client.post("/v1/runs", json={"agent": "probe", "input": "say once"}, headers={"Idempotency-Key": "k-1"})
        run = await wait_for_run(client, first.json()["run_id"])

    assert first.json()["run_id"] == second.json()["run_id"]
    assert run["output"] == "once"


def test_keel_run_key_is_scoped_to_the_cli_key(service: Worker, worker_env: dict[str, str]) -> None:
    env = {**worker_env, "KEEL_PORT": str(service.port)}
    key = f"cli-{uuid.uuid4()}"

    def run() -> str:
        done = subprocess.run([KEEL, "run", "probe", "say from the cli", "--key", key], cwd=ROOT, env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
        return done.stdout.split()[1].rstrip(":")

    first, second = run(), run()

    assert first == second and KEEL_RUN_ID.match(first)


def test_derived_ids_parse_back_and_never_look_like_a_run_keel_names() -> None:
    run = ids.new_run_id()
    keyed = ids.keyed_run_id("key_0123456789ab", f"{run}:rollback")
    derived = [ids.rollback_id(run), ids.compensation_id(run, 3), ids.approval_id(run, 7), ids.ledger_key(run, 7), ids.fork_id(run)]

    assert ids.is_keel_run_id(run) and ids.is_keel_run_id(keyed)
    assert not any(ids.is_keel_run_id(name) for name in derived)
    assert ids.run_of(ids.compensation_id(run, 3)) == run and ids.run_of(run) == run
    assert ids.is_fork(ids.fork_id(run)) and not ids.is_fork(run)
    assert ids.keyed_run_id("key_a", "k") != ids.keyed_run_id("key_b", "k")
    assert ids.keyed_run_id("key_a", "k") == ids.keyed_run_id("key_a", "k")
    assert ids.undo_label(run, ids.compensation_id(run, 3)) == "compensate:3" and ids.undo_label(run, run) is None
