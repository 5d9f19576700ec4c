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


def targets(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    rows = []
    o = r.get("overhead")
    ratio = o["ratio_over_raw_dbos"]["keel"]["median"] if o else None
    rows.append(("Keel per-step cost ≤ 1.3× raw DBOS (same run)", f"{ratio:.2f}×" if o else "not run", verdict(ratio <= 1.3 if o else None)))
    c = r.get("commits")
    if c:
        k = c["per_step"]["keel"]
        w = c["census"]["keel"]["write_transactions_per_run"]["per_step"] if c.get("census") else None
        writing = (lambda kind: f" ({w[kind]:.2f} of them writing)") if w else (lambda kind: "")
        rows.append(("commits per tool step ≤ 2", f"{k['tool']:.2f}{writing('tool')}", verdict(k["tool"] <= 2.05)))
        rows.append(("commits per LLM step ≤ 1", f"{k['llm']:.2f}{writing('llm')}", verdict(k["llm"] <= 1.05)))
    w = r.get("realistic")
    if w:
        rows.append(("realistic latency: Keel wall time ≤ 1.05× plain loop", f"{w['keel_over_plain']['median']:.3f}×",
                     verdict(w["keel_over_plain"]["median"] <= 1.05)))
    m = r.get("many")
    if m:
        plain = {k: v for k, v in m["levels"].items() if not v.get("what_if")}
        top = max(plain, key=int)
        low = min(plain, key=int)
        big, small = m["levels"][top], m["levels"][low]
        rows.append((f"{top} concurrent runs done within 1.5× ideal", f"{big['over_ideal']:.2f}× ({big['elapsed_s']:.1f} s / {m['ideal_s']:.0f} s)",
                     verdict(big["over_ideal"] <= 1.5)))
        grew = big["peak_threads"] - small["peak_threads"]
        rows.append((f"threads do not grow with runs ({low} → {top} runs)", f"{small['peak_threads']} → {big['peak_threads']} peak threads",
                     verdict(grew <= max(2, 0.1 * small["peak_threads"]))))
    t = r.get("throughput")
    if t and "32" in t["levels"]:
        lv = t["levels"]["32"]
        rows.append(("throughput at concurrency 32 ≥ LangGraph + PostgresSaver (sync)", f"{lv['keel_over_langgraph']['median']:.2f}× LangGraph",
                     verdict(lv["keel_over_langgraph"]["median"] >= 1.0)))
    rec = r.get("recovery")
    if rec:
        resumed = rec.get("resumed_s")
        rows.append((f"recovery: all {rec['runs']:,} pending runs resumed within 60 s",
                     f"{resumed:.1f} s" if resumed is not None else f"not all after {rec.get('gave_up_s', 0):.0f} s: {rec.get('reached')}",
                     verdict(resumed is not None and resumed <= 60)))
    return rows


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
    out += ["## Targets", "", "| target | measured | |", "|---|---|---|"]
    out += [f"| {a} | {b} | {c} |" for a, b, c in targets(r)]
    out += [""] + analysis.section(r)
    out += overhead_section(r) + commits_section(r) + throughput_section(r) + realistic_section(r) + many_section(r)
    out += recovery_section(r) + payload_section(r) + profile_section(r) + frameworks.section(r) + method_section(r)
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
           f"The 14-step agent with a {m['latency']:.0f} s model (ideal {m['ideal_s']:.0f} s per run), all runs started at once in one "
           "fresh worker process (in-process Keel, Keel's default pools: 10 Keel connections, 20 DBOS connections).", "",
           "| runs | done in, s | × ideal | starting them took, s | threads idle → peak | peak RSS, MB |", "|---|---|---|---|---|---|"]
    for n, d in m["levels"].items():
        n = n.replace("|", "/")
        out.append(f"| {n} | {d['elapsed_s']:.1f} | {d['over_ideal']:.2f} | {d['submitted_s']:.1f} | {d['idle_threads']} → {d['peak_threads']} | "
                   f"{d['peak_rss_mb']:.0f} |")
    return out + ["", "One measurement per size (each takes a fresh process): no min–max here. The what-if row runs the smallest size "
                  f"again with `{m.get('what_if')}` merged into Keel's DBOS configuration (in the benchmark worker only): DBOS installs its "
                  "executor, unbounded by default, as the event loop's default executor, so every `asyncio.to_thread` of an async step "
                  "(each checkpoint read and write) may start a thread.", ""]


def recovery_section(r: dict[str, Any]) -> list[str]:
    rec = r.get("recovery")
    if not rec:
        return []
    return ["## 6. Recovery of pending runs", "",
            f"{rec['runs']:,} runs of a {rec['tools']}-tool agent (model, tool, model) were started in one worker "
            f"(taking {rec['create_s']:.0f} s) and left waiting in their first model call; the worker was SIGKILLed and "
            "started again with the same executor ID (DBOS recovers that executor's pending runs at launch). Times from the restart:", "",
            "| milestone | seconds after restart |", "|---|---|",
            f"| worker launched (imports, DBOS launch incl. its recovery scan) | {rec['launched_s']:.1f} |",
            f"| all runs dispatched again (`recovery_attempts` ≥ 2) | {rec.get('dispatched_s', float('nan')):.1f} |",
            f"| all runs resumed (their interrupted model call completed) | {rec.get('resumed_s', float('nan')):.1f} |",
            f"| all runs finished | {rec.get('finished_s', float('nan')):.1f} |", "",
            *([f"The measurement gave up after {rec['gave_up_s']:.0f} s with {rec['reached']} of {rec['runs']:,}.", ""] if "gave_up_s" in rec else []),
            f"Worker after the restart: {rec['threads']} threads, peak RSS {rec['peak_rss_mb']:.0f} MB. One measurement (a full kill and restart).", ""]


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
