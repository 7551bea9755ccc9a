/*
 * sluice.js — a small client for Sluice's Server-Sent Events streams: the `Sluice` global.
 *
 * Plain ES5 syntax, no modules, no build step. Three files, loaded in this order, make the
 * client (each says at load time what it misses); a page that only signs in needs sluice.js:
 *
 *   <script src="/static/js/sse-parser.js"></script>        the event-stream parser (SluiceSSE)
 *   <script src="/static/js/sluice.js"></script>            this file: errors, cancel, sessions
 *   <script src="/static/js/sluice-stream.js"></script>     one generation: request, events, end
 *   <script src="/static/js/sluice-transport.js"></script>  EventSource / fetch, and reconnects
 *
 * It needs `EventSource`, and `fetch` + `Promise` for the "post" and "fetch" modes.
 *
 *   var s = Sluice.stream({
 *     messages: [{role: "user", content: "Hello"}],   // or prompt: "Hello"
 *     provider: "anthropic", model: "claude-haiku-4-5",
 *     profile: "support",                              // a profile of GET /profiles (optional)
 *     method: "post",                                  // "get" | "post" | "fetch"
 *     reasoning: "medium",                             // "off" (default) | "low" | "medium" | "high"
 *     onText: function (text, ev) {}, onDone: function (ev) {}, onState: function (state) {},
 *     onReasoning: function (text, ev) {}   // the model's thinking, never part of the answer
 *   });
 *   s.cancel();   // POST /cancel; the server answers with a `cancelled` event
 *   s.close();    // stop listening (the server stops the generation after its grace period)
 *
 * States passed to onState: "streaming", "reconnecting", "done", "cancelled", "error".
 *
 * Every callback: onStart(ev), onText(text, ev), onReasoning(text, ev), onToolCall(ev),
 * onToolResult(ev), onJson(value, complete, ev), onNotice(ev), onEvent(ev) (every event),
 * onState(state), onDone(ev), onCancelled(ev), onError(err, sentence); each gets the Stream
 * last. `stream.text` is all the answer's text so far.
 *
 * JSON mode (response_format: "json"): the answer's text is the JSON text itself, and onJson
 * gets the value parsed so far, first as soon as there is one, then each time it has grown by
 * about a quarter, and once more with complete === true and the validated object. A form fills
 * itself from onJson; a client that wants every fragment reads onText (stream.text is the JSON
 * text so far, usually incomplete: do not JSON.parse it before complete).
 *
 *   Sluice.stream({
 *     prompt: "A title, tags and a score for Sluice, as JSON", response_format: "json",
 *     onJson: function (value, complete) {        // {title: "Sl"}, ..., the whole object
 *       titleInput.value = value.title || "";       // a value only grows: never clear a field
 *       if (complete) form.classList.add("done");
 *     },
 *     onText: function (fragment, ev, stream) { raw.textContent = stream.text; }
 *   });
 *
 * Recovery (sluice-transport.js): a browser EventSource reconnects by itself (with
 * Last-Event-ID) after a dropped connection, but gives up for good (readyState CLOSED) after a
 * 502/503 or a response that is not an event stream, as happens during a deploy. Sluice then
 * re-attaches to /streams/<id>/events?last_event_id=<last id> with backoff, for about thirty
 * seconds. A fresh EventSource cannot set the Last-Event-ID header; the server reads the query
 * parameter.
 *
 * Model output is only ever handed to callbacks as strings; never put it in innerHTML.
 *
 * Signing in (servers with SLUICE_API_KEYS). An EventSource cannot send an Authorization
 * header, so a page exchanges a key for a session once, and the browser then sends the
 * session cookie (HttpOnly, SameSite=Strict: no script can read it) with every request:
 *
 *   Sluice.signIn(key).then(function (ok) { ... });   // POST /session, the key in a header
 *   Sluice.signOut();                                  // DELETE /session
 *
 * Never put a key in a URL (?api_key=, ?token=): the server refuses it with 401. A script
 * that is not a page needs no session: it sends its key in every request (opts.headers).
 */
