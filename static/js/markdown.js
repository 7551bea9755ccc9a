/*
 * SluiceMarkdown: show a model's Markdown answer as formatted text, safely, while it streams.
 *
 *   <script src="/static/vendor/markdown-it/markdown-it.min.js"></script>
 *   <script src="/static/vendor/dompurify/purify.min.js"></script>
 *   <script src="/static/js/markdown.js"></script>
 *
 *   SluiceMarkdown.render(element, markdownText, {images: false, streaming: false});
 *
 * `render` is the one function a page needs: it replaces the element's content with the
 * rendered Markdown and keeps the plain text in `element.dataset.text`. Call it again with the
 * longer text as fragments arrive; `SluiceMarkdown.live(element)` does that for you, at most
 * once per animation frame (`append(chunk)`, `finish()`, `text()`, `reset()`).
 *
 * Safety, in two layers: markdown-it runs with `html: false` (raw HTML in the model's text is
 * shown as text) and a link check that admits only http(s) URLs; DOMPurify then sanitizes the
 * HTML it produced, with a short allow-list, as a second line should markdown-it ever let
 * something through. Links open with rel="noopener noreferrer"; images are off unless
 * `images: true` (then only https). sluice.js stays text-only: this is the page's choice.
 */
(function (global) {
  "use strict";

  var SAFE_URL = /^https?:\/\//i;
  var TAGS = ["a", "p", "br", "hr", "em", "strong", "s", "del", "code", "pre", "blockquote",
              "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody",
              "tr", "th", "td", "span"];
  var parsers = {};

  function parser(images) {
    var key = images ? "img" : "noimg";
    if (parsers[key]) return parsers[key];
    var md = global.markdownit({ html: false, linkify: true, typographer: false, breaks: false });
    md.validateLink = function (url) { return SAFE_URL.test(String(url).trim()); };
    if (!images) md.disable("image");
    parsers[key] = md;
    return md;
  }

  /** The code block's text on the clipboard (the button is drawn by CSS, so it adds no text). */
  function copyButton(pre) {
    var button = document.createElement("button");
    button.type = "button";
    button.className = "copy-code";
    button.setAttribute("aria-label", "Copy code");
    button.addEventListener("click", function () {
      var code = pre.querySelector("code") || pre;
      var text = code.textContent;
      var done = function () { button.setAttribute("data-copied", "true"); };
      if (navigator.clipboard && navigator.clipboard.writeText) {
        navigator.clipboard.writeText(text).then(done, function () {});
      }
    });
    return button;
  }

  /** The deepest last element, where a streaming caret belongs (inside an open code block). */
  function tail(node) {
    var last = node.lastElementChild;
    while (last && last.lastElementChild && last.lastElementChild.tagName !== "BR") {
      last = last.lastElementChild;
    }
    return last || node;
  }

  function build(text, options) {
    var html = parser(!!options.images).render(text);
    var config = {
      ALLOWED_TAGS: options.images ? TAGS.concat(["img"]) : TAGS,
      ALLOWED_ATTR: ["href", "title", "start", "class", "src", "alt"],
      ALLOWED_URI_REGEXP: SAFE_URL,
      RETURN_DOM_FRAGMENT: true
    };
    var fragment = global.DOMPurify.sanitize(html, config);
    var anchors = fragment.querySelectorAll("a");
    for (var i = 0; i < anchors.length; i++) {
      anchors[i].setAttribute("rel", "noopener noreferrer");
      anchors[i].setAttribute("target", "_blank");
    }
    var images = fragment.querySelectorAll("img");
    for (var j = 0; j < images.length; j++) {
      if (!/^https:\/\//i.test(images[j].getAttribute("src") || "")) images[j].remove();
      else images[j].setAttribute("referrerpolicy", "no-referrer");
    }
    var blocks = fragment.querySelectorAll("pre");
    for (var k = 0; k < blocks.length; k++) blocks[k].insertBefore(copyButton(blocks[k]), blocks[k].firstChild);
    return fragment;
  }

  /** Render `text` (Markdown) into `element`; keep the plain text in `data-text`. */
  function render(element, text, options) {
    options = options || {};
    var fragment = build(text || "", options);
    if (options.streaming) {
      var caret = document.createElement("span");
      caret.className = "caret";
      caret.setAttribute("aria-hidden", "true");
      var at = tail(fragment);
      (at === fragment || at.tagName === "HR" ? fragment : at).appendChild(caret);
    }
    // One swap: the old content stays on screen until the new one is complete (no flicker).
    element.replaceChildren(fragment);
    element.setAttribute("data-text", text || "");
    element.classList.add("markdown");
  }

  /** A streaming view of `element`: fragments in, a render per animation frame at most. */
  function live(element, options) {
    options = options || {};
    var parts = [];
    var scheduled = 0;
    var streaming = false;
    var frame = global.requestAnimationFrame || function (fn) { return global.setTimeout(fn, 16); };
    var cancelFrame = global.cancelAnimationFrame || global.clearTimeout;

    function draw() {
      scheduled = 0;
      render(element, parts.join(""), { images: options.images, streaming: streaming });
    }

    return {
      append: function (chunk) {
        parts.push(chunk);
        streaming = true;
        if (!scheduled) scheduled = frame(draw);
      },
      finish: function () {
        if (scheduled) { cancelFrame(scheduled); scheduled = 0; }
        streaming = false;
        draw();
      },
      reset: function () {
        if (scheduled) { cancelFrame(scheduled); scheduled = 0; }
        parts = [];
        streaming = false;
        element.replaceChildren();
        element.setAttribute("data-text", "");
      },
      text: function () { return parts.join(""); }
    };
  }

  global.SluiceMarkdown = { render: render, live: live };
})(window);
