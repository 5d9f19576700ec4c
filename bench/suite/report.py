"""docs/benchmarks.md from the suite's results: tables, the method, and the targets met or missed."""

import json
from typing import Any

from bench.suite import analysis, frameworks
from bench.suite.stats import fmt

NAMES = {"plain": "plain Python loop (floor)", "raw_dbos": "raw DBOS (async workflow, 15 async steps)",
         "raw_dbos_sync": "raw DBOS, sync (sync workflow and steps, sync client)", "keel": "Keel (`Agent` + `@tool`)",
         "langgraph": "LangGraph + PostgresSaver (durability=\"sync\")", "temporal": "Temporal (test server, activities)"}


def verdict(ok: bool | None) -> str:
    return "n/a" if ok is None else ("**met**" if ok else "**missed**")


Row = tuple[str, str, str, str, str]  # target, at the filing, measured here, goal, verdict
NOT_RUN = "not measured in this invocation"


def targets(r: dict[str, Any]) -> list[Row]:
    """Issue 14's table: every figure a ratio against a baseline measured in the same invocation."""
    return [per_step_row(r), transactions_row(r), throughput_row(r), many_row(r), slow_tools_row(r), *recovery_rows(r), serve_row(r),
            payload_row(r)]


def per_step_row(r: dict[str, Any]) -> Row:
    target, was, goal = "Keel per step vs raw DBOS", "1.85×", "≤ 1.2×"
    if not (o := r.get("overhead")):
        return target, was, NOT_RUN, goal, verdict(None)
    ratio = o["ratio_over_raw_dbos"]["keel"]["median"]
    return target, was, f"{ratio:.2f}×", goal, verdict(ratio <= 1.2)


def transactions_row(r: dict[str, Any]) -> Row:
    target, was, goal = "writing transactions per LLM step / per tool step (`xact_commit` beside)", "3.0 / 5.1", "≤ 1 / ≤ 2"
    c = r.get("commits")
    if not c or not c.get("census"):
        return target, was, NOT_RUN, goal, verdict(None)
    w, x = c["census"]["keel"]["write_transactions_per_run"]["per_step"], c["per_step"]["keel"]
    return (target, was, f"{w['llm']:.2f} / {w['tool']:.2f} (`xact_commit` {x['llm']:.2f} / {x['tool']:.2f})", goal,
            verdict(w["llm"] <= 1.05 and w["tool"] <= 2.05))


def throughput_row(r: dict[str, Any]) -> Row:
    target, was, goal = "throughput at c=32, one process, vs LangGraph + PostgresSaver (sync)", "0.51×", "≥ 1.0×"
    t = r.get("throughput")
    if not t or "32" not in t["levels"]:
        return target, was, NOT_RUN, goal, verdict(None)
    lv = t["levels"]["32"]
    ratio = lv["keel_over_langgraph"]["median"]
    return target, was, f"{ratio:.2f}× (raw DBOS {lv['raw_dbos_over_langgraph']['median']:.2f}×)", goal, verdict(ratio >= 1.0)


def many_row(r: dict[str, Any]) -> Row:
    target, was, goal = ("1,000 concurrent runs, 1 s model: time to finish ÷ (total steps ÷ the worker's own steps/s, same run)",
                         "thrashes, 1,902 PoolTimeouts", "≤ 1.2×, 0 PoolTimeouts, threads flat")
    m = r.get("many")
    levels = {int(k): v for k, v in (m or {}).get("levels", {}).items() if not v.get("what_if") and "over_floor" in v}
    if not levels:
        return target, was, NOT_RUN, goal, verdict(None)
    small, big = levels[min(levels)], levels[max(levels)]
    flat = big["peak_threads"] - small["peak_threads"] <= max(2, 0.1 * small["peak_threads"])
    return (target, was, f"{big['over_floor']:.2f}× at {max(levels):,} runs ({big['elapsed_s']:.0f} s / {big['floor_s']:.0f} s), "
            f"{big['pool_timeouts']} PoolTimeouts, peak threads {small['peak_threads']} at {min(levels):,} runs → {big['peak_threads']}",
            goal, verdict(big["over_floor"] <= 1.2 and big["pool_timeouts"] == 0 and flat))