(function (global) {
  "use strict";

  var ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

  var ERROR_SENTENCES = {
    invalid_request: "The request was not accepted.",
    authentication: "The server could not sign in to the model provider. Its API key may be missing or wrong.",
    permission: "This request is not allowed.",
    not_found: "The model or the answer could not be found.",
    rate_limit: "The model provider is receiving too many requests right now. Wait a moment and try again.",
    overloaded: "The model is overloaded right now. Try again in a moment.",
    timeout: "The model took too long to answer.",
    connection: "The connection to the model was lost.",
    upstream: "The model provider returned an error.",
    internal: "Something went wrong on the server."
  };
  var STATUS_SENTENCES = {
    401: "You need to sign in to use this server (your session may have ended): reload the page.",
    403: "This page is not allowed to send requests to the server.",
    404: "That answer could not be found.",
    413: "The conversation is too long to send. Start a new one.",
    414: "The prompt is too long to send this way.",
    415: "The request was not sent as JSON.",
    429: "You have too many answers running at once. Wait for one to finish.",
    502: "The server could not be reached. Try again in a moment.",
    503: "The server is busy or restarting. Try again in a moment.",
    504: "The server could not be reached. Try again in a moment."
  };
  // Statuses before the stream that are worth trying again later (the server says when).
  var RETRY_STATUSES = { 429: true, 502: true, 503: true, 504: true };

  /** A new stream id: 22 characters of [A-Za-z0-9_-] (132 random bits). */
  function newStreamId() {
    var bytes = new Uint8Array(22);
    global.crypto.getRandomValues(bytes);
    var out = "";
    for (var i = 0; i < bytes.length; i++) out += ID_ALPHABET.charAt(bytes[i] & 63);
    return out;
  }

  /**
   * A sentence a user understands, for an error object {type, message, status, field}:
   * the `error` of an `error` event, or a pre-stream JSON error (then `prestream` is true and
   * the HTTP status says more than the type: a 429 there is this client's limit, not the model's).
   */
  function describeError(err) {
    err = err || {};
    var s;
    if (err.type === "budget_exceeded") {
      // The server says when the window ends (Retry-After): a time the user can plan by.
      var back = err.retryAfter !== null && err.retryAfter !== undefined ?
        new Date(Date.now() + err.retryAfter * 1000) : null;
      return "You have used up your token budget for now." + (back ? " It comes back at " +
        back.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }) + "." : "");
    }
    if (err.prestream && STATUS_SENTENCES[err.status] && err.status !== 404) {
      s = STATUS_SENTENCES[err.status];
    } else if (err.type === "invalid_request" && err.message) {
      s = "The request was not accepted: " + String(err.message).replace(/\.$/, "") + ".";
    } else if (ERROR_SENTENCES[err.type]) {
      s = ERROR_SENTENCES[err.type];
    } else if (STATUS_SENTENCES[err.status]) {
      s = STATUS_SENTENCES[err.status];
    } else {
      s = err.message || "Something went wrong.";
    }
    if (err.retryable && !/try again/i.test(s)) s += " You can try again.";
    return s;
  }

  function readJson(response) {
    return response.text().then(function (text) {
      try { return JSON.parse(text); } catch (e) { return null; }
    });
  }

  /**
   * The error object of a pre-stream error response, told by its status (a 503 is not a 404):
   * {type, message, field, status, retryable, retryAfter (seconds, or null), prestream: true}.
   */
  function errorFromResponse(response, body) {
    var err = (body && body.error) || {};
    var after = parseInt(response.headers.get("Retry-After") || "", 10);
    return {
      type: err.type || null,
      message: err.message || ("The server answered " + response.status + "."),
      field: err.field || null,
      status: response.status,
      retryable: !!RETRY_STATUSES[response.status],
      retryAfter: isNaN(after) ? null : after,
      remainingTokens: typeof err.remaining_tokens === "number" ? err.remaining_tokens : null,
      prestream: true
    };
  }

  /** POST /cancel for any stream id (works before the generation exists). */
  function cancel(streamId, opts) {
    opts = opts || {};
    var headers = { "Content-Type": "application/json" }, given = opts.headers || {};
    for (var k in given) if (Object.prototype.hasOwnProperty.call(given, k)) headers[k] = given[k];
    return global.fetch((opts.baseUrl || "") + "/cancel", {
      method: "POST",
      headers: headers,
      body: JSON.stringify({ stream_id: streamId }),
      credentials: "same-origin",
      keepalive: true
    }).then(function (response) { return readJson(response); }, function () { return null; });
  }

  /**
   * Start a session with an API key: POST /session with the key in the Authorization header
   * (never in the URL). Resolves to true when the server set the session cookie, false when
   * it refused the key (401) or could not be reached.
   */
  function signIn(key, opts) {
    opts = opts || {};
    return global.fetch((opts.baseUrl || "") + "/session", {
      method: "POST",
      headers: { "Authorization": "Bearer " + key },
      credentials: "same-origin",
      cache: "no-store"
    }).then(function (response) { return response.status === 204; }, function () { return false; });
  }

  /** End this browser's session: DELETE /session. Resolves to true once it is ended. */
  function signOut(opts) {
    opts = opts || {};
    return global.fetch((opts.baseUrl || "") + "/session", { method: "DELETE", credentials: "same-origin" })
      .then(function (response) { return response.ok; }, function () { return false; });
  }

  global.Sluice = {
    version: "1.0",
    stream: function (opts) {
      if (!global.Sluice.Stream || !global.Sluice.Stream.prototype.start) {
        throw new Error("Sluice.stream needs sluice-stream.js and sluice-transport.js, loaded after sluice.js");
      }
      return new global.Sluice.Stream(opts);
    },
    cancel: cancel,
    signIn: signIn,
    signOut: signOut,
    newStreamId: newStreamId,
    describeError: describeError,
    // Set by sluice-stream.js (Stream) and sluice-transport.js (SSEParser, the same as
    // SluiceSSE.Parser, kept for pages that used it here).
    Stream: null,
    SSEParser: null,
    // For the other two files of the client, not an API.
    _shared: { readJson: readJson, errorFromResponse: errorFromResponse }
  };
})(typeof window !== "undefined" ? window : this);
