"""The "why" under the targets table: each missed target explained from the figures of the same
invocation (census, profile, what-ifs), and the changes to Keel's core those figures support."""

from typing import Any

# Frames whose inclusive share of GIL time says who spends the CPU (substring of py-spy's frame names).
FRAMES = {
    "DBOS checkpoint write (`record_operation_result`)": "record_operation_result (dbos",
    "DBOS checkpoint read (`check_operation_execution`)": "check_operation_execution (dbos",
    "DBOS pool pre-ping (`do_ping`)": "do_ping",
    "openai client (`AsyncCompletions.create`)": "AsyncCompletions.create",
    "Keel ledger (`steps/ledger.py` `Call.attempt` + `_record_intent`)": "(steps/ledger.py",
    "Keel events (`steps/events.py` `record`)": "record (steps/events.py",
    "Keel breaker (`steps/breaker.py` `admit`/`record`)": "(steps/breaker.py",
    "Keel `fork_overrides` (`workflows/forks.py`)": "fork_overrides",
}


def frame_shares(path: str) -> dict[str, float]:
    from pathlib import Path

    total, counts = 0, dict.fromkeys(FRAMES, 0)
    for line in Path(path).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack:
            continue
        total += int(n)
        for label, needle in FRAMES.items():
            if needle in stack:
                counts[label] += int(n)
    return {label: round(100 * c / max(total, 1), 1) for label, c in counts.items()}


def stored_shares(r: dict[str, Any], variant: str) -> dict[str, float]:
    from pathlib import Path

    path = Path(r["args"].get("profile_dir", "")) / f"{variant}.collapsed.txt"
    return frame_shares(str(path)) if path.is_file() else {}


def statements(census: dict[str, Any], variant: str) -> dict[str, float]:
    """Statements per run of the 14-step agent grouped by what sends them."""
    groups = {"DBOS checkpoints": 0.0, "Keel events": 0.0, "Keel ledger": 0.0, "Keel breaker": 0.0, "Keel other": 0.0}
    for who, sql, n in census[variant]["statements_agent_14"]:
        if who == "DBOS":
            groups["DBOS checkpoints"] += n
        elif "keel.events" in sql:
            groups["Keel events"] += n
        elif "keel.tool_calls" in sql:
            groups["Keel ledger"] += n
        elif "open_until" in sql or "keel.breakers" in sql:
            groups["Keel breaker"] += n
        else:
            groups["Keel other"] += n
    return {k: round(v, 1) for k, v in groups.items() if v}