def slow_tools_row(r: dict[str, Any]) -> Row:
    target, was, goal = ("200 concurrent runs whose one tool takes 2 s: tool calls in flight at once", "≤ pool size (10)",
                         "≥ 150, with connections ≤ pool size")
    if not (w := r.get("slow_tools")):
        return target, was, NOT_RUN, goal, verdict(None)
    return (target, was, f"{w['tools_in_flight_peak']} of {w['runs']}; Keel's connections checked out at most {w['checked_out_peak']} of "
            f"{w['pool_size']}",
            goal, verdict(w["tools_in_flight_peak"] >= 0.75 * w["runs"] and w["checked_out_peak"] <= w["pool_size"]))


def recovery_rows(r: dict[str, Any]) -> list[Row]:
    was, goal = "about 4.7× slower", "≤ 1.0×"
    levels = (r.get("recovery") or {}).get("levels", {})
    rows = []
    for n, level in levels.items():
        target = f"recovery of {int(n):,} pending runs vs raw DBOS recovering {int(n):,} workflows of the same shape (time to finish)"
        ratio = level.get("keel_over_raw")
        rows.append((target, was, NOT_RUN if ratio is None else f"{ratio:.2f}× ({level['keel']['finished_s']:.1f} s / "
                     f"{level['raw']['finished_s']:.1f} s)", goal, verdict(None if ratio is None else ratio <= 1.0)))
    return rows or [("recovery of N pending runs vs raw DBOS recovering N workflows of the same shape", was, NOT_RUN, goal, verdict(None))]


def serve_row(r: dict[str, Any]) -> Row:
    target, was, goal = "throughput, `keel serve --workers` one per core vs one process (billing runs over HTTP)", "—", "> 1×"
    if not (w := r.get("serve")):
        return target, was, NOT_RUN, goal, verdict(None)
    return (target, was, f"{w['per_core_over_one']:.2f}× ({w['cores']} workers: {w['runs_per_s'][str(w['cores'])]:.1f} runs/s; "
            f"1: {w['runs_per_s']['1']:.1f})", goal, verdict(w["per_core_over_one"] > 1.0))


def payload_row(r: dict[str, Any]) -> Row:
    target, was, goal = "Keel's bytes stored per turn, 10 → 100 turns", "flat", "flat"
    if not (p := r.get("payload")):
        return target, was, NOT_RUN, goal, verdict(None)
    per_turn = {int(k): v for k, v in p["bytes_per_turn"]["keel"].items()}
    low, high = per_turn[min(per_turn)], per_turn[max(per_turn)]
    return (target, was, f"{low:,.0f} → {high:,.0f} bytes per turn (LangGraph: {p['bytes_per_turn']['langgraph'][str(max(per_turn))]:,.0f} at "
            f"{max(per_turn)})", goal, verdict(high <= 1.2 * low))


