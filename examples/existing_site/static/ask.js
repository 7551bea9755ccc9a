/*
 * The site's one page with a streamed answer. Sluice is on the same origin (nginx routes
 * /stream, /streams and /cancel to it), and knows the user from the site's own login: the
 * browser sends only its site cookie, never a key.
 */
(function () {
  "use strict";
  var form = document.getElementById("ask-form"), question = document.getElementById("question");
  var answer = document.getElementById("answer"), state = document.getElementById("state");
  var cancel = document.getElementById("cancel"), source = null, streamId = null;
  var budget = document.getElementById("budget");

  function setState(value, words) {
    state.setAttribute("data-state", value);
    state.textContent = words;
    cancel.disabled = value !== "streaming";
  }

  function newId() {
    return Array.prototype.map.call(crypto.getRandomValues(new Uint8Array(16)),
      function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  function at(seconds) {
    return new Date(Date.now() + seconds * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"});
  }

  // What is left of this user's token budget (SLUICE_BUDGET_TOKENS), after each answer.
  function showBudget() {
    fetch("/usage").then(function (r) { return r.ok ? r.json() : null; }).then(function (u) {
      if (u && u.budget_tokens !== null) {
        budget.textContent = u.remaining_tokens + " tokens left until " +
          new Date(u.window_end * 1000).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit"}) + ".";
      }
    });
  }

  function follow(eventsUrl) {
    source = new EventSource(eventsUrl);
    source.onmessage = function (e) {
      if (e.data === "[DONE]") { source.close(); source = null; showBudget(); return; }
      var msg = JSON.parse(e.data);
      if (msg.type === "text") answer.appendChild(document.createTextNode(msg.content));
      else if (msg.type === "done") setState("done", "Done");
      else if (msg.type === "cancelled") setState("cancelled", "Cancelled");
      else if (msg.type === "error") setState("error", msg.error.message);
    };
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) { source = null; setState("error", "The answer could not be loaded."); }
    };
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (source || state.getAttribute("data-state") === "streaming") return;
    answer.textContent = "";
    streamId = newId();  // chosen here, so Cancel works before the first byte
    answer.setAttribute("data-stream-id", streamId);
    setState("streaming", "Answering…");
    // POST /streams: the question travels in a body, not in a URL (logs, history); a refusal
    // (a spent budget) is then a status and a JSON body the page can read.
    fetch("/streams", {method: "POST", headers: {"Content-Type": "application/json"},
                       body: JSON.stringify({prompt: question.value, stream_id: streamId})})
      .then(function (r) { return r.json().then(function (body) { return {status: r.status, body: body, r: r}; }); })
      .then(function (res) {
        if (res.status === 201 || res.status === 200) { follow(res.body.events_url); return; }
        var err = res.body.error || {};
        if (err.type === "budget_exceeded") {
          var after = parseInt(res.r.headers.get("Retry-After") || "0", 10);
          setState("error", "You have used up your token budget for now. It comes back at " + at(after) + ".");
        } else {
          setState("error", err.message || "The answer could not be started.");
        }
      }, function () { setState("error", "The answer could not be started."); });
  });

  showBudget();

  // Disabled in the HTML until now: pressed earlier, the form would submit natively and reload
  // the page, question lost.
  document.getElementById("ask").disabled = false;

  cancel.addEventListener("click", function () {
    fetch("/cancel", {method: "POST", headers: {"Content-Type": "application/json"},
                      body: JSON.stringify({stream_id: streamId})});
  });
})();
