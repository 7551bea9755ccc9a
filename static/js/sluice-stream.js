/*
 * sluice-stream.js — one generation, streamed: `Sluice.Stream` (what `Sluice.stream` returns).
 *
 * Its request (the options as a JSON body or a query string), its events handed to the
 * callbacks exactly once and in order, its state, its one ending, cancel and close. How the
 * events arrive, and how they come back after a drop, is sluice-transport.js's. Load order and
 * options: sluice.js.
 */
(function (global) {
  "use strict";

  var Sluice = global.Sluice;
  if (!Sluice || !Sluice._shared) {
    throw new Error("sluice-stream.js needs sluice.js: load /static/js/sluice.js before it");
  }

  var TERMINAL = { done: true, error: true, cancelled: true };
  var CANCEL_FALLBACK_MS = 2000;
  var BODY_FIELDS = ["profile", "system", "provider", "model", "max_tokens", "temperature", "tools",
                     "response_format", "chunking", "reasoning"];

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

  /**
   * One generation, streamed. Its options: the header of sluice.js.
   * @constructor
   */
  function Stream(opts) {
    this.opts = opts || {};
    this.base = (this.opts.baseUrl || "").replace(/\/$/, "");
    this.streamId = this.opts.stream_id || Sluice.newStreamId();
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
      call(o.onError, err, Sluice.describeError(err), this);
    }
  };

  /** A failure outside the event stream (pre-stream JSON error, lost connection). */
  Stream.prototype.fail = function (err) {
    if (this.finished) return;
    this.terminal({ type: "error", error: err });
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
    var request = Sluice.cancel(this.streamId, { baseUrl: this.base, headers: this.opts.headers });
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

  Sluice.Stream = Stream;
})(typeof window !== "undefined" ? window : this);
