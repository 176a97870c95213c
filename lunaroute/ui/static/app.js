// LunaRoute UI: the raw viewer, keyboard keys and auto-refresh.
// Recorded text is only ever written with textContent (never innerHTML):
// everything a session holds is treated as hostile.
"use strict";
(function () {
  var dialog = document.getElementById("raw-dialog");

  function setText(id, value) {
    var node = document.getElementById(id);
    if (node) { node.textContent = value; }
  }

  function pretty(value) {
    if (value === null || value === undefined) { return ""; }
    if (typeof value === "string") { return value; }
    return JSON.stringify(value, null, 2);
  }

  function showRaw(url) {
    if (!dialog || typeof dialog.showModal !== "function") { window.location.href = url; return; }
    setText("raw-status", "Loading…");
    setText("raw-request", "");
    setText("raw-response", "");
    if (!dialog.open) { dialog.showModal(); }
    fetch(url, { credentials: "same-origin", headers: { "accept": "application/json" } })
      .then(function (response) {
        return response.json().then(function (body) { return { ok: response.ok, body: body }; });
      })
      .then(function (result) {
        if (!result.ok) {
          setText("raw-status", (result.body && result.body.error && result.body.error.message) || "could not load");
          return;
        }
        var body = result.body;
        setText("raw-status", [body.method, body.path, body.status, body.started_at].filter(Boolean).join(" · "));
        setText("raw-request", pretty(body.request_json));
        setText("raw-response", pretty(body.response_json));
      })
      .catch(function (error) { setText("raw-status", "could not load: " + error); });
  }

  document.addEventListener("click", function (event) {
    var target = event.target;
    if (!(target instanceof Element)) { return; }
    var raw = target.closest("a[data-raw]");
    if (raw) { event.preventDefault(); showRaw(raw.getAttribute("href")); return; }
    if (target.closest("[data-close]") && dialog) { dialog.close(); return; }
    var copy = target.closest("[data-copy]");
    if (copy && navigator.clipboard) {
      var source = document.getElementById(copy.getAttribute("data-copy"));
      if (source) { navigator.clipboard.writeText(source.textContent || ""); }
    }
  });

  function typing(element) {
    return element && (element.tagName === "INPUT" || element.tagName === "TEXTAREA" || element.tagName === "SELECT" || element.isContentEditable);
  }

  var cursor = -1;
  function move(step) {
    var items = document.querySelectorAll(".turn, table.sessions tbody tr, .hit");
    if (!items.length) { return; }
    if (cursor >= 0 && cursor < items.length) { items[cursor].classList.remove("selected"); }
    cursor = Math.max(0, Math.min(items.length - 1, cursor + step));
    var item = items[cursor];
    item.classList.add("selected");
    item.scrollIntoView({ block: "nearest" });
  }

  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape") {
      var open = document.querySelectorAll("dialog[open]");
      for (var i = 0; i < open.length; i++) { open[i].close(); }
      return;
    }
    if (typing(document.activeElement) || event.ctrlKey || event.metaKey || event.altKey) { return; }
    if (event.key === "/") {
      var search = document.getElementById("search");
      if (search) { event.preventDefault(); search.focus(); search.select(); }
    } else if (event.key === "j") {
      move(1);
    } else if (event.key === "k") {
      move(-1);
    } else if (event.key === "Enter" && cursor >= 0) {
      var items = document.querySelectorAll(".turn, table.sessions tbody tr, .hit");
      var link = items[cursor] && items[cursor].querySelector("a[href]:not([data-raw])");
      if (link) { window.location.href = link.getAttribute("href"); }
    }
  });

  // #raw-<request id> opens that turn's raw viewer (a link to it can be shared).
  var conversation = document.querySelector(".conversation[data-raw-base]");
  if (conversation && window.location.hash.indexOf("#raw-") === 0) {
    var requestId = decodeURIComponent(window.location.hash.slice(5));
    if (/^[A-Za-z0-9_-]{1,255}$/.test(requestId)) {
      showRaw(conversation.getAttribute("data-raw-base") + encodeURIComponent(requestId));
    }
  }

  // Live: while the page is open, the session's new turns are announced
  // (the session API's event stream); "Show" reloads at the first new turn.
  if (conversation && conversation.getAttribute("data-events") && window.EventSource) {
    var fresh = [];
    var events = new EventSource(conversation.getAttribute("data-events"));
    events.addEventListener("open", function () { conversation.setAttribute("data-live", "open"); });
    events.addEventListener("exchange", function (event) {
      fresh.push(event.lastEventId);
      var banner = document.getElementById("live");
      var show = document.getElementById("live-show");
      setText("live-text", fresh.length + (fresh.length === 1 ? " new turn recorded." : " new turns recorded."));
      if (show) { show.setAttribute("href", "#turn-" + encodeURIComponent(fresh[0])); }
      if (banner) { banner.hidden = false; }
    });
    var showLink = document.getElementById("live-show");
    if (showLink) {
      showLink.addEventListener("click", function (event) {
        event.preventDefault();
        window.location.hash = showLink.getAttribute("href");
        window.location.reload();
      });
    }
  }

  // Auto-refresh (pages that ask for it), paused while the tab is hidden,
  // a dialog is open or the user is typing.
  var every = Number(document.body.getAttribute("data-refresh") || 0);
  if (every > 0) {
    window.setInterval(function () {
      if (document.hidden || document.querySelector("dialog[open]") || typing(document.activeElement)) { return; }
      window.location.reload();
    }, every * 1000);
  }
})();
