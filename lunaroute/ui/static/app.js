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

  // A shell command replaying a recorded request through this gateway: every
  // recorded value inside single quotes (a quote in it closed and escaped),
  // the body on stdin from a quoted here-document, the key from the environment.
  function quoted(text) { return "'" + String(text).replace(/'/g, "'\\''") + "'"; }
  function curl(raw) {
    var proxy = (conversation && conversation.getAttribute("data-proxy")) || "http://127.0.0.1:8081";
    var path = typeof raw.path === "string" && raw.path.charAt(0) === "/" ? raw.path : "/v1/messages";
    var anthropic = raw.dialect === "anthropic" || path.indexOf("/v1/messages") === 0;
    var lines = ["curl -sS " + quoted(proxy + path) + " \\", "  -H 'content-type: application/json' \\"];
    if (anthropic) {
      lines.push("  -H 'anthropic-version: 2023-06-01' \\", "  -H \"x-api-key: $ANTHROPIC_API_KEY\" \\");
    } else {
      lines.push("  -H \"authorization: Bearer $OPENAI_API_KEY\" \\");
    }
    lines.push("  --data-binary @- <<'LUNAROUTE_JSON'", JSON.stringify(raw.request_json), "LUNAROUTE_JSON");
    return lines.join("\n");
  }

  function showRaw(url) {
    if (!dialog || typeof dialog.showModal !== "function") { window.location.href = url; return; }
    setText("raw-status", "Loading…");
    setText("raw-request", "");
    setText("raw-response", "");
    setText("raw-curl", "");
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
        setText("raw-curl", curl(body));
        var download = document.getElementById("raw-download");
        var base = conversation && conversation.getAttribute("data-download-base");
        if (download && base && /^[A-Za-z0-9_-]{1,255}$/.test(String(body.request_id))) {
          download.setAttribute("href", base + encodeURIComponent(body.request_id));
        }
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

  // Long sessions: turns past the first few arrive as placeholders and load,
  // a chunk at a time, as they come into view or when jumped to.  The chunks
  // are pages of this UI rendered (and escaped) by the server like the page
  // itself; DOMParser keeps any script in them inert.
  var conversation = document.querySelector(".conversation[data-raw-base]");
  var loading = {};
  function loadTurns(section) {
    var link = section && section.classList.contains("pending") && section.querySelector("a[data-load]");
    if (!link) { return Promise.resolve(); }
    var url = link.getAttribute("href");
    if (!loading[url]) {
      loading[url] = fetch(url, { credentials: "same-origin", headers: { accept: "text/html" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.text();
        })
        .then(function (text) {
          var doc = new DOMParser().parseFromString(text, "text/html");
          var fresh = doc.querySelectorAll(".conversation section.turn");
          for (var i = 0; i < fresh.length; i++) {
            var old = document.getElementById(fresh[i].id);
            if (old && old.classList.contains("pending")) {
              var wasSelected = old.classList.contains("selected");
              var node = document.adoptNode(fresh[i]);
              if (wasSelected) { node.classList.add("selected"); }
              old.replaceWith(node);
              if (observer) { observer.unobserve(old); }
            }
          }
        })
        .catch(function (error) { delete loading[url]; link.textContent = "Could not load (" + error.message + "); retry"; });
    }
    return loading[url];
  }
  var observer = null;
  if (conversation && window.IntersectionObserver) {
    observer = new IntersectionObserver(function (entries) {
      entries.forEach(function (entry) { if (entry.isIntersecting) { loadTurns(entry.target); } });
    }, { rootMargin: "600px 0px" });
    var pending = conversation.querySelectorAll("section.turn.pending");
    for (var p = 0; p < pending.length; p++) { observer.observe(pending[p]); }
  }
  document.addEventListener("click", function (event) {
    var target = event.target;
    var load = target instanceof Element && target.closest("a[data-load]");
    if (load) { event.preventDefault(); loadTurns(load.closest("section.turn")); }
  });
  function jumpTo(number) {
    var section = conversation && conversation.querySelector('section.turn[data-index="' + Number(number) + '"]');
    if (!section) { return Promise.resolve(false); }
    return loadTurns(section).then(function () {
      var shown = conversation.querySelector('section.turn[data-index="' + Number(number) + '"]');
      var items = document.querySelectorAll(".turn, table.sessions tbody tr, .hit");
      if (cursor >= 0 && cursor < items.length) { items[cursor].classList.remove("selected"); }
      cursor = Array.prototype.indexOf.call(items, shown);
      shown.classList.add("selected");
      shown.scrollIntoView({ block: "start" });
      shown.focus({ preventScroll: true });
      return true;
    });
  }
  var jumpForm = document.querySelector("form.jump");
  if (jumpForm) {
    jumpForm.addEventListener("submit", function (event) {
      event.preventDefault();
      var number = document.getElementById("jump-turn").value;
      jumpTo(number).then(function (found) {
        if (found && window.history.replaceState) {
          var url = new URL(window.location.href);
          url.searchParams.set("turn", number);
          url.hash = "";
          window.history.replaceState(null, "", url.toString());
        }
      });
    });
  }
  if (conversation && conversation.getAttribute("data-jump")) {
    jumpTo(conversation.getAttribute("data-jump"));
  } else if (conversation && window.location.hash.indexOf("#turn-") === 0) {
    var target = document.getElementById(decodeURIComponent(window.location.hash.slice(1)));
    if (target && target.classList.contains("pending")) {
      loadTurns(target).then(function () {
        var shown = document.getElementById(target.id);
        if (shown) { shown.scrollIntoView({ block: "start" }); }
      });
    }
  }

  // A delete form asks first.
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (form instanceof HTMLFormElement && form.hasAttribute("data-confirm") && !window.confirm(form.getAttribute("data-confirm"))) {
      event.preventDefault();
    }
  });

  // #raw-<request id> opens that turn's raw viewer (a link to it can be shared).
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