def render(r: dict[str, Any]) -> str:
    r = json.loads(json.dumps(r, default=str))  # the same keys (strings) whether fresh or read back from the JSON file
    m = r["machine"]
    out = ["# Benchmarks", "",
           f"Produced by `make bench{' QUICK=1' if r['mode'] == 'quick' else ''}` (`python -m bench.suite`) on {r['started']}: "
           f"{m['cpus']} CPUs ({m['cpu']}), PostgreSQL {m['postgres']} on the same machine, Python {m['python']}. "
           f"Load average at start {m['load_at_start'][0]:.2f}, at end {m['load_at_end'][0]:.2f} (the CPU is shared with other work). "
           f"The whole suite took {r['wall_s'] / 60:.1f} min.", ""]
    for inv in r.get("invocations", []):
        out += [f"Added by a later invocation ({inv['started']}, `--merge --only {','.join(inv['only'])}`).", ""]
    if r["mode"] == "quick":
        out += ["> **QUICK mode**: small sizes, a smoke test. The figures are noisy and the sizes are not the issue's.", ""]
    out += ["Every figure is the median of several measurements with (min–max); every comparison is a ratio of measurements taken "
            "side by side, interleaved, in the same invocation. Sizes used: " + ", ".join(
                f"`--{k.replace('_', '-')} {v}`" for k, v in r["args"].items()
                if k not in ("only", "output", "profile_dir", "quick", "no_temporal", "merge", "render") and v is not None) + ".", ""]
    out += ["## Targets (issue 14)", "", "| target | at the issue's filing | measured here | goal | |", "|---|---|---|---|---|"]
    out += ["| " + " | ".join(row) + " |" for row in targets(r)]
    out += [""] + analysis.section(r)
    out += overhead_section(r) + commits_section(r) + throughput_section(r) + realistic_section(r) + many_section(r)
    out += recovery_section(r) + payload_section(r) + slow_tools_section(r) + serve_section(r) + profile_section(r)
    out += frameworks.section(r) + method_section(r)
    return "\n".join(out) + "\n"


def overhead_section(r: dict[str, Any]) -> list[str]:
    o = r.get("overhead")
    if not o:
        return []
    out = ["## 1. Step overhead (model and tools answer instantly)", "",
           f"The 14-step agent, one run at a time: {o['rounds']} interleaved rounds of {o['runs']} runs per variant. "
           "ms per step = the run's wall time / its 15 model and tool calls.", "",
           "| variant | ms per step | overhead over the plain loop, ms per step | × plain loop | × raw DBOS |", "|---|---|---|---|---|"]
    for n in o["variants"]:
        over = fmt(o["overhead_ms_per_step"].get(n)) if n != "plain" else "—"
        xp = fmt(o["ratio_over_plain"].get(n)) if n != "plain" else "1"
        xr = fmt(o["ratio_over_raw_dbos"].get(n)) if n != "raw_dbos" else "1"
        out.append(f"| {NAMES[n]} | {fmt(o['ms_per_step'][n])} | {over} | {xp} | {xr} |")
    if o.get("temporal_skipped"):
        out += ["", f"Temporal was skipped: {o['temporal_skipped']}"]
    return out + [""]


def commits_section(r: dict[str, Any]) -> list[str]:
    c = r.get("commits")
    if not c:
        return []
    out = ["## 2. PostgreSQL commits per step", "",
           f"`pg_stat_database.xact_commit` of the benchmark database, {c['runs']} runs per agent shape, background "
           f"({c['background_per_s']:.1f} commits/s of DBOS polling while idle) subtracted. Independent of CPU noise.", "",
           "| | commits per LLM step | per tool step | fixed per run | per run, 14-step agent | per model/tool call, 14-step agent |",
           "|---|---|---|---|---|---|"]
    for n in ("keel", "raw_dbos"):
        s, p = c["per_step"][n], c["per_run"][n]
        out.append(f"| {NAMES[n]} | {s['llm']:.2f} | {s['tool']:.2f} | {s['fixed_per_run']:.2f} | {p['agent_14']:.1f} | {s['agent_14_per_step']:.2f} |")
    out += ["", "Per run, by shape (final_only = `tools=0`: one model call; agent_14 = `tools=7`; all_calls_in_one_turn = `tools=7 per_turn=7`):", "",
            "| | " + " | ".join(c["per_run"]["keel"]) + " |", "|---|" + "---|" * len(c["per_run"]["keel"])]
    for n in ("keel", "raw_dbos"):
        out.append(f"| {NAMES[n]} | " + " | ".join(f"{v:.1f}" for v in c["per_run"][n].values()) + " |")
    return out + [""] + census_section(c.get("census"))


