// The dashboard's only script: live progress of an activity, from the page's Server-Sent Events
// stream, drawn as counters, a progress bar and an SVG chart of rows settled over time.
"use strict";

(function () {
  // Points kept for the chart; older ones are dropped, so a long run costs constant memory.
  const CHART_POINTS_MAX = 600;
  const SVG = "http://www.w3.org/2000/svg";

  function when(iso) {
    return iso ? new Date(iso).toISOString().replace("T", " ").slice(0, 19) + " UTC" : "–";
  }

  function svg(name, attributes, text) {
    const element = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, value);
    if (text !== undefined) element.textContent = text;
    return element;
  }

  // Two lines, successful and failed rows, against seconds since the page opened.
  function drawChart(chart, points) {
    const width = 640, height = 200, left = 48, right = 12, top = 12, bottom = 28;
    const last = points[points.length - 1];
    const spanS = Math.max(1, last.t - points[0].t);
    const rowsMax = Math.max(1, ...points.map((p) => p.successful + p.failed));
    const x = (t) => left + ((t - points[0].t) / spanS) * (width - left - right);
    const y = (rows) => top + (1 - rows / rowsMax) * (height - top - bottom);
    chart.replaceChildren(
      svg("line", { x1: left, y1: y(0), x2: width - right, y2: y(0), class: "axis" }),
      svg("line", { x1: left, y1: top, x2: left, y2: y(0), class: "axis" }),
      svg("text", { x: left - 6, y: top + 4, class: "label end" }, String(rowsMax)),
      svg("text", { x: left - 6, y: y(0), class: "label end" }, "0"),
      svg("text", { x: width - right, y: height - 8, class: "label end" }, `${spanS.toFixed(1)} s`),
      svg("text", { x: left, y: height - 8, class: "label" }, "0 s"),
    );
    for (const key of ["successful", "failed"]) {
      const path = points.map((p) => `${x(p.t).toFixed(1)},${y(p[key]).toFixed(1)}`).join(" ");
      chart.append(svg("polyline", { points: path, class: `series ${key}` }));
      // The latest value as a dot too: a page opened on a settled activity has only one point.
      chart.append(svg("circle", { cx: x(last.t), cy: y(last[key]), r: 4, class: `dot ${key}` }));
    }
  }

  function show(root, activity, points) {
    for (const element of root.querySelectorAll("[data-counter]")) {
      const value = activity[element.dataset.counter];
      element.textContent = element.dataset.counter.endsWith("_at") ? when(value) : value;
    }
    const status = document.getElementById("status");
    status.textContent = activity.status;
    status.className = `badge ${activity.status.toLowerCase()}`;
    const progress = document.getElementById("progress");
    progress.max = Math.max(1, activity.valid_records);
    progress.value = activity.successful_records + activity.failed_records;
    const final = activity.final;
    const settled = activity.pending_records === 0 && activity.failed_records > 0;
    document.getElementById("retry").hidden = !settled;
    document.getElementById("next-retry").hidden = !activity.next_retry_at;
    document.getElementById("chunk-failures").hidden = !activity.failed_chunks;
    document.getElementById("live").textContent = final ? "final" : "live";
    points.push({ t: performance.now() / 1000, successful: activity.successful_records,
                  failed: activity.failed_records });
    if (points.length > CHART_POINTS_MAX) points.splice(0, points.length - CHART_POINTS_MAX);
    drawChart(document.getElementById("chart"), points);
  }

  // The rows table was rendered with the page; once the activity is final, it is read again
  // (the same page, parsed here) so that it shows every row's outcome without a reload.
  async function refreshRows() {
    const section = document.getElementById("rows-section");
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!section || !response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    const fresh = page.getElementById("rows-section");
    if (fresh) section.replaceWith(document.adoptNode(fresh));
  }

  function follow(root) {
    const points = [];
    const counter = (name) => Number(root.querySelector(`[data-counter="${name}"]`).textContent);
    points.push({ t: performance.now() / 1000, successful: counter("successful_records"),
                  failed: counter("failed_records") });
    drawChart(document.getElementById("chart"), points);
    if (root.dataset.final === "true") return;
    // EventSource reconnects by itself when a stream ends before the activity is final.
    const source = new EventSource(root.dataset.eventsUrl);
    // The rows table is read again each time every row has an outcome (and once more when
    // final): a FAILED row waiting for its automatic retry shows its code meanwhile.
    // A page rendered with every row settled already shows their outcomes: read it again only
    // when that changes, or a table being read (by a person or a test) is replaced under them.
    let settled = counter("pending_records") === 0;
    source.addEventListener("progress", (message) => {
      const activity = JSON.parse(message.data);
      show(root, activity, points);
      const now = activity.pending_records === 0;
      if (now && !settled) refreshRows();
      settled = now;
    });
    source.addEventListener("end", () => {
      source.close();
      refreshRows();
    });
    source.addEventListener("error", () => {
      document.getElementById("live").textContent = "reconnecting";
    });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const root = document.getElementById("activity");
    if (root) follow(root);
  });
})();
