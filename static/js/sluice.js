/*
 * sluice.js — a small client for Sluice's Server-Sent Events streams.
 *
 * Plain ES5 syntax, no modules, no build step; it defines one global, `Sluice`.
 * It needs `EventSource`, and `fetch` + `Promise` for the "post" and "fetch" modes, and
 * sse-parser.js (the global `SluiceSSE`) loaded before it:
 *
 *   <script src="/static/js/sse-parser.js"></script>
 *   <script src="/static/js/sluice.js"></script>
 *
 *   var s = Sluice.stream({
 *     messages: [{role: "user", content: "Hello"}],   // or prompt: "Hello"
 *     provider: "anthropic", model: "claude-haiku-4-5",
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
 * Recovery: a browser EventSource reconnects by itself (with Last-Event-ID) after a dropped
 * connection, but gives up for good (readyState CLOSED) after a 502/503 or a response that is
 * not an event stream, as happens during a deploy. Sluice then re-attaches to
 * /streams/<id>/events?last_event_id=<last id> with backoff, for about thirty seconds.
 * A fresh EventSource cannot set the Last-Event-ID header; the server reads the query parameter.
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

  // Loud at load time: without the parser, only a refused start or a "fetch" stream would fail.
  if (!global.SluiceSSE || !global.SluiceSSE.Parser) {
    throw new Error("sluice.js needs sse-parser.js: load /static/js/sse-parser.js before it");
  }
  var SSEParser = global.SluiceSSE.Parser;

  var ID_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
  var TERMINAL = { done: true, error: true, cancelled: true };
  var BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 8000, 8000];
  var RECOVERY_BUDGET_MS = 30000;
  var CANCEL_FALLBACK_MS = 2000;
  var BODY_FIELDS = ["system", "provider", "model", "max_tokens", "temperature", "tools",
                     "response_format", "chunking", "reasoning"];

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

  /** The `seq` of an event id "<stream_id>:<seq>", or -1. */
  function seqOf(id) {
    var i = id ? id.lastIndexOf(":") : -1;
    if (i < 0) return -1;
    var n = parseInt(id.slice(i + 1), 10);
    return isNaN(n) ? -1 : n;
  }

  function call(fn) {
    if (typeof fn !== "function") return;
    try { fn.apply(null, Array.prototype.slice.call(arguments, 1)); }
    catch (e) { if (global.console) global.console.error(e); }
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
      prestream: true
    };
  }

  /**
   * One generation, streamed. See the file header for the options.
   * @constructor
   */
  function Stream(opts) {
    this.opts = opts || {};
    this.base = (this.opts.baseUrl || "").replace(/\/$/, "");
    this.streamId = this.opts.stream_id || newStreamId();
    this.method = this.opts.method || (this.opts.messages ? "post" : "get");
    this.state = null;
    this.lastEventId = "";
    this.lastSeq = 0;
    this.finished = false;
    this.source = null;         // the open EventSource, if any
    this.abort = null;          // aborts the open fetch, if any
    this.recoverStarted = 0;    // when the current run of failed attaches began
    this.attempt = 0;
    this.timer = null;
    this.cancelTimer = null;
    this.gotEventThisAttach = false;
    this.text = "";
    this.start();
  }

  Stream.prototype.setState = function (state) {
    if (this.state === state) return;
    this.state = state;
    call(this.opts.onState, state, this);
  };

  Stream.prototype.body = function () {
    var o = this.opts, body = { stream_id: this.streamId };
    if (o.messages) body.messages = o.messages; else body.prompt = o.prompt;
    for (var i = 0; i < BODY_FIELDS.length; i++) {
      var k = BODY_FIELDS[i];
      if (o[k] !== undefined && o[k] !== null && o[k] !== "") body[k] = o[k];
    }
    return body;
  };

  Stream.prototype.query = function () {
    var body = this.body(), parts = [];
    for (var k in body) {
      if (!Object.prototype.hasOwnProperty.call(body, k) || k === "messages") continue;
      var v = body[k];
      if (v && v.join) v = v.join(",");
      parts.push(encodeURIComponent(k) + "=" + encodeURIComponent(String(v)));
    }
    return parts.join("&");
  };

  Stream.prototype.headers = function (extra) {
    var h = {}, k, given = this.opts.headers || {};
    for (k in given) if (Object.prototype.hasOwnProperty.call(given, k)) h[k] = given[k];
    for (k in extra) if (Object.prototype.hasOwnProperty.call(extra, k)) h[k] = extra[k];
    return h;
  };

  Stream.prototype.start = function () {
    var self = this;
    this.setState("streaming");
    if (this.method === "get") {
      if (this.opts.messages) throw new Error("Sluice: messages need method \"post\" or \"fetch\"");
      this.openEventSource(this.base + "/stream?" + this.query(), true);
    } else if (this.method === "fetch") {
      this.openFetch(this.base + "/stream", {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json", "Accept": "text/event-stream" }),
        body: JSON.stringify(this.body()),
        credentials: "same-origin"
      }, true);
    } else {
      global.fetch(this.base + "/streams", {
        method: "POST",
        headers: this.headers({ "Content-Type": "application/json", "Accept": "application/json" }),
        body: JSON.stringify(this.body()),
        credentials: "same-origin"
      }).then(function (response) {
        return readJson(response).then(function (json) {
          if (self.finished) return;
          if (!response.ok || !json || !json.events_url) {
            self.fail(errorFromResponse(response, json));
            return;
          }
          self.eventsUrl = json.events_url;
          self.openEventSource(self.base + json.events_url);
        });
      }, function () {
        self.fail({ type: "connection", message: "Could not reach the server.", status: 0, retryable: true });
      });
    }
  };

  /** Where to re-attach: the generation's events, after the last event we have. */
  Stream.prototype.resumeUrl = function () {
    var url = this.base + "/streams/" + encodeURIComponent(this.streamId) + "/events";
    if (this.lastEventId) url += "?last_event_id=" + encodeURIComponent(this.lastEventId);
    return url;
  };

  /**
   * `starting`: this EventSource starts the generation (GET /stream). If the browser gives up
   * on it before any event, it may have been refused (400, 401, 429, 503...), and EventSource
   * hides the status: the same GET is sent once more with fetch, which can read it. The request
   * carries this stream's client-chosen id, so if it did start, this attaches to it instead.
   */
  Stream.prototype.openEventSource = function (url, starting) {
    var self = this;
    var source = new global.EventSource(url, { withCredentials: !!this.opts.withCredentials });
    this.source = source;
    this.gotEventThisAttach = false;
    source.onopen = function () {
      if (self.source === source && !self.finished) self.setState("streaming");
    };
    source.onmessage = function (ev) {
      if (self.source !== source) return;
      self.handle(ev.data, ev.lastEventId);
    };
    source.onerror = function () {
      if (self.source !== source || self.finished) return;
      if (source.readyState === global.EventSource.CLOSED) {
        // The browser gave up (5xx, 204, not an event stream): we decide what happens next.
        self.source = null;
        if (starting && !self.gotEventThisAttach && self.lastSeq === 0 && global.fetch) {
          self.openFetch(url, {
            method: "GET",
            headers: self.headers({ "Accept": "text/event-stream" }),
            credentials: self.opts.withCredentials ? "include" : "same-origin"
          }, true);
          return;
        }
        self.recover();
      } else {
        // CONNECTING: the browser retries by itself, with Last-Event-ID.
        self.setState("reconnecting");
      }
    };
  };

  Stream.prototype.openFetch = function (url, init, first) {
    var self = this;
    var controller = global.AbortController ? new global.AbortController() : null;
    if (controller) init.signal = controller.signal;
    var aborted = false;
    this.abort = function () { aborted = true; if (controller) controller.abort(); };
    this.gotEventThisAttach = false;
    var parser = new SSEParser(function (ev) { if (!aborted) self.handle(ev.data, ev.id); });
    global.fetch(url, init).then(function (response) {
      if (aborted) return null;
      var type = response.headers.get("Content-Type") || "";
      if (response.status === 204) { self.abort = null; self.recover(); return null; }
      if (!response.ok || type.indexOf("text/event-stream") !== 0) {
        if (first && response.status >= 400) {
          // Refused before it started: nothing to re-attach to, the status tells why.
          return readJson(response).then(function (json) { self.fail(errorFromResponse(response, json)); });
        }
        self.abort = null;
        self.recover();
        return null;
      }
      if (!first || self.state === "reconnecting") self.setState("streaming");
      var reader = response.body.getReader();
      function pump() {
        return reader.read().then(function (chunk) {
          if (aborted) { reader.cancel(); return null; }
          if (chunk.done) {
            parser.end();
            if (!self.finished) { self.abort = null; self.recover(); }
            return null;
          }
          parser.feed(chunk.value);
          return pump();
        });
      }
      return pump();
    }).then(null, function () {
      if (aborted || self.finished) return;
      self.abort = null;
      self.recover();
    });
  };

  /** One event's data and id, from any transport. */
  Stream.prototype.handle = function (data, id) {
    if (this.finished) return;
    var seq = seqOf(id);
    if (seq >= 0) {
      if (seq <= this.lastSeq) return;     // a duplicate, replayed twice
      this.lastSeq = seq;
    }
    if (id) this.lastEventId = id;
    this.gotEventThisAttach = true;
    this.attempt = 0;
    this.recoverStarted = 0;
    if (this.state === "reconnecting") this.setState("streaming");
    if (data === "[DONE]") { this.closeTransport(); return; }
    var msg;
    try { msg = JSON.parse(data); } catch (e) { return; }
    var o = this.opts;
    call(o.onEvent, msg, this);
    switch (msg.type) {
      case "start": call(o.onStart, msg, this); break;
      case "text": this.text += msg.content; call(o.onText, msg.content, msg, this); break;
      case "reasoning": call(o.onReasoning, msg.content, msg, this); break;
      case "tool_call": call(o.onToolCall, msg, this); break;
      case "tool_result": call(o.onToolResult, msg, this); break;
      case "json": call(o.onJson, msg.value, msg.complete, msg, this); break;
      case "notice": call(o.onNotice, msg, this); break;
      default: break;
    }
    if (TERMINAL[msg.type]) this.terminal(msg);
  };

  Stream.prototype.terminal = function (msg) {
    this.finished = true;
    this.closeTransport();
    this.clearTimers();
    var o = this.opts;
    if (msg.type === "done") {
      this.setState("done");
      call(o.onDone, msg, this);
    } else if (msg.type === "cancelled") {
      this.setState("cancelled");
      call(o.onCancelled, msg, this);
    } else {
      var err = msg.error || {};
      this.setState("error");
      call(o.onError, err, describeError(err), this);
    }
  };

  /** A failure outside the event stream (pre-stream JSON error, lost connection). */
  Stream.prototype.fail = function (err) {
    if (this.finished) return;
    this.terminal({ type: "error", error: err });
  };

  /** The transport is gone without a terminal event: re-attach with backoff, or give up. */
  Stream.prototype.recover = function () {
    var self = this;
    if (this.finished) return;
    this.setState("reconnecting");
    var now = Date.now();
    if (!this.recoverStarted || this.gotEventThisAttach) this.recoverStarted = now;
    this.gotEventThisAttach = false;
    if (now - this.recoverStarted > RECOVERY_BUDGET_MS) {
      this.fail({ type: "connection", status: 0, retryable: true,
                  message: "The connection to the server was lost and could not be restored." });
      return;
    }
    var delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt += 1;
    this.timer = global.setTimeout(function () {
      self.timer = null;
      if (self.finished) return;
      // An attach answered 204 (or 404) and one that failed look alike to EventSource:
      // ask the status route whether there is anything left to wait for.
      self.probe().then(function (verdict) {
        if (self.finished) return;
        if (verdict === "gone") {
          self.fail({ type: "not_found", status: 404, retryable: false,
                      message: "This answer is no longer available on the server." });
        } else if (verdict && verdict.state) {
          self.finishFromStatus(verdict);
        } else if (verdict === "unreachable") {
          self.recover();
        } else if (self.method === "fetch") {
          self.openFetch(self.resumeUrl(), {
            method: "GET",
            headers: self.headers(self.lastEventId ? { "Accept": "text/event-stream", "Last-Event-ID": self.lastEventId }
                                                   : { "Accept": "text/event-stream" }),
            credentials: "same-origin"
          }, false);
        } else {
          self.openEventSource(self.resumeUrl());
        }
      });
    }, delay);
  };

  /**
   * GET /streams/<id>: "attach" when there is more to read, "gone" for an unknown stream,
   * "unreachable" when the server does not answer, or the status object of a generation
   * that ended and whose every event we already have.
   */
  Stream.prototype.probe = function () {
    var self = this;
    if (!global.fetch) return { then: function (f) { f("attach"); } };
    var url = this.base + "/streams/" + encodeURIComponent(this.streamId);
    return global.fetch(url, { headers: this.headers({ "Accept": "application/json" }), credentials: "same-origin" })
      .then(function (response) {
        if (response.status === 404) return "gone";
        if (!response.ok) return "unreachable";
        return readJson(response).then(function (status) {
          if (status && status.state && status.state !== "running" &&
              typeof status.events === "number" && status.events <= self.lastSeq) {
            return status;
          }
          return "attach";
        });
      }, function () { return "unreachable"; });
  };

  /** Every event was seen but the terminal one was lost with its connection. */
  Stream.prototype.finishFromStatus = function (status) {
    if (status.state === "done") {
      this.terminal({ type: "done", stop_reason: status.stop_reason, usage: status.usage || {}, metrics: {} });
    } else if (status.state === "cancelled") {
      this.terminal({ type: "cancelled", reason: "user", usage: status.usage || {} });
    } else {
      this.terminal({ type: "error", error: { type: "upstream", message: "The answer ended with an error.", retryable: true } });
    }
  };

  Stream.prototype.closeTransport = function () {
    if (this.source) { this.source.close(); this.source = null; }
    if (this.abort) { var a = this.abort; this.abort = null; a(); }
  };

  Stream.prototype.clearTimers = function () {
    if (this.timer) { global.clearTimeout(this.timer); this.timer = null; }
    if (this.cancelTimer) { global.clearTimeout(this.cancelTimer); this.cancelTimer = null; }
  };

  /**
   * Stop the generation: POST /cancel. The server then sends `cancelled` on the stream; if that
   * does not arrive soon (the stream was never opened, or is reconnecting), end it here.
   * Returns the fetch promise (resolving to the server's JSON answer, or null).
   */
  Stream.prototype.cancel = function () {
    var self = this;
    if (this.finished) return global.Promise ? global.Promise.resolve(null) : null;
    var request = cancel(this.streamId, { baseUrl: this.base, headers: this.opts.headers });
    var fallback = function () {
      if (self.finished || self.cancelTimer) return;
      self.cancelTimer = global.setTimeout(function () {
        self.cancelTimer = null;
        if (!self.finished) self.terminal({ type: "cancelled", reason: "user", usage: null, local: true });
      }, CANCEL_FALLBACK_MS);
    };
    request.then(fallback, fallback);
    return request;
  };

  /** Stop listening now. The server ends the generation after its disconnect grace period. */
  Stream.prototype.close = function () {
    this.finished = true;
    this.clearTimers();
    this.closeTransport();
  };

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
    stream: function (opts) { return new Stream(opts); },
    cancel: cancel,
    signIn: signIn,
    signOut: signOut,
    newStreamId: newStreamId,
    describeError: describeError,
    SSEParser: SSEParser,     // the same as SluiceSSE.Parser, kept for pages that used it here
    Stream: Stream
  };
})(typeof window !== "undefined" ? window : this);
