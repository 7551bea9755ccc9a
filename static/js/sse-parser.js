/*
 * sse-parser.js — an event-stream (Server-Sent Events) parser, for a body read with fetch.
 *
 * Plain ES5 syntax, no modules, no build step; it defines one global, `SluiceSSE`.
 * sluice-transport.js needs it: load this file first. `EventSource` parses by itself; this is for the
 * streams a page reads with `fetch` (a POST body, custom headers), by the same rules:
 * https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation
 *
 *   var parser = new SluiceSSE.Parser(function (ev) {   // ev: {data, id, event}
 *     // event is "message" unless an `event:` field named it; id is the last event id
 *   });
 *   parser.feed(chunk);   // a string, or a Uint8Array of UTF-8 bytes; split anywhere
 *   parser.end();         // the body ended: an event without its blank line is dropped
 *   parser.lastEventId;   // as EventSource keeps it (survives end(), like a reconnect)
 *   parser.retry;         // the last valid `retry:` in milliseconds, or null
 *
 * Feed one stream either strings or bytes, not both: bytes are decoded here, so a character
 * split between two chunks comes out whole.
 */
(function (global) {
  "use strict";

  var LF = 10, CR = 13, BOM = 0xFEFF;

  /**
   * @constructor
   * @param {function({data: string, id: string, event: string})} onEvent
   */
  function Parser(onEvent) {
    this.onEvent = onEvent;
    this.lastEventId = "";
    this.retry = null;
    this.decoder = null;
    this.reset();
  }

  /** The per-connection state: what end() throws away. */
  Parser.prototype.reset = function () {
    this.atStart = true;     // a leading BOM is still to be dropped
    this.partial = "";       // a line without its line end yet
    this.pendingCR = false;  // the last chunk ended with CR: an LF first in the next is its pair
    this.data = [];
    this.event = "";
    this.idBuffer = this.lastEventId;
  };

  Parser.prototype.feed = function (chunk) {
    var text = typeof chunk === "string" ? chunk : this.decode(chunk);
    if (!text) return;
    if (this.atStart) {
      this.atStart = false;
      if (text.charCodeAt(0) === BOM) text = text.slice(1);
    }
    var i = 0, start = 0, n = text.length, c;
    if (this.pendingCR && text.charCodeAt(0) === LF) i = start = 1;
    this.pendingCR = false;
    for (; i < n; i++) {
      c = text.charCodeAt(i);
      if (c !== LF && c !== CR) continue;
      this.line(this.partial + text.slice(start, i));
      this.partial = "";
      if (c === CR) {
        if (i + 1 === n) this.pendingCR = true;
        else if (text.charCodeAt(i + 1) === LF) i++;
      }
      start = i + 1;
    }
    // Only the new text is scanned, so a long line fed in small pieces stays linear.
    this.partial += text.slice(start);
  };

  /** The body ended. Per the spec, what was not closed by a blank line is discarded. */
  Parser.prototype.end = function () {
    if (this.decoder) this.decoder.decode();  // resets it; a cut-off character is dropped with its line
    this.reset();
  };

  Parser.prototype.decode = function (bytes) {
    // ignoreBOM keeps a BOM in the text, so that exactly one is dropped (by feed), as with strings.
    if (!this.decoder) this.decoder = new global.TextDecoder("utf-8", { ignoreBOM: true });
    return this.decoder.decode(bytes, { stream: true });
  };

  Parser.prototype.line = function (line) {
    if (line === "") { this.dispatch(); return; }
    if (line.charCodeAt(0) === 58) return;  // ':' starts a comment
    var colon = line.indexOf(":");
    var name = colon < 0 ? line : line.slice(0, colon);
    var value = colon < 0 ? "" : line.slice(colon + 1);
    if (value.charAt(0) === " ") value = value.slice(1);
    if (name === "data") this.data.push(value);
    else if (name === "event") this.event = value;
    else if (name === "id") { if (value.indexOf("\0") < 0) this.idBuffer = value; }
    else if (name === "retry") { if (/^[0-9]+$/.test(value)) this.retry = parseInt(value, 10); }
  };

  Parser.prototype.dispatch = function () {
    // The id is set even by a blank line that dispatches nothing, as EventSource sets it.
    this.lastEventId = this.idBuffer;
    var data = this.data, event = this.event;
    this.data = [];
    this.event = "";
    if (!data.length) return;
    this.onEvent({ data: data.join("\n"), id: this.lastEventId, event: event || "message" });
  };

  global.SluiceSSE = { Parser: Parser };
})(typeof window !== "undefined" ? window : this);
