/*
 * sluice-transport.js — how a `Sluice.Stream`'s events arrive, and come back after a drop.
 *
 * Connect: an EventSource (GET /stream, or the `events_url` of POST /streams), or fetch with a
 * ReadableStream read by sse-parser.js ("fetch" mode, and to read a refused start's status).
 * Reconnect: when the browser gives up (5xx, 204, not an event stream), re-attach to
 * /streams/<id>/events after the last event id, with backoff, for about thirty seconds, asking
 * GET /streams/<id> first whether anything is left to wait for. Load order: sluice.js.
 */
(function (global) {
  "use strict";

  // Loud at load time: without the parser, only a refused start or a "fetch" stream would fail.
  if (!global.SluiceSSE || !global.SluiceSSE.Parser) {
    throw new Error("sluice-transport.js needs sse-parser.js: load /static/js/sse-parser.js before it");
  }
  var Sluice = global.Sluice;
  if (!Sluice || !Sluice.Stream) {
    throw new Error("sluice-transport.js needs sluice.js and sluice-stream.js: load them before it");
  }
  var SSEParser = global.SluiceSSE.Parser;
  var Stream = Sluice.Stream;
  var readJson = Sluice._shared.readJson;
  var errorFromResponse = Sluice._shared.errorFromResponse;

  var BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 8000, 8000];
  var RECOVERY_BUDGET_MS = 30000;

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

  Sluice.SSEParser = SSEParser;
})(typeof window !== "undefined" ? window : this);