MEASURES = {"transactions_per_run": "transactions", "write_transactions_per_run": "writing transactions",
            "statements_per_run": "statements", "dbos_checkouts_per_run": "DBOS pool checkouts"}


def census_section(c: dict[str, Any] | None) -> list[str]:
    if not c:
        return []
    out = ["### What the commits are: statements and transactions counted in the client", "",
           "The same three shapes, counted in the benchmark process (`bench/suite/census.py`): DBOS through its SQLAlchemy engine's events, "
           "Keel through psycopg. A *writing* transaction contains an INSERT/UPDATE/DELETE; `xact_commit` also counts read-only ones "
           "(and DBOS's pool pings).", "",
           "| | per LLM step | per tool step | fixed per run |", "|---|---|---|---|"]
    for n in ("keel", "raw_dbos"):
        for key, label in MEASURES.items():
            d = c[n][key]["per_step"]
            out.append(f"| {NAMES[n]}: {label} | {d['llm']:.2f} | {d['tool']:.2f} | {d['fixed_per_run']:.2f} |")
    out += ["", "Keel's statements per run of the 14-step agent (per run; DBOS = its checkpoints, Keel = events, ledger, breaker):", "",
            "| per run | sender | statement |", "|---|---|---|"]
    out += [f"| {n:.1f} | {who} | `{sql.replace('|', '/')}` |" for who, sql, n in c["keel"]["statements_agent_14"] if n >= 0.9]
    return out + [""]


def throughput_section(r: dict[str, Any]) -> list[str]:
    t = r.get("throughput")
    if not t:
        return []
    out = ["## 3. Throughput (14-step agent, instant model and tools, one process)", "",
           "Runs started at once, at most *concurrency* in flight; the variants interleaved, repeated (the median of the repeats, min–max).", "",
           "| concurrency | runs | repeats | variant | runs/s | steps/s |", "|---|---|---|---|---|---|"]
    for c, lv in t["levels"].items():
        for n in ("raw_dbos", "keel", "langgraph"):
            out.append(f"| {c} | {lv['runs']} | {lv.get('repeats', t['repeats'])} | {NAMES[n]} | {fmt(lv['runs_per_s'][n], 1)} | "
                       f"{fmt(lv['steps_per_s'][n], 0)} |")
    out += ["", "| concurrency | Keel / LangGraph | raw DBOS / LangGraph | Keel / raw DBOS |", "|---|---|---|---|"]
    for c, lv in t["levels"].items():
        out.append(f"| {c} | {fmt(lv['keel_over_langgraph'])} | {fmt(lv['raw_dbos_over_langgraph'])} | {fmt(lv['keel_over_raw_dbos'])} |")
    return out + [""]


def realistic_section(r: dict[str, Any]) -> list[str]:
    w = r.get("realistic")
    if not w:
        return []
    return ["## 4. Realistic latency", "",
            f"Model {w['model_latency'] * 1000:.0f} ms, tools {w['tool_latency'] * 1000:.0f} ms; the 14-step agent (ideal "
            f"{w['ideal_s']:.2f} s: 8 model calls and 7 tool calls), one run at a time, {w['rounds']} interleaved rounds.", "",
            "| variant | wall time per run, s |", "|---|---|",
            f"| {NAMES['plain']} | {fmt(w['wall_s']['plain'], 3)} |", f"| {NAMES['keel']} | {fmt(w['wall_s']['keel'], 3)} |", "",
            f"Keel / plain loop: **{fmt(w['keel_over_plain'], 3)}**.", ""]


