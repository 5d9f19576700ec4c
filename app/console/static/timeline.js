// The run page's live timeline: EventSource on /v1/runs/{id}/stream (same origin, so the console's
// cookie authenticates it). Messages: one per timeline event (named by its kind), `token` (model output;
// a `retry` or `llm_error` of the same step and attempt discards it) and a last `end`.
(function () {
  "use strict";
  var body = document.getElementById("timeline");
  if (!body || !window.EventSource) return;
  var state = document.getElementById("live-state");
  var tokens = document.getElementById("live-tokens");
  var KINDS = ["run_started", "llm_request", "llm_response", "llm_error", "retry", "rate_limited", "tool_call", "tool_result", "parked",
    "breaker_open", "breaker_half_open", "breaker_closed", "approval_requested", "approval_escalated", "approval_decided",
    "run_finished", "rollback_started", "compensation_started", "compensation_finished", "compensation_failed", "message"];
  var REFRESH = /^(approval_|run_finished|rollback_|compensation_|parked)/;
  // The stream starts from the run's first event: its first event replaces the server-rendered rows
  // (a reconnection resumes after Last-Event-ID, so nothing is shown twice).
  var replaced = false;
  var start = body.rows.length ? Date.parse(body.rows[0].dataset.at) : null;

  function cell(row, text) {
    var td = row.insertCell(-1);
    td.textContent = text;
    return td;
  }

  function addEvent(item) {
    if (!replaced) {
      replaced = true;
      body.textContent = "";
      start = null;
    }
    var at = Date.parse(item.at);
    if (start === null) start = at;
    var row = body.insertRow(-1);
    row.className = "kind-" + item.kind;
    row.dataset.at = item.at;
    cell(row, ((at - start) / 1000).toFixed(3) + "s");
    cell(row, item.step_id);
    var kind = document.createElement("code");
    kind.textContent = item.kind;
    cell(row, "").appendChild(kind);
    cell(row, item.attempt);
    var run = body.dataset.run;
    var where = item.source && item.source !== run ? " [" + item.source.slice(run.length + 1) + "]" : "";
    cell(row, (item.summary || "") + where);
    var details = cell(row, "");
    if (item.payload && Object.keys(item.payload).length) {
      var d = document.createElement("details"), s = document.createElement("summary"), pre = document.createElement("pre");
      s.textContent = "payload";
      pre.textContent = JSON.stringify(item.payload, null, 2);
      d.appendChild(s);
      d.appendChild(pre);
      details.appendChild(d);
    }
  }

  function tokenBlock(stepId, attempt, create) {
    var id = "tokens-" + stepId + "-" + attempt;
    var block = document.getElementById(id);
    if (!block && create) {
      block = document.createElement("pre");
      block.id = id;
      block.dataset.step = stepId;
      block.setAttribute("aria-label", "model output of step " + stepId + ", attempt " + attempt);
      tokens.appendChild(block);
    }
    return block;
  }

  function discardTokens(stepId, attempt) {
    Array.prototype.slice.call(tokens.children).forEach(function (block) {
      if (block.dataset.step === String(stepId) && (attempt === undefined || block.id === "tokens-" + stepId + "-" + attempt)) {
        block.remove();
      }
    });
  }

  var refreshing = null;
  function refreshSummary() {  // the status, output, approval and compensations, as the server renders them
    if (refreshing) return;
    refreshing = setTimeout(function () {
      fetch(window.location.href, {credentials: "same-origin"}).then(function (response) {
        return response.ok ? response.text() : null;
      }).then(function (html) {
        refreshing = null;
        if (!html) return;
        var fresh = new DOMParser().parseFromString(html, "text/html").getElementById("summary");
        var summary = document.getElementById("summary");
        if (fresh && summary) summary.innerHTML = fresh.innerHTML;
      }).catch(function () { refreshing = null; });
    }, 150);
  }

  function setStatus(status) {
    var badge = document.getElementById("run-status");
    if (!badge) return;
    badge.textContent = status;
    badge.className = "badge status-" + status;
  }

  var source = new EventSource(body.dataset.stream);
  source.onopen = function () { state.textContent = "Live: new events appear as they happen."; };
  source.onerror = function () {
    state.textContent = source.readyState === EventSource.CLOSED
      ? "Live updates are not available; reload the page to see new events."
      : "Reconnecting to the live timeline…";
  };
  KINDS.forEach(function (kind) {
    source.addEventListener(kind, function (message) {
      var item = JSON.parse(message.data);
      if (item.kind === "retry" || item.kind === "llm_error") discardTokens(item.step_id, item.attempt);
      if (item.kind === "llm_response") discardTokens(item.step_id);
      addEvent(item);
      if (REFRESH.test(item.kind)) refreshSummary();
    });
  });
  source.addEventListener("token", function (message) {
    var token = JSON.parse(message.data);
    tokenBlock(token.step_id, token.attempt, true).textContent += token.text;
  });
  source.addEventListener("end", function (message) {
    source.close();  // the server closed the stream: without this, EventSource would reconnect
    var end = JSON.parse(message.data);
    setStatus(end.status);
    tokens.textContent = "";
    state.textContent = "The run ended: " + end.status + (end.reason ? " (" + end.reason + ")" : "") + ".";
    refreshSummary();
  });
})();
