"""Proof under fire: real workers, SIGKILLed at random (seeded) moments, PostgreSQL restarted under
them, faults injected; then every side effect is counted with SQL.

    python -m bench.chaos --runs 30 --kills 5 --pg-restarts 1 --seed 7          (the CI configuration)
    python -m bench.chaos --runs 1000 --kills 200 --pg-restarts 3 --deadline 1800
    python -m bench.chaos --net-faults --runs 150 --workers 3 --kills 10 --seed 18

With `--net-faults` the workers reach PostgreSQL through `bench.netproxy`, which resets connections
at random and loses COMMIT replies (the server committed; the worker hears nothing).

It owns its PostgreSQL (an embedded server in a temporary folder), never the machine's. The seed and
every parameter are printed, so a failure can be replayed. Exit status 1 if an invariant breaks."""

import argparse
import asyncio
import os
import random
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import psycopg

from app.database import embedded_server, ensure_database, start_embedded_postgres
from app.schema import migrate
from bench.invariants import check
from bench.netproxy import Counts, Faults, NetProxy, ProxyThread, upstream_address
from steps.run_status import ENDED
from tests.processes import ROOT, Worker, start_scripted_model, stop

START_TIMEOUT = 300  # seconds a (re)started worker may take to answer /healthz on a loaded machine
REPORTED = ["submitted", "succeeded", "compensated", "failed", "compensation_failed", "pending", "lost", "duplicate_effects",
            "duplicate_ledger_intents", "duplicate_ledger_outcomes", "checkpoints_disagreeing_with_ledger", "checkpoint_replay_errors", "duplicate_approvals",
            "duplicate_compensations", "effects_without_ledger_outcome", "ledger_outcomes_without_effect", "ledger_outcomes_without_event",
            "kills", "pg_restarts", "connection_resets", "lost_commit_replies", "lost_autocommit_replies", "runs_recovered", "wall_seconds"]


@dataclass(frozen=True)
class Params:
    seed: int
    runs: int
    workers: int
    kills: int
    pg_restarts: int
    deadline: float
    model_failure_rate: float
    lost_responses: int
    net_faults: bool
    reset_rate: float
    lose_commit_rate: float


@dataclass
class Chaos:
    params: Params
    data_dir: Path
    url: str = ""
    workers: list[Worker] = field(default_factory=list)
    kills: int = 0
    pg_restarts: int = 0
    rng: random.Random = field(default_factory=random.Random)

    def live(self) -> list[Worker]:
        return [w for w in self.workers if w.process is not None and w.process.poll() is None]

    async def request(self, method: str, path: str, **kwargs: object) -> httpx.Response | None:
        """Send to some live worker; None if none answered (killed, or the database is restarting)."""
        live = self.live()  # once: the monkey kills workers meanwhile
        for worker in self.rng.sample(live, len(live)):
            try:
                async with worker.client(timeout=10) as client:
                    response = await client.request(method, path, **kwargs)
                if response.status_code < 500:
                    return response
            except httpx.TransportError:
                continue
        return None

    async def submit(self, key: str, text: str) -> str:
        """The run's ID (Keel's, for this idempotency key)."""
        while (response := await self.request("POST", "/v1/runs", json={"agent": "billing", "input": text}, headers={"Idempotency-Key": key})) is None:
            await asyncio.sleep(0.2)  # the same key again: at most one run, whichever worker takes it
        return response.json()["run_id"]

    async def approver(self, stop_at: float) -> None:
        while time.monotonic() < stop_at:
            response = await self.request("GET", "/v1/approvals", params={"status": "pending"})
            for approval in response.json() if response is not None and response.status_code == 200 else []:
                await self.request("POST", f"/v1/approvals/{approval['approval_id']}", json={"decision": "approve", "decided_by": "chaos"})
            await asyncio.sleep(0.5)

    async def monkey(self, window: float) -> None:
        """Kill workers and restart PostgreSQL at seeded moments within `window` seconds."""
        started = time.monotonic()
        moments = sorted([(self.rng.uniform(1, window), "kill") for _ in range(self.params.kills)]
                         + [(self.rng.uniform(window / 4, window), "pg") for _ in range(self.params.pg_restarts)])
        for at, what in moments:
            await asyncio.sleep(max(0.0, started + at - time.monotonic()))
            if what == "pg":
                await asyncio.to_thread(self.restart_postgres)
            else:
                victim = self.rng.choice(self.workers)
                if victim.process is not None and victim.process.poll() is None:
                    victim.kill()
                    self.kills += 1
                await asyncio.sleep(self.rng.uniform(0.2, 1.5))
                await asyncio.to_thread(victim.start, START_TIMEOUT)

    def restart_postgres(self) -> None:
        server = embedded_server(self.data_dir)
        server.stop()
        time.sleep(self.rng.uniform(0.5, 2.0))
        embedded_server(self.data_dir, fresh=True)
        self.pg_restarts += 1


def scenarios(rng: random.Random, runs: int) -> list[tuple[str, str, str]]:
    """(customer, plan, expectation) per run: most succeed, some need approval, some fail and roll back."""
    mix = []
    for i in range(runs):
        roll = rng.random()
        kind = "rollback" if roll < 0.2 else "approval" if roll < 0.4 else "plain"
        mix.append((f"K-{i:05d}", "enterprise" if kind == "approval" else "pro", kind))
    return mix