def section(r: dict[str, Any]) -> list[str]:
    out = ["## Why the targets are missed, and what would close the gaps", ""]
    o, c, p, m, t = r.get("overhead"), r.get("commits"), r.get("profile"), r.get("many"), r.get("throughput")
    census = c.get("census") if c else None
    if o and census:
        keel_over = o["overhead_ms_per_step"]["keel"]["median"]
        raw_over = o["overhead_ms_per_step"]["raw_dbos"]["median"]
        k_st, r_st = census["keel"]["statements_per_run"]["per_run"]["agent_14"], census["raw_dbos"]["statements_per_run"]["per_run"]["agent_14"]
        out += [f"**Per-step cost.** Over the plain loop, raw DBOS adds {raw_over:.1f} ms per step and Keel {keel_over:.1f} ms (medians). "
                f"Keel sends {k_st:.0f} statements per run of the 14-step agent where raw DBOS sends {r_st:.0f}: "
                + ", ".join(f"{k} {v:g}" for k, v in statements(census, "keel").items()) + ". "
                "Every one is a round trip to PostgreSQL, a pool checkout and, for DBOS's, a hop to a thread (`asyncio.to_thread`); on two "
                "cores shared by the Python process and PostgreSQL, the time per step tracks the statements per step.", ""]
    if census:
        kw = census["keel"]["write_transactions_per_run"]["per_step"]
        kt = census["keel"]["transactions_per_run"]["per_step"]
        rt = census["raw_dbos"]["transactions_per_run"]["per_step"]
        out += [f"**Commits.** DBOS alone costs {rt['llm']:.1f} transactions per step in the client's count (one to read the step's "
                "checkpoint and the workflow's status, one to write the checkpoint), and `xact_commit` counts about two more per step, as "
                "many as DBOS's pool checkouts per step (before 2026-12-04 each also ran `pool_pre_ping`'s `SELECT 1`" + ping_sentence(r) + "). "
                f"Keel adds to that: per LLM step {kt['llm']:.1f} transactions ({kw['llm']:.1f} writing): DBOS's checkpoint, then the "
                "`llm_request` and `llm_response` events, each one autocommit statement with its live-feed row; per tool step "
                f"{kt['tool']:.1f} ({kw['tool']:.1f} writing): DBOS's checkpoint, the ledger intent with its `tool_call` event (one "
                "statement, committed before the tool runs), and the outcome with its `tool_result` event (one statement). A clean circuit "
                "breaker is read at most once a second per process. The tool target (≤ 2 writing) is below what the issue's own first item "
                "requires: the intent must commit before the call and the outcome after it, and DBOS writes its checkpoint in a "
                "transaction of its own, so a tool step writes at least three times unless the outcome joins DBOS's checkpoint "
                "transaction (DBOS 3.4 offers no hook for that). The LLM target (≤ 1 writing) needs the two LLM events derived from "
                "the step's checkpoint instead of written (change 1).", ""]
    if p and "keel" in p and "skipped" not in p:
        out += [f"**Where the CPU goes** (py-spy, GIL-holding samples, concurrency {p['concurrency']}; share of samples whose stack contains "
                "the frame):", "", "| frame | Keel | raw DBOS |", "|---|---|---|"]
        shares = {v: p[v].get("frames") or stored_shares(r, v) for v in ("keel", "raw_dbos")}
        for label in FRAMES:
            out.append(f"| {label} | {shares['keel'].get(label, 0):.1f} % | {shares['raw_dbos'].get(label, 0):.1f} % |")
        out += ["", "DBOS's checkpoint read and write are the largest single cost in both (SQLAlchemy statement compilation, psycopg, "
                "the thread hop); the openai client's request transformation (`_async_transform_recursive`, a walk over every message "
                "of the conversation on every call) is the next, and it grows with the conversation (Keel has posted its plain-JSON requests "
                "without it since 2026-12-04; raw DBOS's steps still call `create`). Keel's own statements (ledger, "
                "events, breaker) are the difference between the two columns.", ""]
    if t and "32" in t["levels"]:
        lv = t["levels"]["32"]
        out += [f"**Throughput.** At concurrency 32 Keel does {lv['keel_over_langgraph']['median']:.2f}× LangGraph's runs per second and "
                f"raw DBOS {lv['raw_dbos_over_langgraph']['median']:.2f}×. LangGraph's `AsyncPostgresSaver` writes a checkpoint per node in "
                "one pipelined round trip on an async connection (no thread hop, no pre-ping, no separate read of the step's checkpoint); "
                "it pays for that in payload (workload 7: its checkpoints carry the whole history, so bytes per turn grow with the "
                "conversation).", ""]
    if m:
        plain = {int(k): v for k, v in m["levels"].items() if not v.get("what_if") and "over_floor" in v}
        if plain:
            top, low = max(plain), min(plain)
            big, small = plain[top], plain[low]
            out += [f"**{top:,} concurrent runs.** Done in {big['elapsed_s']:.0f} s, {big['over_floor']:.2f}× the worker's floor of "
                    f"{big['floor_s']:.0f} s (its own {big['steps_per_s']:.0f} steps/s with an instant model, measured first in the same "
                    f"process); {low:,} runs took {small['over_floor']:.2f}× theirs. `KEEL_WORKER_CONCURRENCY` (200) keeps the rest "
                    f"queued holding nothing: {big.get('pool_timeouts', 0)} `PoolTimeout`s, threads {big['idle_threads']} → "
                    f"{big['peak_threads']}. The floor's steps/s is measured with the calibration's runs in flight ({max(50, top // 10)}); with "
                    "200 in flight each step costs more, and the what-if below points at the executor's threads contending for the GIL "
                    "(not measured at 1,000 runs). " + what_if_sentence(m), ""]
    out += recovery_paragraph(r.get("recovery"))
    return out + recommendations()


RECOMMENDATIONS = [
    ("`steps/ledger.py` `Call.attempt`/`_record_intent`, `steps/llm.py` `llm_step`, `steps/events.py`",
     "DONE for tools (2026-11-26; since 2026-12-04 the intent with its event, and the outcome with its event, are one statement each). "
     "Write events in the transactions that already exist: `tool_call` in the intent's transaction, `tool_result` in the ledger "
     "transaction (`events.record(..., conn=conn)`), and `llm_request` + `llm_response` as one two-row INSERT after the call (or derive "
     "the LLM events from the step's JSON checkpoint in `dbos.operation_outputs` with a view).",
     "−2 transactions per tool step, −1 (−2 if derived) per LLM step: about 2 of Keel's ~5 extra statements per step"),
    ("`steps/breaker.py` `guard`/`admit`",
     "DONE (2026-11-26). Keep a closed breaker's state in process: skip the SELECT while this process has seen no failure of the dependency and its "
     "last read is younger than a second or so; read (and share) the state after any local failure.",
     "−1 statement per model and tool call (15 per run of the 14-step agent)"),
    ("`workflows/agent_loop.py` `AgentRun.loop`, `workflows/forks.py` `fork_overrides`",
     "Record `run_started` and `run_finished` inside the first and last model steps (or with the workflow's output) instead of two "
     "`keel.event` DBOS steps; read `keel.forks` only for a fork (DONE 2026-11-26: a fork's run ID carries `-fork-`).",
     "−2 DBOS steps (8 statements + 2 inserts) and −1 SELECT per run"),
    ("`app/main.py` `dbos_config`",
     "Set `max_executor_threads` (DONE 2026-11-26: 32): DBOS makes its executor the loop's default, so unbounded it grows a thread per concurrent "
     "checkpoint call (workload 5's what-if). `db_engine_kwargs={'pool_pre_ping': False}` (DONE 2026-12-04): DBOS pinged before each "
     "of its two checkouts per step (`do_ping` in the profile, ~2 `xact_commit` per step); `bench/chaos.py` with PostgreSQL restarts "
     "and with network faults still holds every invariant.",
     "threads flat in the number of runs; up to −2 round trips per DBOS step"),
    ("`steps/llm.py` `attempt`",
     "The openai client re-walks every message of the request with its typed transform (`_async_transform_recursive`) on every call; "
     "Keel's messages are already plain JSON, so post them with `client.post('/chat/completions', body=..., cast_to=ChatCompletion)` "
     "(timeouts and error classes unchanged). DONE 2026-12-04.",
     "the openai share of an LLM step's CPU (≈20 % of Keel's GIL time at instant latency), growing with the conversation"),
    ("`workflows/runs.py` `start_run`, `app/main.py` (queue registration)",
     "DONE 2026-12-05: `KEEL_WORKER_CONCURRENCY` defaults to 200 and `POST /v1/runs` enqueues on it. "
     "Admission control (the queue exists since 2026-11-26: `KEEL_WORKER_CONCURRENCY`, unbounded by default because waiting runs hold "
     "slots): start runs on a registered DBOS queue with `worker_concurrency` sized to the pools (recovered runs go back "
     "to their queue, so a restart with 10,000 pending runs no longer starts them all at once), or bound the steps' database work "
     "per worker with a semaphore sized to `KEEL_DB_POOL_SIZE`.",
     "no `PoolTimeout` thrash at 1,000 runs or in a 10,000-run recovery: completion time set by throughput, not by 30 s timeouts and "
     "retry backoff"),
]


