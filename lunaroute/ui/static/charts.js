// LunaRoute UI: charts.  Each <figure class="chart" data-chart="KIND"
// data-src="/api/..."> gets a Chart.js chart drawn on its <canvas> from the
// JSON the session API answers at data-src.  Recorded strings (model, tool,
// client and project names) only ever reach the canvas as labels: drawn as
// pixels, never parsed as HTML.
"use strict";
(function () {
  if (!window.Chart) { return; }
  var Chart = window.Chart;
  var style = getComputedStyle(document.documentElement);
  function css(name, fallback) { return (style.getPropertyValue(name) || "").trim() || fallback; }
  var FG = css("--fg", "#1d2330");
  var MUTED = css("--muted", "#5d6675");
  var LINE = css("--line", "#dde1e7");
  var PALETTE = [css("--accent", "#3a5bd9"), "#e0892b", "#2a9d8f", "#c2417a", "#7b61c9", "#8a9a2b", "#5d6675"];
  Chart.defaults.color = MUTED;
  Chart.defaults.borderColor = LINE;
  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', sans-serif";
  Chart.defaults.animation = false;
  Chart.defaults.responsive = true;
  Chart.defaults.maintainAspectRatio = false;

  function color(i) { return PALETTE[i % PALETTE.length]; }
  function num(v) { return typeof v === "number" && isFinite(v) ? v : 0; }
  function label(v) { return v === null || v === undefined || v === "" ? "—" : String(v).slice(0, 60); }
  function short(n) {
    var a = Math.abs(n);
    if (a >= 1e9) { return (n / 1e9).toFixed(1) + "B"; }
    if (a >= 1e6) { return (n / 1e6).toFixed(1) + "M"; }
    if (a >= 1e3) { return (n / 1e3).toFixed(1) + "k"; }
    return String(Math.round(n * 100) / 100);
  }
  function dollars(n) { return n === 0 ? "$0" : "$" + (Math.abs(n) < 1 ? n.toFixed(3) : n.toFixed(2)); }
  function ms(n) { return n >= 1000 ? (n / 1000).toFixed(1) + " s" : Math.round(n) + " ms"; }
  function axis(format, extra) {
    var options = { beginAtZero: true, ticks: { callback: function (v) { return format(Number(v)); } } };
    for (var k in extra || {}) { options[k] = extra[k]; }
    return options;
  }
  function dataset(name, values, i, extra) {
    var d = { label: name, data: values, backgroundColor: color(i), borderColor: color(i), borderWidth: 1.5, pointRadius: 0 };
    for (var k in extra || {}) { d[k] = extra[k]; }
    return d;
  }
  function bars(labels, sets, y, extra) {
    var options = { scales: { y: y }, plugins: { legend: { display: sets.length > 1 } } };
    for (var k in extra || {}) { options[k] = extra[k]; }
    return { type: "bar", data: { labels: labels, datasets: sets }, options: options };
  }
  function lines(labels, sets, y) {
    return { type: "line", data: { labels: labels, datasets: sets }, options: { scales: { y: y }, plugins: { legend: { display: sets.length > 1 } } } };
  }
  function top(rows, n) { return rows.slice(0, n); }

  // The usage buckets a figure shows: data-period (hours, days, weeks, months),
  // days and hours without any request filled in, so the time axis has no gaps.
  var STEP = { hours: 3600000, days: 86400000, weeks: 7 * 86400000 };
  function buckets(body, figure) {
    var period = figure.getAttribute("data-period") || "days";
    var rows = body[period] || [];
    var step = STEP[period];
    if (!step || rows.length < 2) { return rows; }
    function at(p) { return Date.parse(period === "hours" ? p + ":00Z" : p + "T00:00:00Z"); }
    function key(t) { var iso = new Date(t).toISOString(); return period === "hours" ? iso.slice(0, 13) + ":00" : iso.slice(0, 10); }
    var byKey = {};
    rows.forEach(function (r) { byKey[r.period] = r; });
    var first = at(rows[0].period), last = at(rows[rows.length - 1].period);
    if (!isFinite(first) || !isFinite(last) || (last - first) / step > 5000) { return rows; }
    var out = [];
    for (var t = first; t <= last; t += step) {
      var k = key(t);
      out.push(byKey[k] || { period: k, success_rate: null });
    }
    return out;
  }
  function periodLabel(p) { return String(p).replace("T", " "); }

  // Per-turn facts of a session's timeline, oldest first.
  function turns(body) {
    var byRequest = {};
    var out = [];
    (body.events || []).forEach(function (event) {
      var turn = byRequest[event.request_id];
      if (!turn) {
        turn = { start: null, end: null, context: 0, cost: 0, toolMs: 0, model: event.model };
        byRequest[event.request_id] = turn;
        out.push(turn);
      }
      if (event.type === "request") { turn.start = Date.parse(event.at); }
      if (event.type === "tool_call") { turn.toolMs += num(event.duration_ms); }
      if (event.type === "response") {
        turn.end = Date.parse(event.at);
        turn.context = num(event.tokens && event.tokens.context);
        turn.cost = num(event.cost_usd);
        turn.model = event.model || turn.model;
        if (!isFinite(turn.start)) { turn.start = turn.end - num(event.duration_ms); }
        if (!isFinite(turn.end)) { turn.end = turn.start + num(event.duration_ms); }
      }
    });
    return out;
  }
  function numbers(list) { return list.map(function (_, i) { return "#" + (i + 1); }); }

  var KINDS = {
    "tokens-time": function (body, figure) {
      var b = buckets(body, figure);
      return bars(b.map(function (r) { return periodLabel(r.period); }), [
        dataset("input", b.map(function (r) { return num(r.input_tokens); }), 0),
        dataset("output", b.map(function (r) { return num(r.output_tokens); }), 1),
        dataset("cache read", b.map(function (r) { return num(r.cache_read_tokens); }), 2),
        dataset("cache write", b.map(function (r) { return num(r.cache_write_tokens); }), 3)
      ], axis(short, { stacked: true }), { scales: { x: { stacked: true }, y: axis(short, { stacked: true }) } });
    },
    "cost-time": function (body, figure) {
      var b = buckets(body, figure);
      return bars(b.map(function (r) { return periodLabel(r.period); }), [
        dataset("cost", b.map(function (r) { return num(r.cost_usd); }), 0)
      ], axis(dollars));
    },
    "requests-time": function (body, figure) {
      var b = buckets(body, figure);
      return bars(b.map(function (r) { return periodLabel(r.period); }), [
        dataset("succeeded", b.map(function (r) { return num(r.successful_requests); }), 2),
        dataset("failed", b.map(function (r) { return num(r.failed_requests); }), 3)
      ], axis(short, { stacked: true }), { scales: { x: { stacked: true }, y: axis(short, { stacked: true }) } });
    },
    "success-time": function (body, figure) {
      var b = buckets(body, figure);
      return lines(b.map(function (r) { return periodLabel(r.period); }), [
        dataset("success rate", b.map(function (r) { return r.success_rate === null ? null : 100 * r.success_rate; }), 2, { pointRadius: 3 })
      ], axis(function (v) { return v + "%"; }, { max: 100 }));
    },
    "latency-time": function (body, figure) {
      var b = buckets(body, figure);
      return lines(b.map(function (r) { return periodLabel(r.period); }), [
        dataset("provider", b.map(function (r) { return r.avg_provider_ms; }), 0, { pointRadius: 2 }),
        dataset("time to first token", b.map(function (r) { return r.avg_ttft_ms; }), 1, { pointRadius: 2 }),
        dataset("proxy overhead", b.map(function (r) { return r.avg_proxy_overhead_ms; }), 3, { pointRadius: 2 })
      ], axis(ms));
    },
    "models": function (body) {
      var rows = top(body.models || [], 10);
      return bars(rows.map(function (r) { return label(r.model); }), [
        dataset("tokens", rows.map(function (r) { return num(r.total_tokens); }), 0, { xAxisID: "x" }),
        dataset("cost", rows.map(function (r) { return num(r.cost_usd); }), 1, { xAxisID: "x2" })
      ], {}, { indexAxis: "y", scales: { x: axis(short, { position: "bottom" }), x2: axis(dollars, { position: "top", grid: { drawOnChartArea: false } }) } });
    },
    "hours": function (body) {
      var rows = body.hours || [];
      return bars(rows.map(function (r) { return String(r.hour).padStart(2, "0") + ":00"; }), [
        dataset("requests", rows.map(function (r) { return num(r.requests); }), 0)
      ], axis(short));
    },
    "tools": function (body) {
      var rows = top(body.tools || [], 10);
      return bars(rows.map(function (r) { return label(r.tool_name); }), [
        dataset("calls", rows.map(function (r) { return num(r.calls); }), 0, { xAxisID: "x" }),
        dataset("errors", rows.map(function (r) { return num(r.errors); }), 3, { xAxisID: "x" }),
        dataset("avg duration", rows.map(function (r) { return num(r.avg_duration_ms); }), 2, { xAxisID: "x2" })
      ], {}, { indexAxis: "y", scales: { x: axis(short, { position: "bottom" }), x2: axis(ms, { position: "top", grid: { drawOnChartArea: false } }) } });
    },
    "groups": function (body, figure) {
      var key = figure.getAttribute("data-key");
      var rows = top(body[key + "s"] || [], 10);
      return bars(rows.map(function (r) { return label(r[key]); }), [
        dataset("requests", rows.map(function (r) { return num(r.requests); }), 0, { xAxisID: "x" }),
        dataset("cost", rows.map(function (r) { return num(r.cost_usd); }), 1, { xAxisID: "x2" })
      ], {}, { indexAxis: "y", scales: { x: axis(short, { position: "bottom" }), x2: axis(dollars, { position: "top", grid: { drawOnChartArea: false } }) } });
    },
    "durations": function (body) {
      var rows = body.buckets || [];
      return bars(rows.map(function (r) { return r.to_ms === null ? "≥ " + ms(r.from_ms) : ms(r.from_ms) + "–" + ms(r.to_ms); }), [
        dataset("requests", rows.map(function (r) { return num(r.requests); }), 0)
      ], axis(short));
    },
    "context": function (body, figure) {
      var list = turns(body);
      var windowSize = Number(figure.getAttribute("data-window") || 0);
      var sets = [dataset("context", list.map(function (t) { return t.context; }), 0, { pointRadius: list.length > 100 ? 0 : 2 })];
      if (windowSize > 0) {
        sets.push(dataset("model window", list.map(function () { return windowSize; }), 3, { borderDash: [6, 4] }));
      }
      return lines(numbers(list), sets, axis(short));
    },
    "cumulative-cost": function (body) {
      var list = turns(body);
      var total = 0;
      return lines(numbers(list), [
        dataset("cost so far", list.map(function (t) { total += t.cost; return total; }), 1, { fill: false })
      ], axis(dollars));
    },
    "waterfall": function (body) {
      var list = turns(body);
      var zero = list.length && isFinite(list[0].start) ? list[0].start : 0;
      function at(t) { return Math.max(0, (t - zero) / 1000); }
      return bars(numbers(list), [
        dataset("model", list.map(function (t) { return [at(t.start), at(t.end)]; }), 0),
        dataset("tools", list.map(function (t) { return [at(t.end), at(t.end + t.toolMs)]; }), 1)
      ], axis(function (v) { return v + " s"; }), { scales: { x: { stacked: true }, y: axis(function (v) { return v + " s"; }) } });
    }
  };

  var cache = {};
  function load(url) {
    if (!cache[url]) {
      cache[url] = fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } })
        .then(function (response) {
          if (!response.ok) { throw new Error("HTTP " + response.status); }
          return response.json();
        });
    }
    return cache[url];
  }

  function draw(figure) {
    var kind = KINDS[figure.getAttribute("data-chart")];
    var canvas = figure.querySelector("canvas");
    if (!kind || !canvas) { return; }
    load(figure.getAttribute("data-src")).then(function (body) {
      var config = kind(body, figure);
      new Chart(canvas, config);
      figure.setAttribute("data-rendered", String(config.data.labels.length));
    }).catch(function (error) {
      figure.setAttribute("data-rendered", "error");
      var note = document.createElement("p");
      note.className = "meta";
      note.textContent = "Chart unavailable: " + error.message;
      figure.appendChild(note);
    });
  }

  var figures = document.querySelectorAll("figure.chart[data-chart][data-src]");
  for (var i = 0; i < figures.length; i++) { draw(figures[i]); }
})();
