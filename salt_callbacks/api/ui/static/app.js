// The deliveries page. Plain DOM, no library, no build step. Every value from the
// server goes in as textContent (never as HTML), so a device id or a response
// excerpt cannot become markup. POSTs carry the session's CSRF token.
"use strict";

(function () {
  const API = "/ui/api";
  const SVG = "http://www.w3.org/2000/svg";
  let csrf = null;
  let current = null; // {device, jid} shown in the detail panel

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (name === "text") node.textContent = value;
      else node.setAttribute(name, value);
    }
    for (const child of children) node.append(child);
    return node;
  }

  async function call(method, path, body) {
    const options = { method, credentials: "same-origin", headers: {} };
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    if (method !== "GET" && csrf) options.headers["X-CSRF-Token"] = csrf;
    const response = await fetch(API + path, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) {
      const error = new Error(describe(data) || `HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return data;
  }

  function describe(data) {
    if (!data || typeof data !== "object") return "";
    if (data.detail) return data.detail;
    return Object.entries(data).map(([k, v]) => `${k}: ${[].concat(v).join(" ")}`).join("; ");
  }

  // -- sign-in -----------------------------------------------------------------

  function show(signedIn) {
    $("signin-view").hidden = signedIn;
    $("main-view").hidden = !signedIn;
    $("signout").hidden = !signedIn;
    $("who").hidden = !signedIn;
  }

  async function start() {
    try {
      const backends = (await call("GET", "/eauth")).backends || [];
      const list = $("eauth-backends");
      for (const name of backends) list.append(el("option", { value: name }));
      if (backends.length && !backends.includes($("eauth").value)) $("eauth").value = backends[0];
    } catch (e) { /* the form still works with a typed backend */ }
    let session = null;
    try { session = await call("GET", "/session"); } catch (e) { session = null; }
    if (session && session.signed_in) signedIn(session);
    else show(false);
  }

  function signedIn(session) {
    csrf = session.csrf;
    $("who").textContent = `${session.user} (${session.eauth})`;
    show(true);
    refresh();
    const match = location.hash.match(/^#cb\/([^/]+)\/([^/]+)$/);
    if (match) openCallback(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
  }

  $("signin").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    $("signin-error").textContent = "";
    try {
      signedIn(await call("POST", "/login", {
        username: form.username.value, password: form.password.value, eauth: form.eauth.value,
      }));
      form.password.value = "";
    } catch (e) {
      $("signin-error").textContent = e.message;
    }
  });

  $("signout").addEventListener("click", async () => {
    try { await call("POST", "/logout"); } catch (e) { /* signed out either way */ }
    csrf = null;
    show(false);
  });

  // -- the list ------------------------------------------------------------------

  async function refresh() {
    await Promise.all([loadList(), loadChart()]);
  }

  async function loadList() {
    const query = new URLSearchParams();
    for (const name of ["device", "state", "outcome"]) {
      const value = $("filters").elements[name].value.trim();
      if (value) query.set(name, value);
    }
    $("list-error").textContent = "";
    let rows;
    try {
      rows = (await call("GET", "/callbacks?" + query.toString())).results;
    } catch (e) {
      if (e.status === 401) return show(false);
      $("list-error").textContent = e.message;
      return;
    }
    const body = $("callbacks").tBodies[0];
    body.replaceChildren(...rows.map(listRow));
    $("list-empty").hidden = rows.length > 0;
  }

  function listRow(row) {
    const link = el("a", { href: `#cb/${encodeURIComponent(row.device_id)}/${encodeURIComponent(row.jid)}`,
                           class: "jid", text: row.jid });
    const tr = el("tr", { class: `outcome-${row.outcome}`, "data-jid": row.jid, "data-device": row.device_id },
      el("td", {}, link), el("td", { text: row.device_id }), el("td", { text: row.state }),
      el("td", { class: "outcome", text: row.outcome }), el("td", { text: String(row.attempts) }),
      el("td", { text: row.last_status === null ? "—" : String(row.last_status) }),
      el("td", { text: row.created.replace("T", " ").replace(/\.\d+Z$/, "") }));
    return tr;
  }

  $("filters").addEventListener("submit", (event) => { event.preventDefault(); loadList(); });
  $("refresh").addEventListener("click", refresh);
  $("hours").addEventListener("change", loadChart);
  window.addEventListener("hashchange", () => {
    const match = location.hash.match(/^#cb\/([^/]+)\/([^/]+)$/);
    if (match) openCallback(decodeURIComponent(match[1]), decodeURIComponent(match[2]));
  });

  // -- one callback ------------------------------------------------------------------

  async function openCallback(device, jid) {
    current = { device, jid };
    $("redeliver-status").textContent = "";
    try {
      renderDetail(await fetchDetail(device, jid));
    } catch (e) {
      $("detail-panel").hidden = false;
      $("timeline").replaceChildren();
      $("detail-facts").replaceChildren();
      $("redeliver-status").textContent = e.message;
    }
  }

  function fetchDetail(device, jid) {
    return call("GET", `/callbacks/${encodeURIComponent(device)}/${encodeURIComponent(jid)}`);
  }

  function renderDetail(cb) {
    $("detail-panel").hidden = false;
    $("detail-jid").textContent = cb.jid;
    $("detail-device").textContent = cb.device_id;
    const facts = [["state", cb.state], ["outcome", cb.outcome], ["url", cb.url],
      ["command", cb.command ? cb.command.command : ""], ["created", cb.created], ["deadline", cb.deadline]];
    for (const d of cb.deliveries) {
      facts.push([`${d.state}`, `${d.status}, ${d.attempts} attempt(s)` + (d.reason ? ` — ${d.reason}` : "")]);
    }
    $("detail-facts").replaceChildren(...facts.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v || "—" })]));
    $("redeliver").disabled = cb.deliveries.length === 0;
    $("timeline").replaceChildren(...cb.timeline.map(attemptItem));
  }

  function attemptItem(a) {
    const status = a.status === null ? "no response" : `HTTP ${a.status}`;
    const headers = Object.entries(a.headers).map(([k, v]) => `${k}: ${v}`).join("\n");
    const item = el("li", { class: `attempt ${a.success ? "ok" : "fail"}`, "data-attempt": String(a.attempt) },
      el("p", { class: "attempt-head" },
        el("strong", { class: "attempt-status", text: status }),
        ` · attempt ${a.attempt} · ${a.state} · ${a.timestamp} · +${a.after_seconds.toFixed(3)} s after creation`));
    if (a.error) item.append(el("p", { class: "error", text: a.error }));
    item.append(el("details", {}, el("summary", { text: "Headers sent" }), el("pre", { text: headers })));
    if (a.key_fingerprint) item.append(el("p", { class: "hint", text: `signed with key ${a.key_fingerprint}` }));
    item.append(el("details", { open: "" }, el("summary", { text: "Response excerpt" }),
      el("pre", { class: "excerpt", text: a.response_excerpt || "(empty)" })));
    return item;
  }

  $("redeliver").addEventListener("click", async () => {
    if (!current) return;
    const { device, jid } = current;
    const before = $("timeline").children.length;
    $("redeliver").disabled = true;
    $("redeliver-status").textContent = "Redelivering…";
    try {
      await call("POST", `/callbacks/${encodeURIComponent(device)}/${encodeURIComponent(jid)}/redeliver`, {});
    } catch (e) {
      $("redeliver-status").textContent = `Redelivery refused: ${e.message}`;
      $("redeliver").disabled = false;
      return;
    }
    // The engine sends it, then writes the attempt: watch for it (bounded).
    for (let i = 0; i < 60; i++) {
      await new Promise((resolve) => setTimeout(resolve, 500));
      const cb = await fetchDetail(device, jid);
      if (cb.timeline.length > before) {
        renderDetail(cb);
        $("redeliver-status").textContent = "Redelivered: new attempt below.";
        loadList();
        loadChart();
        return;
      }
    }
    $("redeliver-status").textContent = "Queued; no new attempt yet. Refresh later.";
    $("redeliver").disabled = false;
  });

  // -- the chart (inline SVG) ----------------------------------------------------------

  async function loadChart() {
    let stats;
    try {
      stats = await call("GET", `/stats?hours=${$("hours").value}`);
    } catch (e) {
      return;
    }
    $("chart").replaceChildren(drawChart(stats.buckets));
  }

  function svg(tag, attrs) {
    const node = document.createElementNS(SVG, tag);
    for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, String(value));
    return node;
  }

  function drawChart(buckets) {
    const width = 720, height = 180, left = 40, right = 40, top = 10, bottom = 24;
    const plotW = width - left - right, plotH = height - top - bottom;
    const chart = svg("svg", { viewBox: `0 0 ${width} ${height}`, role: "img", class: "chart",
                               "aria-label": "attempts per hour and median latency" });
    const maxCount = Math.max(1, ...buckets.map((b) => b.delivered + b.failed));
    const maxLatency = Math.max(0.001, ...buckets.map((b) => b.median_seconds || 0));
    const slot = plotW / buckets.length;
    chart.append(svg("line", { x1: left, y1: top + plotH, x2: left + plotW, y2: top + plotH, class: "axis" }));
    const points = [];
    buckets.forEach((b, i) => {
      const x = left + i * slot + slot * 0.15, w = slot * 0.7;
      const okH = (b.delivered / maxCount) * plotH, failH = (b.failed / maxCount) * plotH;
      const okBar = svg("rect", { x, y: top + plotH - okH, width: w, height: okH, class: "bar ok" });
      okBar.append(svgTitle(`${b.start}: ${b.delivered} delivered, ${b.failed} failed`));
      chart.append(okBar);
      chart.append(svg("rect", { x, y: top + plotH - okH - failH, width: w, height: failH, class: "bar fail" }));
      const label = svg("text", { x: x + w / 2, y: height - 8, class: "tick" });
      label.textContent = b.start.slice(11, 16);
      chart.append(label);
      if (b.median_seconds !== null) {
        points.push([x + w / 2, top + plotH - (b.median_seconds / maxLatency) * plotH]);
      }
    });
    if (points.length) {
      chart.append(svg("polyline", { points: points.map((p) => p.join(",")).join(" "), class: "latency" }));
      for (const [x, y] of points) chart.append(svg("circle", { cx: x, cy: y, r: 3, class: "latency-dot" }));
    }
    const countLabel = svg("text", { x: 4, y: top + 10, class: "tick" });
    countLabel.textContent = String(maxCount);
    const latencyLabel = svg("text", { x: width - right + 4, y: top + 10, class: "tick" });
    latencyLabel.textContent = `${maxLatency.toFixed(2)} s`;
    chart.append(countLabel, latencyLabel);
    return chart;
  }

  function svgTitle(text) {
    const title = document.createElementNS(SVG, "title");
    title.textContent = text;
    return title;
  }

  start();
})();
