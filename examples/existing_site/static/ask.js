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

  function setState(value, words) {
    state.setAttribute("data-state", value);
    state.textContent = words;
    cancel.disabled = value !== "streaming";
  }

  function newId() {
    return Array.prototype.map.call(crypto.getRandomValues(new Uint8Array(16)),
      function (b) { return ("0" + b.toString(16)).slice(-2); }).join("");
  }

  form.addEventListener("submit", function (e) {
    e.preventDefault();
    if (source) return;
    answer.textContent = "";
    streamId = newId();  // chosen here, so Cancel works before the first byte
    answer.setAttribute("data-stream-id", streamId);
    source = new EventSource("/stream?prompt=" + encodeURIComponent(question.value) + "&stream_id=" + streamId);
    setState("streaming", "Answering…");
    source.onmessage = function (e) {
      if (e.data === "[DONE]") { source.close(); source = null; return; }
      var msg = JSON.parse(e.data);
      if (msg.type === "text") answer.appendChild(document.createTextNode(msg.content));
      else if (msg.type === "done") setState("done", "Done");
      else if (msg.type === "cancelled") setState("cancelled", "Cancelled");
      else if (msg.type === "error") setState("error", msg.error.message);
    };
    source.onerror = function () {
      if (source && source.readyState === EventSource.CLOSED) { source = null; setState("error", "The answer could not be loaded."); }
    };
  });

  // Disabled in the HTML until now: pressed earlier, the form would submit natively and reload
  // the page, question lost.
  document.getElementById("ask").disabled = false;

  cancel.addEventListener("click", function () {
    fetch("/cancel", {method: "POST", headers: {"Content-Type": "application/json"},
                      body: JSON.stringify({stream_id: streamId})});
  });
})();
