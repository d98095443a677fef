/*
 * taskcast-widget.js: keeps a server-rendered Taskcast task view live.
 *
 * The Taskcast stream carries JSON envelopes, not HTML fragments, and the view needs per-event
 * state (a delta appends to its series, a snapshot replaces it), so this script reads the
 * stream with a plain EventSource instead of the htmx SSE extension. EventSource also resends
 * the last `id:` as Last-Event-ID when it reconnects by itself, so a dropped connection resumes
 * with no gap and no duplicate.
 *
 * Rules (mirrored by taskcast/widget/_view.py, which renders the first paint):
 *  - A connection that opens without a cursor gets the whole history again, with runs of
 *    `accumulate` deltas collapsed into `seriesSnapshot` events: the view is reset before the
 *    first event of such a replay, so nothing is counted twice (this is what makes a page
 *    refresh mid-stream rebuild the text exactly).
 *  - `taskcast.resync` (the cursor was unknown) resets the view too; a full replay follows.
 *  - `taskcast.done` closes the EventSource (no browser reconnect) and shows the final status,
 *    except `{"reason": "replaced"}` (an archive import overwrote the task): the view is cleared
 *    and a new EventSource, without a cursor (the old ids mean nothing in the new history),
 *    replays the new history from its start; a `taskcast:replaced` DOM event is dispatched.
 *  - A stream the browser gives up on is retried with backoff; if it was refused because the
 *    server's CORS settings do not allow this page's origin, the view says so (an EventSource
 *    error tells no reason, so a fetch probe finds it out) instead of waiting silently.
 * Every value is written with textContent, never as HTML.
 */
