// app.js — the cutover dashboard. Polls GET /admin/dashboard every second with the admin
// token (kept in this tab's sessionStorage) and draws it; every button asks for
// confirmation and calls the audited admin API. No library, no build step.
(function () {
  "use strict";
  var KEY = "gateway-admin-token";
  var POLL_MS = 1000;
  var timer = null, busy = false;

  function $(id) { return document.getElementById(id); }
  function token() { return sessionStorage.getItem(KEY) || ""; }

  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    for (var k in attrs || {}) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    }
    (kids || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }

  function fmt(v, digits) {
    if (v === null || v === undefined || v < 0) return "–";
    return Number(v).toFixed(digits === undefined ? 1 : digits);
  }
  function pct(v) { return v === null || v === undefined || v < 0 ? "–" : fmt(v, v < 10 ? 2 : 1) + " %"; }

  function showError(msg) {
    var e = $("error");
    e.textContent = msg || "";
    e.hidden = !msg;
  }

  function showLogin(msg) {
    stop();
    $("login").hidden = false;
    $("main").hidden = true;
    $("signout").hidden = true;
    $("status").textContent = msg || "token needed";
    $("token").focus();
  }

  // One admin API call; resolves with {status, body}. A 401 forgets the token.
  function api(method, path, body) {
    var opts = { method: method, headers: { "Authorization": "Bearer " + token() }, cache: "no-store" };
    if (body !== undefined) {
      opts.headers["Content-Type"] = "application/json";
      opts.body = JSON.stringify(body);
    }
    return fetch(path, opts).then(function (r) {
      return r.text().then(function (t) {
        var j = null;
        try { j = t ? JSON.parse(t) : null; } catch (e) { j = { error: t }; }
        if (r.status === 401) {
          sessionStorage.removeItem(KEY);
          showLogin("token refused (401)");
        }
        return { status: r.status, body: j };
      });
    });
  }

  // ---- sparklines: inline SVG, drawn here ----
  var SVG = "http://www.w3.org/2000/svg";
  var ZEROS = [];
  for (var z = 0; z < 60; z++) ZEROS.push(0);
  function spark(rps, errors) {
    var w = 120, h = 24, n = rps.length;
    var max = 1;
    rps.forEach(function (v) { if (v > max) max = v; });
    var svg = document.createElementNS(SVG, "svg");
    svg.setAttribute("class", "spark");
    svg.setAttribute("width", w);
    svg.setAttribute("height", h);
    svg.setAttribute("viewBox", "0 0 " + w + " " + h);
    function line(vals, color) {
      var pts = vals.map(function (v, i) {
        return (i * (w - 1) / (n - 1)).toFixed(1) + "," + (h - 1 - v * (h - 2) / max).toFixed(1);
      }).join(" ");
      var p = document.createElementNS(SVG, "polyline");
      p.setAttribute("points", pts);
      p.setAttribute("fill", "none");
      p.setAttribute("stroke", color);
      p.setAttribute("stroke-width", "1.3");
      svg.appendChild(p);
    }
    line(rps, "#2f6f9e");
    line(errors, "#c0392b");
    var t = document.createElementNS(SVG, "title");
    t.textContent = "req/s (blue) and errors/s (red), last " + n + " s; peak " + max + "/s";
    svg.appendChild(t);
    return svg;
  }

  function bar(share, cls, label) {
    var b = el("div", { cls: "bar" });
    var f = el("div", { cls: "fill" + (cls ? " " + cls : "") });
    f.style.width = Math.max(0, Math.min(100, share || 0)) + "%";
    b.appendChild(f);
    b.appendChild(el("span", { cls: "label", text: label }));
    return b;
  }

  // ---- actions: confirm, call, refresh ----
  function act(what, method, path, body) {
    if (!window.confirm(what + "?")) return;
    api(method, path, body).then(function (r) {
      if (r.status >= 400) showError(what + ": " + r.status + " " + ((r.body && r.body.error) || ""));
      else showError("");
      poll();
    }, function (e) { showError(what + ": " + e); });
  }

  function routeButtons(r) {
    var id = r.id, enc = encodeURIComponent(id);
    function b(label, cls, fn) {
      var x = el("button", { type: "button", cls: cls, text: label, "data-route": id });
      x.addEventListener("click", fn);
      return x;
    }
    return [
      b("flip", "flip", function () {
        var up = window.prompt("Flip route " + id + " to which upstream?", "");
        if (up) act("Flip " + id + " to " + up, "PATCH", "/admin/routes/" + enc, { upstream: up, split: null });
      }),
      b("split", "split", function () {
        var cur = r.split ? Object.keys(r.split).map(function (k) { return k + "=" + r.split[k]; }).join(",") : r.primary + "=100";
        var s = window.prompt("Split " + id + " (UPSTREAM=WEIGHT,...)", cur);
        if (!s) return;
        var w = {};
        var ok = s.split(",").every(function (p) {
          var kv = p.trim().split("=");
          if (kv.length !== 2 || !/^\d+$/.test(kv[1])) return false;
          w[kv[0]] = parseInt(kv[1], 10);
          return true;
        });
        if (!ok) { showError("split: write UPSTREAM=WEIGHT,UPSTREAM=WEIGHT"); return; }
        act("Split " + id + " as " + s, "PATCH", "/admin/routes/" + enc, { split: w });
      }),
      b(r.shadow ? "unshadow" : "shadow", "shadow", function () {
        if (r.shadow) { act("Stop shadowing " + id + " to " + r.shadow, "PATCH", "/admin/routes/" + enc, { shadow: null }); return; }
        var up = window.prompt("Shadow copies of " + id + " to which upstream?", "");
        if (up) act("Shadow " + id + " to " + up, "PATCH", "/admin/routes/" + enc, { shadow: { upstream: up } });
      }),
      b("rollback", "rollback danger", function () {
        act("Roll back " + id + " to the legacy upstream", "POST", "/admin/rollback", { id: id });
      }),
    ];
  }

  // ---- panels ----
  function drawProgress(d) {
    var o = d.progress.overall, box = $("progress-overall");
    box.textContent = "";
    box.appendChild(el("div", { cls: "progress-row" }, [el("span", { text: "endpoints (overall)" }),
      bar(o.route_share, "", fmt(o.route_share) + " % of " + o.routes + " routes")]));
    var tr = el("div", { cls: "progress-row" }, [el("span", { text: "traffic (overall)" }),
      bar(o.traffic_share, "traffic", o.traffic_share === null ? "no traffic" : fmt(o.traffic_share) + " % of " + o.requests + " requests")]);
    tr.id = "overall-traffic";
    box.appendChild(tr);
    var tb = $("domains").tBodies[0];
    tb.textContent = "";
    d.progress.domains.forEach(function (p) {
      tb.appendChild(el("tr", { "data-domain": p.domain }, [
        el("td", { text: p.domain }), el("td", { cls: "num", text: String(p.routes) }),
        el("td", {}, [bar(p.route_share, "", fmt(p.route_share) + " %")]),
        el("td", {}, [bar(p.traffic_share, "traffic", p.traffic_share === null ? "no traffic" : fmt(p.traffic_share) + " %")]),
        el("td", { cls: "num", text: fmt(d.window_s ? p.requests / d.window_s : 0) }),
      ]));
    });
    $("window").textContent = d.window_s;
    $("legacy-name").textContent = d.legacy_upstream || "legacy";
    $("cache-rate").textContent = d.cache.hit_rate === null ? "no lookups" : pct(d.cache.hit_rate) + " of " + d.cache.lookups;
  }

  function drawRoutes(d) {
    var tb = $("routes").tBodies[0], total = 0;
    tb.textContent = "";
    d.routes.forEach(function (r) {
      total += r.rps;
      var policy = r.split ? "split " + Object.keys(r.split).map(function (k) { return k + "=" + r.split[k]; }).join(", ") : "→ " + r.primary;
      if (r.shadow) policy += " · shadow " + r.shadow;
      if (r.fallback) policy += " · fallback " + r.fallback;
      var cs = r.cache_stats;
      if (r.cache) policy += " · cached" + (cs && cs.hit_rate !== null ? " (" + pct(cs.hit_rate) + " hits of " + cs.lookups + ")" : "");
      if (r.upgrade || r.tunnels_open) /* open tunnels do not follow a flip: watch them reach 0 */
        policy += " · tunnels open: " + (r.tunnels_open ? Object.keys(r.tunnels).map(function (k) { return k + " " + r.tunnels[k]; }).join(", ") : "0");
      var sh = r.shadow_stats, latest = sh.latest;
      var head = el("tr", { cls: "route-head", "data-route": r.id }, [
        el("td", {}, [el("strong", { text: r.id }), el("div", { cls: "muted", text: r.path })]),
        el("td", { cls: "policy", text: policy }),
        el("td", { cls: "num", text: fmt(r.new_share, 0) + " % new" }),
        el("td", { cls: "num rps", text: fmt(r.rps) }),
        el("td", { cls: "num", text: pct(r.error_rate) }),
        el("td"), el("td"),
        el("td", {}, [el("span", { text: sh.compared ? pct(sh.mismatch_rate) + " of " + sh.compared : "–" }),
          latest ? el("div", { cls: "diff", text: latest.diff + " (" + latest.request_id + ")" }) : null]),
        el("td", { cls: "num", text: String(r.fallbacks) }),
        el("td", {}, routeButtons(r)),
      ]);
      tb.appendChild(head);
      r.sides.forEach(function (s) {
        tb.appendChild(el("tr", { cls: "side", "data-route": r.id, "data-upstream": s.upstream }, [
          el("td"),
          el("td", { text: s.upstream + " (" + s.role + ")" }),
          el("td", { cls: "num", text: s.weight === null ? "" : fmt(s.weight) + " %" }),
          el("td", { cls: "num side-rps", text: fmt(s.rps) }),
          el("td", { cls: "num", text: pct(s.error_rate) }),
          el("td", { cls: "num", text: fmt(s.p50_ms, 2) + " / " + fmt(s.p99_ms, 2) }),
          el("td", {}, [s.series ? spark(s.series.rps, s.series.errors) : spark(ZEROS, ZEROS)]),
          el("td", { cls: "num", text: s.shadow_compared ? s.shadow_mismatched + " / " + s.shadow_compared : "" }),
          el("td", { cls: "num", text: s.fallbacks ? String(s.fallbacks) : "" }),
          el("td"),
        ]));
      });
    });
    $("total-rps").textContent = fmt(total);
  }

  function drawPlans(d) {
    var box = $("plans");
    box.textContent = "";
    $("no-plans").hidden = d.plans.length > 0;
    d.plans.forEach(function (p) {
      var enc = encodeURIComponent(p.route);
      var v = p.verdict || {};
      var head = el("div", {}, [
        el("strong", { text: p.route + " → " + p.target }), " ",
        el("span", { cls: "state", text: p.state }),
        " · step " + (p.step < 0 ? "legacy only" : (p.step + 1) + "/" + p.steps.length + " (" + p.weight + " %)") +
        " · verdict " + (v.verdict || "–") +
        (p.state === "running" && p.next_verdict_in_ms !== undefined ? " · next verdict in " + (p.next_verdict_in_ms / 1000).toFixed(0) + " s" : "") +
        (v.sample !== undefined ? " · sample " + v.sample + "/" + v.needed : ""),
      ]);
      var gates = el("ul", {}, (v.gates || []).map(function (g) {
        return el("li", { cls: "gate-" + (g.result === "n/a" ? "na" : g.result),
          text: g.gate + ": " + g.result + (g.value !== null && g.value !== undefined && g.value >= 0 ? " — " + fmt(g.value, 2) + " vs limit " + fmt(g.limit, 2) : "") +
            (g.legacy !== null && g.legacy !== undefined && g.legacy >= 0 ? " (legacy " + fmt(g.legacy, 2) + ")" : "") });
      }));
      var ev = p.evidence || {};
      function evs(s) { return s ? s.requests + " req, " + pct(s.error_rate) + " errors, p99 " + fmt(s.p99_ms, 2) + " ms" + (s.shadow_compared ? ", mismatch " + pct(s.mismatch_rate) : "") : "–"; }
      var evidence = el("div", { cls: "muted", text: "evidence over " + fmt((ev.window_ms || 0) / 1000, 0) + " s — legacy: " + evs(ev.legacy) + "; target: " + evs(ev.target) });
      var buttons = el("div", {}, ["pause", "resume", "promote", "abort"].map(function (cmd) {
        var x = el("button", { type: "button", cls: "plan-" + cmd + (cmd === "abort" ? " danger" : ""), text: cmd, "data-route": p.route });
        x.addEventListener("click", function () { act(cmd + " the cutover plan of " + p.route, "POST", "/admin/cutovers/" + enc + "/" + cmd); });
        return x;
      }));
      var mm = (p.first_mismatches || []).map(function (m) { return el("div", { cls: "diff", text: m.request_id + ": " + m.diff }); });
      box.appendChild(el("div", { cls: "plan", "data-route": p.route }, [head, el("div", { cls: "muted", text: p.reason || "" }), gates, evidence].concat(mm, [buttons])));
    });
  }

  function drawHistory(d) {
    var tb = $("history").tBodies[0];
    tb.textContent = "";
    d.history.forEach(function (c) {
      var change = "";
      if (c.upstream && c.new && c.new.endpoints) change = "endpoints " + c.new.endpoints.join(", ");
      else if (c.new && typeof c.new === "object") change = c.new.split ? "split " + JSON.stringify(c.new.split) : "→ " + (c.new.upstream || "");
      else if (c.new === null) change = "removed";
      tb.appendChild(el("tr", {}, [
        el("td", { text: c.at ? String(c.at) : (c.at_ms ? new Date(c.at_ms).toISOString() : "") }),
        el("td", { text: c.version !== undefined ? String(c.version) : "" }),
        el("td", { text: c.who || "" }), el("td", { text: c.action || "" }),
        el("td", { text: c.route_id || (c.upstream ? "upstream " + c.upstream : "") }), el("td", { text: change }),
        el("td", { cls: "muted", text: c.reason || "" }),
      ]));
    });
  }

  function draw(d) {
    $("login").hidden = true;
    $("main").hidden = false;
    $("signout").hidden = false;
    $("status").textContent = "live · table version " + d.version;
    $("updated").textContent = "updated " + new Date(d.generated_ms).toLocaleTimeString();
    drawProgress(d);
    drawRoutes(d);
    drawPlans(d);
    drawHistory(d);
  }

  function poll() {
    if (busy || !token()) return;
    busy = true;
    api("GET", "/admin/dashboard").then(function (r) {
      busy = false;
      if (r.status === 200) { showError(""); draw(r.body); }
      else if (r.status !== 401) showError("GET /admin/dashboard: " + r.status + " " + ((r.body && r.body.error) || ""));
    }, function (e) { busy = false; $("status").textContent = "disconnected (" + e + ")"; });
  }

  function start() {
    stop();
    poll();
    timer = window.setInterval(poll, POLL_MS);
  }
  function stop() { if (timer) window.clearInterval(timer); timer = null; }

  $("token-form").addEventListener("submit", function (ev) {
    ev.preventDefault();
    var t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(KEY, t);
    $("token").value = "";
    $("status").textContent = "connecting…";
    start();
  });
  $("signout").addEventListener("click", function () { sessionStorage.removeItem(KEY); showLogin("signed out"); });

  if (token()) start(); else showLogin();
})();