def many_section(r: dict[str, Any]) -> list[str]:
    m = r.get("many")
    if not m:
        return []
    out = ["## 5. Many concurrent runs in one worker process", "",
           f"The 14-step agent with a {m['latency']:.0f} s model, all runs enqueued at once (as `POST /v1/runs` does) in one fresh worker "
           "process (in-process Keel, Keel's defaults: `KEEL_WORKER_CONCURRENCY` 200, 10 Keel connections, 20 DBOS connections). "
           "The worker's floor is the larger of the model's own latency (8 turns) and runs × 15 steps ÷ the worker's own steps/s, which "
           "the same process measures first on the same runs with a model that answers at once.", "",
           "| runs | done in, s | worker's steps/s | floor, s | × floor | `PoolTimeout`s | threads idle → peak | peak RSS, MB |",
           "|---|---|---|---|---|---|---|---|"]
    for n, d in m["levels"].items():
        if "over_floor" not in d:  # measured before the floor was (2026-12-05)
            continue
        n = n.replace("|", "/")
        out.append(f"| {n} | {d['elapsed_s']:.1f} | {d['steps_per_s']:.0f} | {d['floor_s']:.1f} | {d['over_floor']:.2f} | "
                   f"{d.get('pool_timeouts', 0):,} | {d['idle_threads']} → {d['peak_threads']} | {d['peak_rss_mb']:.0f} |")
    return out + ["", "One measurement per size (each takes a fresh process): no min–max here. The what-if row runs the smallest size "
                  f"again with `{m.get('what_if')}` merged into Keel's DBOS configuration (in the benchmark worker only): DBOS installs its "
                  "executor as the event loop's default executor, so every `asyncio.to_thread` of an async step (each checkpoint read "
                  "and write) may start a thread, up to Keel's bound of 32.", ""]