async def run(params: Params) -> int:
    print(f"chaos parameters: {asdict(params)}", flush=True)
    rng = random.Random(params.seed)
    data_dir = Path(tempfile.mkdtemp(prefix="keel-chaos-"))
    chaos = Chaos(params, data_dir, rng=rng)
    chaos.url = start_embedded_postgres(data_dir)
    ensure_database(chaos.url)
    migrate(chaos.url)
    proxy = None
    if params.net_faults:  # the workers, not the harness's own checks, go through the flaky network
        faults = Faults(reset_rate=params.reset_rate, lose_commit_rate=params.lose_commit_rate, seed=params.seed)
        proxy = ProxyThread(NetProxy(upstream_address(chaos.url), faults))
    mix = scenarios(rng, params.runs)
    with psycopg.connect(chaos.url, autocommit=True) as conn:
        for customer, _, kind in mix:
            conn.execute("INSERT INTO sandbox.customers VALUES (%s, 'Chaos', lower(%s) || '@example.com', 'basic')", (customer, customer))
            if kind == "rollback":
                conn.execute("INSERT INTO sandbox.faults (service, kind, match, remaining) VALUES ('plans', 'unavailable', %s, 1000)", (customer,))
        conn.execute("INSERT INTO sandbox.faults (service, kind, remaining) VALUES ('payments', 'drop_response', %s)", (params.lost_responses,))
    model, model_url = start_scripted_model(data_dir / "model.log")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KEEL_", "OPENAI_"))}
    env.update({"DATABASE_URL": proxy.url(chaos.url) if proxy else chaos.url, "OPENAI_BASE_URL": f"{model_url}/v1", "OPENAI_API_KEY": "chaos",
                "KEEL_AUTH": "off", "KEEL_DEMO_SERVICES": "on", "PYTHONPATH": str(ROOT)})
    chaos.workers = [Worker(env={**env, "KEEL_EXECUTOR_ID": f"chaos-{i}"}, log=data_dir / f"worker-{i}.log").start(START_TIMEOUT)
                     for i in range(params.workers)]
    started = time.monotonic()
    try:
        async with httpx.AsyncClient(base_url=model_url) as admin:
            await admin.post("/faults", json={"kind": "status", "status": 503, "retry_after": 0,
                                              "probability": params.model_failure_rate, "times": 10**9})
        monkey = asyncio.create_task(chaos.monkey(window=max(5.0, params.runs / 4)))
        approver = asyncio.create_task(chaos.approver(started + params.deadline))
        run_ids = [await chaos.submit(f"chaos-{params.seed}-{i}", f"Upgrade customer {customer} to the {plan} plan")
                   for i, (customer, plan, _) in enumerate(mix)]
        await monkey
        pending = await wait_until_terminal(chaos, run_ids, started + params.deadline)
        approver.cancel()
        report = check(chaos.url, run_ids, mix)
    finally:
        for worker in chaos.workers:
            worker.stop()
        stop(model)
        if proxy is not None:
            proxy.stop()
        embedded_server(data_dir).stop()
    counts = proxy.proxy.counts if proxy else Counts()
    report.update(kills=chaos.kills, pg_restarts=chaos.pg_restarts, wall_seconds=round(time.monotonic() - started, 1), unfinished_at_deadline=pending,
                  connection_resets=counts.resets, lost_commit_replies=counts.lost_commit_replies, lost_autocommit_replies=counts.lost_autocommit_replies)
    print_report(report)
    return 0 if not report["violations"] else 1


async def wait_until_terminal(chaos: Chaos, keys: list[str], deadline: float) -> int:
    pending = len(keys)
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(chaos.url, autocommit=True) as conn:
                done = conn.execute("SELECT count(*) FROM keel.runs WHERE run_id = ANY(%s) AND status = ANY(%s)", (keys, list(ENDED))).fetchone()[0]
        except psycopg.OperationalError:
            done = len(keys) - pending
        pending = len(keys) - done
        print(f"  {done}/{len(keys)} runs ended", flush=True)
        if not pending:
            return 0
        await asyncio.sleep(2)
    return pending


def print_report(report: dict) -> None:
    print("\n| measure | value |\n|---|---|")
    for name in REPORTED:
        print(f"| {name.replace('_', ' ')} | {report[name]} |")
    for violation in report["violations"]:
        print(f"VIOLATION: {violation}")
    print("OK: every invariant holds" if not report["violations"] else f"FAILED: {len(report['violations'])} violation(s)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--kills", type=int, default=5)
    parser.add_argument("--pg-restarts", type=int, default=1)
    parser.add_argument("--deadline", type=float, default=240, help="seconds until the harness stops waiting")
    parser.add_argument("--model-failure-rate", type=float, default=0.03)
    parser.add_argument("--lost-responses", type=int, default=5, help="payments that commit, then lose their response")
    parser.add_argument("--net-faults", action="store_true", help="put a flaky network (bench/netproxy.py) between the workers and PostgreSQL")
    parser.add_argument("--reset-rate", type=float, default=0.0005, help="with --net-faults: chance that a message a worker sends resets its connection")
    parser.add_argument("--lose-commit-rate", type=float, default=0.02, help="with --net-faults: chance that the reply to a commit is lost")
    args = parser.parse_args()
    raise SystemExit(asyncio.run(run(Params(**{k.replace("-", "_"): v for k, v in vars(args).items()}))))


if __name__ == "__main__":
    main()