def recommendations() -> list[str]:
    out = ["### Changes to Keel's core these figures support, ranked by expected gain", "",
           "| # | where | change | expected gain |", "|---|---|---|---|"]
    out += [f"| {i} | {where} | {what} | {gain} |" for i, (where, what, gain) in enumerate(RECOMMENDATIONS, 1)]
    return out + ["", "Every figure above comes from the invocations listed at the top, after the changes marked DONE. Change 3 and "
                  "the LLM half of change 1 are what is left of this list: about 8 statements and 2 DBOS steps per run of the 14-step "
                  "agent (census above), and one DBOS step of the four that each recovered run of workload 6 executes. DBOS's own step "
                  "protocol (four statements, two pool checkouts and a thread hop per step) is the larger part of Keel's cost and "
                  "the reason raw DBOS itself is below LangGraph in throughput.", ""]


def recovery_paragraph(rec: dict[str, Any] | None) -> list[str]:
    slower = {int(n): lv for n, lv in (rec or {}).get("levels", {}).items() if lv.get("keel_over_raw", 0) > 1.0}
    if not slower:
        return []
    parts = []
    for n, lv in slower.items():
        k, raw = lv["keel"], lv["raw"]
        parts.append(f"{n:,} runs: Keel {k['finished_s']:.1f} s ({n / k['finished_s']:.0f} runs/s), raw DBOS {raw['finished_s']:.1f} s "
                     f"({n / raw['finished_s']:.0f} runs/s), all dispatched again after {k.get('dispatched_s', float('nan')):.1f} s and "
                     f"{raw.get('dispatched_s', float('nan')):.1f} s")
    return [f"**Recovery.** {'; '.join(parts)}. After the restart each run re-executes its interrupted model step and then runs its "
            "remaining steps, so the time after dispatch is the per-step cost of workload 1 times the steps left; Keel's runs also wait for "
            "a slot under `KEEL_WORKER_CONCURRENCY` where raw DBOS starts every recovered workflow at once."
            + timeouts_sentence(sum(lv["keel"].get("pool_timeouts", 0) for lv in slower.values())), ""]


def timeouts_sentence(n: int | None) -> str:
    if not n:
        return ""
    return (f" The worker's log has {n:,} `PoolTimeout`s: with every run in flight at once, steps wait more than 30 s for one of "
            "Keel's 10 pooled connections (in `events.record`, `breaker.admit`, the ledger) and DBOS retries them with backoff "
            "(`OUTAGE_RETRIES`), so the worker thrashes instead of queueing (change 6 below).")


def ping_sentence(r: dict[str, Any]) -> str:
    p = r.get("ping")
    if not p:
        return " (the likely source; not isolated in this run)"
    return (f" (isolated in `bench/suite/ping.py`: a checkpoint-like read and write cost {p['with']['commits']:.2f} commits with "
            f"`pool_pre_ping` and {p['without']['commits']:.2f} without)")


def what_if_sentence(m: dict[str, Any]) -> str:
    wi = [(k, v) for k, v in m["levels"].items() if v.get("what_if")]
    if not wi:
        return ""
    label, d = wi[0]
    base = m["levels"].get(label.split(" ")[0])
    if not base:
        return ""
    return (f"With `{m['what_if']}` ({label.split(' ')[0]} runs): peak threads {base['peak_threads']} → {d['peak_threads']}, "
            f"done in {base['elapsed_s']:.1f} s → {d['elapsed_s']:.1f} s.")