(function () {
  "use strict";

  var TERMINAL = { completed: true, failed: true, timeout: true, cancelled: true };
  var STATUS_EVENT = "taskcast:status";
  var SUMMARY_CHARS = 200;
  var MAX_RETRY_MS = 30000;

  function isObject(value) {
    return value !== null && typeof value === "object" && !Array.isArray(value);
  }

  function summarize(data, limit) {
    if (data === null || data === undefined) return "";
    var text = JSON.stringify(data);
    limit = limit || SUMMARY_CHARS;
    return text.length > limit ? text.slice(0, limit - 1) + "\u2026" : text;
  }

  function number(value) {
    return typeof value === "number" && isFinite(value) ? value : null;
  }

  function clamp(value) {
    return Math.min(100, Math.max(0, value));
  }

  function percentOf(data) {
    if (!isObject(data)) return null;
    var keys = ["pct", "percent", "progress"];
    for (var i = 0; i < keys.length; i++) {
      var n = number(data[keys[i]]);
      if (n !== null) return clamp(n);
    }
    var current = number(data.current), total = number(data.total);
    if (current !== null && total !== null && total > 0) return clamp((100 * current) / total);
    return null;
  }

  function caption(data) {
    if (isObject(data)) {
      if (typeof data.label === "string") return data.label;
      if (typeof data.message === "string") return data.message;
      if (percentOf(data) !== null) return "";
    }
    if (typeof data === "string") return data;
    return summarize(data);
  }

  function merge(previous, data, field) {
    if (isObject(previous) && isObject(data) &&
        typeof previous[field] === "string" && typeof data[field] === "string") {
      var merged = Object.assign({}, data);
      merged[field] = previous[field] + data[field];
      return merged;
    }
    return data;
  }

  function textOf(value, field) {
    if (isObject(value) && typeof value[field] === "string") return value[field];
    if (typeof value === "string") return value;
    return summarize(value, Infinity);
  }

  function formatPct(value) {
    return String(Math.round(value * 10) / 10);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function findBySeries(container, seriesId) {
    var children = container.children;
    for (var i = 0; i < children.length; i++) {
      if (children[i].getAttribute("data-series-id") === seriesId) return children[i];
    }
    return null;
  }

  function Widget(root) {
    this.root = root;
    this.eventsUrl = root.getAttribute("data-events-url");
    this.logLimit = parseInt(root.getAttribute("data-log-limit"), 10) || 200;
    this.withCredentials = root.getAttribute("data-with-credentials") === "true";
    this.statusEl = root.querySelector("[data-tc-status]");
    this.progressEl = root.querySelector("[data-tc-progress]");
    this.textsEl = root.querySelector("[data-tc-texts]");
    this.outcomeEl = root.querySelector("[data-tc-outcome]");
    this.logEl = root.querySelector("[data-tc-log]");
    this.logCountEl = root.querySelector("[data-tc-log-count]");
    this.logCount = parseInt(this.logCountEl.textContent, 10) || 0;
    this.values = {};  // seriesId -> {value, field}; rebuilt by the first replay
    this.source = null;
    this.retries = 0;
    this.gotId = false;
    this.resetPending = false;
    this.done = false;
  }

  Widget.prototype.setConnection = function (state) {
    this.root.setAttribute("data-connection", state);
  };

  // Shown above the view while the stream cannot connect for a reason the reader must act on;
  // removed once a stream opens.
  Widget.prototype.showConnectionError = function (text) {
    var note = this.root.querySelector("[data-tc-connection-error]");
    if (text === null) {
      if (note) note.parentNode.removeChild(note);
      return;
    }
    if (!note) {
      note = el("p", "tc-connection-error");
      note.setAttribute("data-tc-connection-error", "");
      note.setAttribute("role", "alert");
      var header = this.root.querySelector(".tc-header");
      this.root.insertBefore(note, header ? header.nextSibling : this.root.firstChild);
    }
    note.textContent = text;
  };

  // Why the browser gave up on the stream, as far as a page can tell: "cors" when the server
  // answers (an opaque no-cors request goes through) but a CORS request is refused, so the
  // server does not allow this origin; null otherwise (an HTTP error such as 404, retried, or
  // the server is unreachable). Both probes are cancelled as soon as their headers arrive.
  Widget.prototype.diagnose = function () {
    if (!window.fetch || !window.AbortController) return Promise.resolve(null);
    var url = this.eventsUrl;
    var credentials = this.withCredentials ? "include" : "same-origin";
    function probe(mode) {
      var abort = new AbortController();
      return fetch(url, { mode: mode, credentials: credentials, cache: "no-store", signal: abort.signal })
        .then(function () { abort.abort(); });
    }
    return probe("cors").then(
      function () { return null; },
      function () {
        return probe("no-cors").then(function () { return "cors"; }, function () { return null; });
      });
  };

  Widget.prototype.setStatus = function (status) {
    this.root.setAttribute("data-status", status);
    this.statusEl.setAttribute("data-status", status);
    this.statusEl.textContent = status;
  };

  Widget.prototype.reset = function () {
    this.values = {};
    this.progressEl.textContent = "";
    this.textsEl.textContent = "";
    this.outcomeEl.textContent = "";
    this.logEl.textContent = "";
    this.logCount = 0;
    this.logCountEl.textContent = "0";
  };

  Widget.prototype.connect = function () {
    if (this.done || !this.eventsUrl) return;
    var self = this;
    var source = new EventSource(this.eventsUrl, { withCredentials: this.withCredentials });
    this.source = source;
    // A new EventSource carries no cursor: the server replays everything.
    this.gotId = false;
    this.setConnection("connecting");
    source.addEventListener("open", function () {
      if (self.source !== source) return;
      self.retries = 0;
      self.showConnectionError(null);
      // Reconnecting by itself, the browser resends the last id and gets only what is new;
      // with no id yet, this connection replays the whole history, so start from scratch.
      self.resetPending = !self.gotId;
      self.setConnection("open");
    });
    source.addEventListener("taskcast.event", function (message) {
      if (self.source !== source) return;
      var envelope;
      try {
        envelope = JSON.parse(message.data);
      } catch (err) {
        return;  // A malformed frame is skipped, as the original's clients do.
      }
      if (message.lastEventId) self.gotId = true;
      if (self.resetPending) {
        self.resetPending = false;
        self.reset();
      }
      self.apply(envelope);
    });
    source.addEventListener("taskcast.resync", function (message) {
      if (self.source !== source) return;
      var payload = {};
      try { payload = JSON.parse(message.data); } catch (err) { /* keep {} */ }
      self.resetPending = false;
      self.reset();
      if (typeof payload.status === "string") self.setStatus(payload.status);
    });
    source.addEventListener("taskcast.done", function (message) {
      if (self.source !== source) return;
      var payload = {};
      try { payload = JSON.parse(message.data); } catch (err) { /* keep {} */ }
      if (payload.reason === "replaced") {
        self.replaced();
        return;
      }
      self.finish(typeof payload.reason === "string" ? payload.reason : null);
    });
    source.addEventListener("error", function () {
      if (self.source !== source || self.done) return;
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (an HTTP error, e.g. 401/404/503): try again with backoff.
        // A new EventSource starts without a cursor, so its replay resets the view.
        self.source = null;
        self.setConnection("reconnecting");
        self.retries += 1;
        var delay = Math.min(MAX_RETRY_MS, 500 * Math.pow(2, Math.min(self.retries, 6)));
        var attempt = self.retries;
        self.diagnose().then(function (reason) {
          // Only the latest failure speaks: a stream may have opened since.
          if (self.done || self.retries !== attempt || self.source !== null) return;
          if (reason === "cors") {
            self.setConnection("refused");
            self.showConnectionError(
              "Cannot connect: the Taskcast server's CORS settings do not allow this page's " +
              "origin, " + window.location.origin + " (taskcast start --cors-origin, " +
              "ServerConfig(cors_origins=...)" +
              (self.withCredentials ? "; with credentials the origin must be named, not *)." : ")."));
          }
        });
        window.setTimeout(function () { self.connect(); }, delay);
      } else {
        self.setConnection("reconnecting");  // The browser retries by itself, with the cursor.
      }
    });
  };

  // The task was overwritten by an archive import: follow its new history from the start.
  Widget.prototype.replaced = function () {
    if (this.source) this.source.close();
    this.source = null;
    this.retries = 0;
    this.resetPending = false;
    this.reset();
    this.root.dispatchEvent(new CustomEvent("taskcast:replaced", { bubbles: true }));
    this.connect();  // a new EventSource carries no Last-Event-ID
  };

  Widget.prototype.finish = function (reason) {
    this.done = true;
    if (this.source) this.source.close();
    this.source = null;
    if (reason && reason !== this.root.getAttribute("data-status")) {
      if (TERMINAL[reason] || reason === "deleted") this.setStatus(reason);
    }
    this.setConnection("closed");
    this.root.dispatchEvent(new CustomEvent("taskcast:done", { bubbles: true, detail: { reason: reason } }));
  };

  Widget.prototype.apply = function (envelope) {
    var data = envelope.data;
    var seriesId = envelope.seriesId;
    if (typeof seriesId === "string" && envelope.seriesMode === "accumulate") {
      var field = envelope.seriesAccField || "delta";
      var previous = this.values[seriesId];
      var value = envelope.seriesSnapshot || !previous ? data : merge(previous.value, data, field);
      this.values[seriesId] = { value: value, field: field };
      var pre = findBySeries(this.textsEl, seriesId);
      if (!pre) {
        pre = el("pre", "tc-text");
        pre.setAttribute("data-series-id", seriesId);
        this.textsEl.appendChild(pre);
      }
      pre.textContent = textOf(value, field);
    } else if (typeof seriesId === "string" && envelope.seriesMode === "latest") {
      this.showProgress(seriesId, data);
    }
    if (envelope.type === STATUS_EVENT && isObject(data)) {
      if (typeof data.status === "string") this.setStatus(data.status);
      this.showOutcome(data);
    }
    this.log(envelope);
  };

  Widget.prototype.showProgress = function (seriesId, data) {
    var item = el("div", "tc-progress-item");
    item.setAttribute("data-series-id", seriesId);
    item.appendChild(el("span", "tc-series-name", seriesId));
    var pct = percentOf(data);
    if (pct !== null) {
      var bar = el("progress", null, formatPct(pct) + "%");
      bar.max = 100;
      bar.value = pct;
      item.appendChild(bar);
      item.appendChild(el("span", "tc-pct", formatPct(pct) + "%"));
    }
    item.appendChild(el("span", "tc-caption", caption(data)));
    var existing = findBySeries(this.progressEl, seriesId);
    if (existing) this.progressEl.replaceChild(item, existing);
    else this.progressEl.appendChild(item);
  };

  Widget.prototype.showOutcome = function (data) {
    if ("error" in data && data.error !== null) {
      var error = data.error;
      var text = isObject(error) && typeof error.message === "string" ? error.message
        : typeof error === "string" ? error : summarize(error);
      var p = el("p", "tc-error");
      p.appendChild(el("strong", null, "Error:"));
      p.appendChild(document.createTextNode(" "));
      p.appendChild(el("span", "tc-error-text", text));
      this.outcomeEl.textContent = "";
      this.outcomeEl.appendChild(p);
    } else if ("result" in data && data.result !== null && TERMINAL[data.status]) {
      this.outcomeEl.textContent = "";
      this.outcomeEl.appendChild(el("p", "tc-outcome-label", "Result"));
      this.outcomeEl.appendChild(el("pre", "tc-result", summarize(data.result, Infinity)));
    }
  };

  Widget.prototype.log = function (envelope) {
    var item = el("li", "tc-log-entry tc-level-" + envelope.level);
    item.setAttribute("data-index", String(envelope.rawIndex));
    item.appendChild(el("code", "tc-log-index", "#" + envelope.rawIndex));
    item.appendChild(el("span", "tc-log-type", envelope.type + (envelope.seriesSnapshot ? " (snapshot)" : "")));
    item.appendChild(el("span", "tc-log-data", summarize(envelope.data)));
    this.logEl.appendChild(item);
    while (this.logEl.children.length > this.logLimit) this.logEl.removeChild(this.logEl.firstElementChild);
    this.logCount += 1;
    this.logCountEl.textContent = String(this.logCount);
  };

  function init(scope) {
    var roots = [];
    if (scope.matches && scope.matches("[data-taskcast-widget]")) roots.push(scope);
    if (scope.querySelectorAll) {
      var found = scope.querySelectorAll("[data-taskcast-widget]");
      for (var i = 0; i < found.length; i++) roots.push(found[i]);
    }
    roots.forEach(function (root) {
      if (root.taskcastWidget) return;
      var widget = new Widget(root);
      root.taskcastWidget = widget;
      // A finished task was rendered whole by the server: nothing to stream.
      if (TERMINAL[root.getAttribute("data-status")]) {
        widget.done = true;
        return;
      }
      widget.connect();
    });
  }

  window.TaskcastWidget = { init: init };

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { init(document); });
  } else {
    init(document);
  }
  // Widgets that htmx swaps in (lazy embeds) start once they are in the page.
  document.addEventListener("htmx:load", function (event) { init(event.target); });
  // Leaving the page closes the stream at once rather than when the tab is collected.
  window.addEventListener("pagehide", function () {
    var roots = document.querySelectorAll("[data-taskcast-widget]");
    for (var i = 0; i < roots.length; i++) {
      var widget = roots[i].taskcastWidget;
      if (widget && widget.source) {
        widget.source.close();
        widget.source = null;
      }
    }
  });
  // A page restored from the back/forward cache reconnects (from scratch: a full replay).
  window.addEventListener("pageshow", function (event) {
    if (!event.persisted) return;
    var roots = document.querySelectorAll("[data-taskcast-widget]");
    for (var i = 0; i < roots.length; i++) {
      var widget = roots[i].taskcastWidget;
      if (widget && !widget.done && !widget.source) widget.connect();
    }
  });
})();
