/*
 * The chat page: one conversation, sent whole with each turn (POST /streams, then EventSource).
 * Model output reaches the page as text nodes, except the answer, which SluiceMarkdown renders
 * (raw HTML shown as text, sanitized by DOMPurify); its plain text stays in #answer[data-text].
 */
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var form = $("chat-form"), promptBox = $("prompt"), sendBtn = $("send"), cancelBtn = $("cancel");
  var newBtn = $("new"), providerBox = $("provider"), modelBox = $("model");
  var statusEl = $("status"), answerEl = $("answer"), historyEl = $("history");
  var turnEl = $("turn"), turnPromptEl = $("turn-prompt"), toolsEl = $("tools"), jsonEl = $("json");
  var noticeEl = $("notice"), errorEl = $("error"), statsEl = $("stats");
  var reasoningEl = $("reasoning"), reasoningTextEl = $("reasoning-text"), effortBox = $("reasoning-effort");
  var stopNoteEl = $("stop-note");
  var profileBox = $("profile");  // only when the server has profiles (GET /profiles)
  var budgetEl = $("budget");    // only when a token budget is set (GET /usage)

  // Stop reasons that deserve a sentence under the answer (the rest are ordinary endings).
  var STOP_SENTENCES = {
    refusal: "The model declined to answer this request.",
    content_filter: "The provider's content filter stopped this answer.",
    max_tokens: "The answer reached its length limit and was cut short."
  };

  var STATE_WORDS = {
    idle: "Ready",
    streaming: "Answering…",
    reconnecting: "Connection lost — reconnecting…",
    done: "Done",
    cancelled: "Cancelled",
    error: "Error"
  };

  var messages = [];      // the conversation so far: {role, content}
  var current = null;     // the running Sluice stream
  var currentPrompt = "";
  var toolItems = {};     // tool call id -> its <li>
  var answer = SluiceMarkdown.live(answerEl);

  /** May the chosen profile's request set `field`? (Always, with no profile.) */
  function allowed(field) {
    if (!profileBox || !profileBox.value) return true;
    var allow = " " + (profileBox.options[profileBox.selectedIndex].getAttribute("data-allow") || "") + " ";
    return allow.indexOf(" " + field + " ") >= 0;
  }

  /** Controls for what the profile fixes are disabled: the server would refuse them. */
  function applyProfile() {
    providerBox.disabled = !allowed("provider");
    modelBox.disabled = !allowed("model");
    effortBox.disabled = !allowed("reasoning");
    var boxes = document.querySelectorAll('input[name="tools"]');
    for (var i = 0; i < boxes.length; i++) boxes[i].disabled = !allowed("tools");
  }

  function clock(unixSeconds) {
    return new Date(unixSeconds * 1000).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
  }

  /** What is left of this user's token budget (the chosen profile's own, where it has one). */
  function showBudget() {
    if (!budgetEl || !window.fetch) return;
    fetch("/usage", { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (u) {
        if (!u) return;
        var own = u.profiles && profileBox && u.profiles[profileBox.value];
        var b = own || u;
        if (b.budget_tokens === null || b.budget_tokens === undefined) { show(budgetEl, ""); return; }
        show(budgetEl, b.remaining_tokens + " of " + b.budget_tokens + " tokens left until " +
             clock(u.window_end) + ".");
      }, function () {});
  }

  function setState(state) {
    statusEl.setAttribute("data-state", state);
    statusEl.textContent = STATE_WORDS[state] || state;
    var running = state === "streaming" || state === "reconnecting";
    cancelBtn.disabled = !running;
    answerEl.setAttribute("aria-busy", running ? "true" : "false");
    document.body.setAttribute("data-chat-state", state);
  }

  function show(el, text) {
    el.textContent = text;
    el.hidden = !text;
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = text;
    return node;
  }

  /** Move the finished turn (prompt and answer) into the history list. */
  function archiveTurn() {
    if (!currentPrompt) return;
    var li = el("li", "history-turn");
    li.appendChild(el("p", "bubble bubble-user", currentPrompt));
    if (!toolsEl.hidden) li.appendChild(toolsEl.cloneNode(true)).removeAttribute("id");
    if (!reasoningEl.hidden) {
      var thought = el("details", "reasoning");
      thought.appendChild(el("summary", null, "Thinking"));
      thought.appendChild(el("div", "reasoning-text", reasoningTextEl.textContent));
      li.appendChild(thought);
    }
    var past = el("div", "bubble bubble-assistant");
    SluiceMarkdown.render(past, answer.text());
    li.appendChild(past);
    if (!stopNoteEl.hidden) li.appendChild(el("p", "stop-note", stopNoteEl.textContent));
    if (!statsEl.hidden) li.appendChild(el("p", "stats", statsEl.textContent));
    historyEl.appendChild(li);
    currentPrompt = "";
  }

  function resetTurn() {
    answer.reset();
    reasoningTextEl.textContent = "";
    reasoningEl.hidden = true;
    reasoningEl.open = false;
    toolsEl.textContent = "";
    toolsEl.hidden = true;
    toolItems = {};
    show(jsonEl, "");
    show(stopNoteEl, "");
    show(noticeEl, "");
    show(errorEl, "");
    show(statsEl, "");
    turnEl.hidden = true;
  }

  function formatStats(ev) {
    var usage = ev.usage || {}, metrics = ev.metrics || {}, parts = [];
    if (usage.input_tokens != null) {
      parts.push(usage.input_tokens + " tokens in" +
                 (usage.cache_read_input_tokens ? " (" + usage.cache_read_input_tokens + " cached)" : ""));
    }
    if (usage.output_tokens != null) {
      parts.push(usage.output_tokens + " tokens out" +
                 (usage.reasoning_tokens ? " (" + usage.reasoning_tokens + " thinking)" : ""));
    }
    if (metrics.ttft_ms != null) parts.push("first token after " + Math.round(metrics.ttft_ms) + " ms");
    if (usage.output_tokens && metrics.duration_ms) {
      // Generation speed: output tokens over the time after the first token.
      var ms = metrics.duration_ms - (metrics.ttft_ms || 0);
      if (ms <= 0) ms = metrics.duration_ms;
      parts.push((usage.output_tokens / (ms / 1000)).toFixed(1) + " tokens/s");
    }
    if (usage.estimated) parts.push("(estimated)");
    return parts.join(" · ");
  }

  function onToolCall(ev) {
    var li = el("li", "tool");
    li.appendChild(el("span", "tool-name", ev.name));
    li.appendChild(el("code", "tool-args", JSON.stringify(ev.arguments)));
    li.appendChild(el("span", "tool-result", "running…"));
    toolItems[ev.id] = li;
    toolsEl.appendChild(li);
    toolsEl.hidden = false;
  }

  function onToolResult(ev) {
    var li = toolItems[ev.id];
    if (!li) { onToolCall({ id: ev.id, name: ev.name, arguments: {} }); li = toolItems[ev.id]; }
    var result = li.querySelector(".tool-result");
    result.textContent = (ev.is_error ? "error: " : "→ ") + ev.content;
    if (ev.is_error) li.className += " tool-error";
  }

  /** Thinking streams into its own block, open while the model thinks. */
  function onReasoning(chunk) {
    if (reasoningEl.hidden) {
      reasoningEl.hidden = false;
      reasoningEl.open = answerEl.textContent === "";  // thinking after the answer began stays folded
    }
    reasoningTextEl.appendChild(document.createTextNode(chunk));
  }

  /** The answer starts: fold the thinking away (the user can still open it). */
  function onText(chunk) {
    if (reasoningEl.open && answer.text() === "") reasoningEl.open = false;
    answer.append(chunk);
  }

  function send() {
    var text = promptBox.value.trim();
    if (!text || current) return;
    archiveTurn();
    resetTurn();
    currentPrompt = text;
    turnPromptEl.textContent = text;
    turnEl.hidden = false;
    promptBox.value = "";

    var provider = providerBox.value;
    var option = providerBox.options[providerBox.selectedIndex];
    var defaultModel = option ? option.getAttribute("data-default-model") : "";
    var model = modelBox.value.trim();
    var turnMessages = messages.concat([{ role: "user", content: text }]);
    var tools = [];
    var boxes = document.querySelectorAll('input[name="tools"]');
    for (var i = 0; i < boxes.length; i++) if (boxes[i].checked) tools.push(boxes[i].value);

    current = Sluice.stream({
      messages: turnMessages,
      profile: profileBox && profileBox.value ? profileBox.value : undefined,
      provider: allowed("provider") ? provider : undefined,
      // Only name a model the user picked: the provider's default needs no allow-list entry.
      model: allowed("model") && model && model !== defaultModel ? model : undefined,
      tools: allowed("tools") && tools.length ? tools : undefined,
      reasoning: allowed("reasoning") && effortBox.value !== "off" ? effortBox.value : undefined,
      method: "post",
      onState: setState,
      onReasoning: onReasoning,
      onText: onText,
      onToolCall: onToolCall,
      onToolResult: onToolResult,
      onJson: function (value) { show(jsonEl, JSON.stringify(value, null, 2)); },
      onNotice: function (ev) { show(noticeEl, ev.message || ev.code); },
      onDone: function (ev) {
        show(stopNoteEl, STOP_SENTENCES[ev.stop_reason] || "");
        show(statsEl, formatStats(ev));
        show(noticeEl, "");
        finishTurn(turnMessages, true);
      },
      onCancelled: function (ev) {
        var stats = ev.usage ? formatStats({ usage: ev.usage }) : "";
        show(statsEl, "Cancelled" + (stats ? " · " + stats : ""));
        finishTurn(turnMessages, answer.text() !== "");
      },
      onError: function (err, sentence) {
        show(errorEl, sentence);
        // The turn did not happen: give the prompt back for another try.
        if (!promptBox.value) promptBox.value = text;
        finishTurn(turnMessages, false);
      }
    });
  }

  function finishTurn(turnMessages, keep) {
    answer.finish();
    showBudget();
    if (keep) {
      messages = turnMessages.concat([{ role: "assistant", content: answer.text() }]);
    } else {
      messages = turnMessages.slice(0, -1);
    }
    current = null;
    sendBtn.disabled = false;
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    send();
  });

  promptBox.addEventListener("keydown", function (e) {
    if (e.key !== "Enter" || e.isComposing || e.shiftKey || e.altKey) return;
    e.preventDefault();
    send();
  });

  document.addEventListener("keydown", function (e) {
    if (e.key === "Escape" && current) { e.preventDefault(); current.cancel(); }
  });

  cancelBtn.addEventListener("click", function () {
    if (current) current.cancel();
  });

  newBtn.addEventListener("click", function () {
    if (current) current.cancel();
    messages = [];
    currentPrompt = "";
    historyEl.textContent = "";
    resetTurn();
    if (!current) setState("idle");
    promptBox.focus();
  });

  providerBox.addEventListener("change", function () {
    var previous = modelBox.getAttribute("data-default-model") || "";
    var option = providerBox.options[providerBox.selectedIndex];
    var next = option.getAttribute("data-default-model") || "";
    if (!modelBox.value || modelBox.value === previous) modelBox.value = next;
    modelBox.setAttribute("data-default-model", next);
  });
  (function () {
    var option = providerBox.options[providerBox.selectedIndex];
    if (option) modelBox.setAttribute("data-default-model", option.getAttribute("data-default-model") || "");
  })();

  if (profileBox) profileBox.addEventListener("change", function () { applyProfile(); showBudget(); });
  applyProfile();
  showBudget();

  window.addEventListener("pagehide", function () {
    // Leaving the page: stop listening; the server stops the generation after its grace period.
    if (current) current.close();
  });

  setState("idle");
  sendBtn.disabled = false;  // disabled in the HTML until the form is wired: no native submit
})();