def recovery_section(r: dict[str, Any]) -> list[str]:
    rec = r.get("recovery")
    if not rec:
        return []
    out = ["## 6. Recovery of pending runs, Keel and raw DBOS", "",
           f"N runs of a {rec['tools']}-tool agent (model, tool, model) were started in one worker and left waiting in their first model "
           "call; the worker was SIGKILLed and started again with the same executor ID (DBOS recovers that executor's pending runs at "
           "launch). Keel's runs are enqueued as `POST /v1/runs` does (the restarted worker admits them at `KEEL_WORKER_CONCURRENCY`); "
           "raw DBOS's are the same shape as a plain `@DBOS.workflow` with two `@DBOS.step`s, started with `DBOS.start_workflow_async`. "
           "Each on a fresh database, one after the other. Times from the restart:", "",
           "| runs | variant | creating them took, s | worker launched | all dispatched again | all resumed (interrupted call answered) | "
           "all finished | Keel ÷ raw DBOS | PoolTimeouts | threads | peak RSS, MB |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for n, level in rec["levels"].items():
        for variant in ("raw", "keel"):
            if variant not in level:
                continue
            d = level[variant]
            ratio = f"{level['keel_over_raw']:.2f}×" if variant == "keel" and "keel_over_raw" in level else ""
            out.append(f"| {int(n):,} | {'raw DBOS' if variant == 'raw' else 'Keel'} | {d['create_s']:.0f} | {d['launched_s']:.1f} | "
                       f"{d.get('dispatched_s', float('nan')):.1f} | {d.get('resumed_s', float('nan')):.1f} | "
                       f"{d.get('finished_s', float('nan')):.1f} | {ratio} | {d.get('pool_timeouts', 0):,} | {d['threads']} | {d['peak_rss_mb']:.0f} |")
            if "gave_up_s" in d:
                out.append(f"| | | gave up after {d['gave_up_s']:.0f} s with {d['reached']} | | | | | | | | |")
    return out + ["", "One measurement per row (a full kill and restart each).", ""]


def slow_tools_section(r: dict[str, Any]) -> list[str]:
    w = r.get("slow_tools")
    if not w:
        return []
    return ["## 9. Slow tools: what a running tool holds", "",
            f"{w['runs']} runs started at once (enqueued as `POST /v1/runs` does), each one model turn asking for one tool call that sleeps "
            f"{w['tool_s']:.0f} s, then a final answer. Sampled every 20 ms: tool calls inside the tool at once, Keel's pooled connections "
            "checked out, and the database's sessions idle in a transaction (Keel's and DBOS's). The connections are every run's: while "
            "some calls sleep, other runs commit their intents and outcomes and call the model, so they show how far the tools got past "
            "the pool, not what a sleeping call holds (that is 0: `tests/test_tool_leases.py` counts the pool's checked-out connections "
            "and the idle-in-transaction sessions while 50 tool calls sleep, and nothing else runs).", "",
            "| tool calls in flight at once (peak) | pool size | Keel's connections checked out: peak | at the moments ≥ 90 % of the peak "
            "were in the tool | sessions idle in a transaction, at those moments | all done in, s |", "|---|---|---|---|---|---|",
            f"| {w['tools_in_flight_peak']} | {w['pool_size']} | {w['checked_out_peak']} | {fmt(w['plateau_checked_out'], 0)} | "
            f"{fmt(w['plateau_idle_in_transaction'], 0)} | {w['elapsed_s']:.1f} |",
            "", "A tool that does not use `ctx.db` runs between its intent's commit and its outcome's, holding no connection and no lock "
            "(the lease in `keel.tool_calls` keeps a second process off the key).", ""]


def serve_section(r: dict[str, Any]) -> list[str]:
    w = r.get("serve")
    if not w:
        return []
    return ["## 10. `keel serve --workers`: one process and one per core", "",
            f"{w['runs']} billing-demo runs submitted over HTTP to one port (`bench/serve_workers.py`), at most {w['concurrency']} per worker "
            "process at once, each configuration on a fresh database; the model is the scripted model server (its own process).", "",
            "| `--workers` | runs/s | vs one process |", "|---|---|---|",
            *[f"| {n} | {rate:.2f} | {rate / w['runs_per_s']['1']:.2f}× |" for n, rate in w["runs_per_s"].items()], ""]


def payload_section(r: dict[str, Any]) -> list[str]:
    p = r.get("payload")
    if not p:
        return []
    turns = p["turns"]
    out = ["## 7. Payload growth", "",
           "Bytes written per run (logical sizes of every row the run wrote), for conversations of "
           + " and ".join(map(str, turns)) + " turns (each turn but the last asks for one tool call).", "",
           "| variant | " + " | ".join(f"{t} turns: bytes (per turn)" for t in turns) + f" | bytes added per turn, turns {min(turns) + 1}–{max(turns)} |",
           "|---|" + "---|" * (len(turns) + 1)]
    for n in ("keel", "raw_dbos", "langgraph"):
        b = {int(k): v for k, v in p["bytes"][n].items()}
        out.append(f"| {NAMES[n]} | " + " | ".join(f"{b[t]:,} ({b[t] / t:,.0f})" for t in turns) + f" | {p['marginal_per_turn'][n]:,.0f} |")
    return out + ["", "Flat bytes per turn means each message is stored once; growing bytes per turn means the history is stored again each turn.", ""]


def profile_section(r: dict[str, Any]) -> list[str]:
    p = r.get("profile")
    if not p:
        return []
    if "skipped" in p:
        return ["## Profile", "", f"Skipped: {p['skipped']}", ""]
    out = ["## Profile: where the per-step CPU goes", "",
           f"py-spy (200 Hz, `--gil`: only samples of the thread holding the GIL, i.e. the process's Python CPU) on the benchmark process "
           f"for {p['seconds']:.0f} s per variant while it runs the 14-step "
           f"agent at concurrency {p['concurrency']}. Samples are attributed to the innermost frame's package.", "",
           "| package | " + " | ".join(NAMES[v] for v in ("keel", "raw_dbos", "langgraph")) + " |", "|---|---|---|---|"]
    groups = list(dict.fromkeys(g for v in ("keel", "raw_dbos", "langgraph") for g in p[v]["by_package"]))
    for g in groups:
        out.append(f"| {g} | " + " | ".join(f"{p[v]['by_package'].get(g, 0):.1f} %" for v in ("keel", "raw_dbos", "langgraph")) + " |")
    for v in ("keel", "raw_dbos"):
        out += ["", f"{NAMES[v]}: {p[v]['samples']} samples, {p[v]['runs']} runs. Top functions by self time:", "",
                "| % | function |", "|---|---|"]
        out += [f"| {pct} | `{f}` |" for f, pct in p[v]["top_self"][:10]]
        out += ["", "Inclusive time of DBOS / Keel frames:", "", "| % | function |", "|---|---|"]
        out += [f"| {pct} | `{f}` |" for f, pct in p[v]["top_inclusive"][:10]]
    return out + [""]


def method_section(r: dict[str, Any]) -> list[str]:
    return ["## Method", "",
            "- **The model** in every variant is the same in-process, OpenAI-compatible endpoint (`bench/suite/model.py`): an "
            "`httpx.MockTransport` behind the real `openai.AsyncOpenAI` client, so each variant pays the same client cost and none pays "
            "for a model server's CPU. It asks for one `work` tool call per turn until the prompt's count is reached, then answers. "
            "Latency, where a workload sets it, is an `asyncio.sleep` before the reply. **Tools** are the same instant local async function "
            "(`{\"n\": n, \"ok\": 1}`), with an optional sleep.",
            "- **The 14-step agent**: 7 model turns each asking for one tool call (7 + 7 = 14 steps) and a final answer (an 8th model "
            "call): 15 model and tool calls per run; per-step figures divide by 15.",
            "- **Variants** (`bench/suite/variants.py`): the plain async loop (the floor); raw DBOS, an async `@DBOS.workflow` with one "
            "async `@DBOS.step` per model call and per tool call; raw DBOS sync, the same as a sync workflow with sync steps and the sync "
            "`openai.OpenAI` client on the same endpoint (DBOS runs it on its thread pool; the caller waits from a thread), to see what "
            "async steps cost; Keel, a real `workflows.Agent` with a `@tool`, run through "
            "`keel.agent_run` with Keel's own DBOS configuration (portable JSON serializer, pinned version) and pools, launched in-process "
            "the way `app.main`'s lifespan does (no HTTP server, no heartbeats); LangGraph, a two-node `StateGraph` compiled with "
            "`AsyncPostgresSaver` over a psycopg pool of the same size as Keel's, invoked with `durability=\"sync\"`; Temporal, a workflow "
            "with one activity per call on Temporal's Java test server (in-memory history: a lower bound for a real cluster). Keel and raw "
            "DBOS share one DBOS instance and database (`keel_bench`); LangGraph uses `keel_bench_lg` on the same server.",
            "- **Side by side**: the variants run in one process, interleaved round by round (the first variant rotates), so machine noise "
            "hits them alike; ratios are computed per round and the median ratio reported.",
            "- **Commits**: `pg_stat_database.xact_commit` for `keel_bench`, read after 11 s of quiet (PostgreSQL 15 backends flush their "
            "counters at most once a second and when idle within 10 s), minus DBOS's idle background rate measured over a 20 s idle window. "
            "Three agent shapes separate model steps, tool steps and the per-run fixed part (see `bench/suite/commits.py`).",
            "- **Census**: statements and transactions per run counted in the client (`bench/suite/census.py`) explain the commit "
            "figures and separate writing transactions from read-only ones; `bench/suite/ping.py` isolates what DBOS's `pool_pre_ping` "
            "adds to `xact_commit`.",
            "- **Noise**: the machine's two cores were shared with other test runs throughout (see the load averages above), so absolute "
            "milliseconds vary between invocations; the ratios, commit counts, statement counts and bytes are the figures to compare.",
            "- **Many runs** and **recovery** use worker processes of their own (`bench/suite/worker.py`), SIGKILLed for real in workload 6.",
            f"- Temporal: {'ran' if not r.get('temporal_skipped') else 'skipped: ' + str(r['temporal_skipped'])}.", ""]
