// The dashboard's only script: live progress of an activity, from the page's Server-Sent Events
// stream, drawn as counters, a progress bar and an SVG chart of rows settled over time; the
// "Check file" step of the upload form; reconciliation runs read again while they run; a
// user's own page, followed live, with its transfer form checked as the user types; and
// forms that submit once. Every page works without
// it, only less smoothly.
"use strict";

(function () {
  // Points kept for the chart; older ones are dropped, so a long run costs constant memory.
  const CHART_POINTS_MAX = 600;
  // An activity waiting for a person (approval), a moment (execute_at) or money can wait for
  // hours: its page holds no event stream (each holds a server thread) and reads itself again
  // this often instead, reloading once the status changed.
  const WAITING_STATUSES = ["AWAITING_APPROVAL", "SCHEDULED", "AWAITING_FUNDS"];
  const WAITING_POLL_MS = 10000;
  const SVG = "http://www.w3.org/2000/svg";

  // Counts as the server renders them: 1,234,567.
  const count = (value) => Number(value).toLocaleString("en-US");
  const number = (text) => Number(String(text).replaceAll(",", ""));

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
      const name = element.dataset.counter;
      element.textContent = name.endsWith("_at") ? when(value) : typeof value === "number" ? count(value) : value;
    }
    const status = document.getElementById("status");
    status.textContent = activity.status;
    status.className = `badge ${activity.status.toLowerCase()}`;
    const progress = document.getElementById("progress");
    progress.max = Math.max(1, activity.valid_records);
    progress.value = activity.successful_records + activity.failed_records;
    const final = activity.final;
    const settled = activity.pending_records === 0 && activity.failed_records > 0;
    const retry = document.getElementById("retry");  // only for keys that may operate
    if (retry) retry.hidden = !settled;
    document.getElementById("next-retry").hidden = !activity.next_retry_at;
    document.getElementById("chunk-failures").hidden = !activity.failed_chunks;
    document.getElementById("live").textContent = final ? "final" : "live";
    // Nothing to draw before the first chunk starts (awaiting approval, funds, or its time).
    document.getElementById("chart-figure").hidden = !activity.started_at;
    points.push({ t: performance.now() / 1000, successful: activity.successful_records,
                  failed: activity.failed_records });
    if (points.length > CHART_POINTS_MAX) points.splice(0, points.length - CHART_POINTS_MAX);
    drawChart(document.getElementById("chart"), points);
  }

  // Parts of the page rendered by the server (the rows table, what the status means and its
  // buttons) are read again (the same page, parsed here) when they change, without a reload.
  async function refresh(ids) {
    const response = await fetch(window.location.href, { credentials: "same-origin" });
    if (!response.ok) return;
    const page = new DOMParser().parseFromString(await response.text(), "text/html");
    for (const id of ids) {
      const section = document.getElementById(id), fresh = page.getElementById(id);
      if (section && fresh) section.replaceWith(document.adoptNode(fresh));
    }
  }
  const refreshRows = () => refresh(["rows-section"]);

  function follow(root) {
    const points = [];
    const counter = (name) => number(root.querySelector(`[data-counter="${name}"]`).textContent);
    points.push({ t: performance.now() / 1000, successful: counter("successful_records"),
                  failed: counter("failed_records") });
    drawChart(document.getElementById("chart"), points);
    if (root.dataset.final === "true") return;
    if (WAITING_STATUSES.includes(root.dataset.status)) {
      wait(root);
      return;
    }
    // EventSource reconnects by itself when a stream ends before the activity is final.
    const source = new EventSource(root.dataset.eventsUrl);
    // The rows table is read again each time every row has an outcome (and once more when
    // final): a FAILED row waiting for its automatic retry shows its code meanwhile.
    // A page rendered with every row settled already shows their outcomes: read it again only
    // when that changes, or a table being read (by a person or a test) is replaced under them.
    let settled = counter("pending_records") === 0;
    // A new status (approved, released, rejected, ...) brings other buttons and another review.
    let status = document.getElementById("status").textContent;
    source.addEventListener("progress", (message) => {
      const activity = JSON.parse(message.data);
      show(root, activity, points);
      const now = activity.pending_records === 0;
      if (activity.status !== status) refresh(now && !settled ? ["state", "rows-section"] : ["state"]);
      else if (now && !settled) refreshRows();
      settled = now;
      status = activity.status;
    });
    source.addEventListener("end", () => {
      source.close();
      refresh(["state", "rows-section"]);
    });
    source.addEventListener("error", () => {
      document.getElementById("live").textContent = "reconnecting";
    });
  }

  function wait(root) {
    document.getElementById("live").textContent = `waiting · checked every ${WAITING_POLL_MS / 1000} s`;
    const timer = setInterval(async () => {
      try {
        const response = await fetch(window.location.href, { credentials: "same-origin" });
        if (!response.ok) return;
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("activity");
        if (fresh && fresh.dataset.status !== root.dataset.status) {
          clearInterval(timer);
          window.location.reload();
        }
      } catch (error) {
        // The server or the network is away for a moment: the next tick tries again.
      }
    }, WAITING_POLL_MS);
  }

  // "Check file" sends the form to the dry run in the background and shows its preview in
  // place, keeping the file picked; "Upload" is enabled only while that preview is of the file
  // and options now in the form. Any change to them asks for a new check.
  function checkBeforeUpload(form) {
    const check = document.getElementById("check-button");
    const upload = document.getElementById("upload-button");
    const hint = document.createElement("span");
    hint.className = "muted hint";
    upload.after(hint);
    let checked = false;
    const update = () => {
      upload.disabled = !checked;
      hint.textContent = checked ? "" : "Check the file first.";
    };
    const result = () => document.getElementById("check-result");
    const invalidate = (event) => {
      if (event.target.type === "hidden") return;
      checked = false;
      const stale = result();
      for (const child of [...stale.children]) if (child.name !== "upload_key") child.remove();
      stale.dataset.checked = "false";
      update();
    };
    form.refreshButtons = update;
    form.addEventListener("change", invalidate);
    form.addEventListener("input", invalidate);
    check.addEventListener("click", async (event) => {
      event.preventDefault();
      if (!form.reportValidity()) return;
      check.disabled = true;
      checked = false;
      update();
      hint.textContent = "Checking…";
      try {
        const response = await fetch(form.dataset.checkUrl, { method: "POST", body: new FormData(form),
                                                               credentials: "same-origin" });
        const page = new DOMParser().parseFromString(await response.text(), "text/html");
        const fresh = page.getElementById("check-result");
        if (fresh) {
          result().replaceWith(document.adoptNode(fresh));
          checked = fresh.dataset.checked === "true";
        } else {  // an error page: the file too large, the session expired
          const detail = page.querySelector(".detail");
          result().insertAdjacentHTML("beforeend", '<p class="flash error" role="alert"></p>');
          result().lastElementChild.textContent = `Error ${response.status}: ${detail ? detail.textContent : ""}`;
        }
      } catch (error) {
        result().insertAdjacentHTML("beforeend", '<p class="flash error" role="alert"></p>');
        result().lastElementChild.textContent = `The check did not reach the server: ${error.message}`;
      } finally {
        check.disabled = false;
        update();
      }
    });
    update();
  }

  // The list of reconciliation runs reads itself again, a short request each time (no stream
  // holds a server thread): often while a run is queued or running, seldom otherwise (a run
  // started elsewhere), never while the tab is hidden or on an older page of the list.
  const RUNS_UNFINISHED_POLL_MS = 2000;
  const RUNS_IDLE_POLL_MS = 30000;

  function followRuns(section) {
    if (section.dataset.live !== "true") return;
    const tick = async () => {
      const current = document.getElementById("runs-section");
      if (!document.hidden) {
        try {
          const response = await fetch(window.location.href, { credentials: "same-origin" });
          const fresh = response.ok &&
            new DOMParser().parseFromString(await response.text(), "text/html").getElementById("runs-section");
          if (fresh) current.replaceWith(document.adoptNode(fresh));
        } catch (error) {
          // The server or the network is away for a moment: the next tick tries again.
        }
      }
      const shown = document.getElementById("runs-section");
      const unfinished = shown.dataset.unfinished === "true";
      document.getElementById("runs-live").textContent = unfinished ? "live" : "";
      setTimeout(tick, unfinished ? RUNS_UNFINISHED_POLL_MS : RUNS_IDLE_POLL_MS);
    };
    const unfinished = section.dataset.unfinished === "true";
    document.getElementById("runs-live").textContent = unfinished ? "live" : "";
    setTimeout(tick, unfinished ? RUNS_UNFINISHED_POLL_MS : RUNS_IDLE_POLL_MS);
  }

  // A user's own page: its balances and history are read again (the same page, parsed here)
  // at each of the user's events, sent by the page's stream as they happen.
  function followOwn(root) {
    const live = document.getElementById("own-live");
    const source = new EventSource(root.dataset.eventsUrl);
    source.addEventListener("open", () => { live.textContent = "live"; });
    const reread = () => refresh(["balances-section", "history-section"]);
    source.addEventListener("message", reread);
    source.addEventListener("gap", reread);  // events were trimmed: the page is the truth
    source.addEventListener("busy", () => { live.textContent = "busy · retrying"; });
    source.addEventListener("error", () => { live.textContent = "reconnecting"; });
  }

  // The transfer form is checked by the server while the user types (a short pause after the
  // last key): the fee and the total when it would pass, else the API's message under each
  // field at fault. A field shows its error once it was typed in, or once Send was pressed.
  // Send waits for a passing check, then sends the form once.
  const CHECK_PAUSE_MS = 250;
  const TRANSFER_FIELDS = ["to_user_id", "amount", "currency", "reference"];

  function checkTransfer(form, checkUrl) {
    const quote = document.getElementById("transfer-quote");
    const send = document.getElementById("send-button");
    const touched = new Set(["currency"]);  // a select always holds a choice
    let timer = null, latest = 0, outcome = null;

    function showErrors(errors, detail) {
      for (const name of TRANSFER_FIELDS) {
        const messages = errors.filter((error) => error.field === name).map((error) => error.message);
        const shown = touched.has(name) ? messages.join("; ") : "";
        document.getElementById(`error-${name}`).textContent = shown;
        document.getElementById(name).setAttribute("aria-invalid", shown ? "true" : "false");
      }
      quote.textContent = detail;
    }

    async function check() {
      const asked = ++latest;
      const query = new URLSearchParams();
      for (const name of TRANSFER_FIELDS) query.set(name, form.elements[name].value);
      let result;
      try {
        const response = await fetch(`${checkUrl}?${query}`, { credentials: "same-origin" });
        const body = await response.json();
        result = response.ok ? { ok: true, body } : { ok: false, body };
      } catch (error) {
        result = { ok: false, body: { errors: [], detail: `The check did not reach the server: ${error.message}` } };
      }
      if (asked !== latest) return null;  // a newer check is on its way
      outcome = result;
      if (result.ok) {
        const { fee, total, currency } = result.body;
        showErrors([], `Fee ${fee} ${currency} · you pay ${total} ${currency}`);
      } else {
        const errors = result.body.errors || [];
        showErrors(errors, errors.length ? "" : result.body.detail || "");
      }
      return result;
    }

    const later = (event) => {
      if (TRANSFER_FIELDS.includes(event.target.name) && event.target.value !== "") touched.add(event.target.name);
      outcome = null;
      clearTimeout(timer);
      timer = setTimeout(check, CHECK_PAUSE_MS);
    };
    form.addEventListener("input", later);
    form.addEventListener("change", later);
    let sending = false;
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (sending) return;  // a second click sends nothing; the form's key guards the server too
      sending = true;
      for (const name of ["to_user_id", "amount", "currency"]) touched.add(name);
      clearTimeout(timer);
      send.disabled = true;
      const result = outcome || await check();
      if (result && result.ok) {
        HTMLFormElement.prototype.submit.call(form);
      } else {
        sending = false;
        send.disabled = false;
      }
    });
    // A page restored from the back-forward cache may send again (with the same key: at most once).
    window.addEventListener("pageshow", () => { sending = false; send.disabled = false; });
  }

  document.addEventListener("DOMContentLoaded", () => {
    const own = document.getElementById("own");
    if (own) {
      followOwn(own);
      checkTransfer(document.getElementById("transfer"), own.dataset.checkUrl);
    }
    const root = document.getElementById("activity");
    if (root) follow(root);
    const runs = document.getElementById("runs-section");
    if (runs) followRuns(runs);
    const upload = document.getElementById("upload");
    if (upload && upload.dataset.checkUrl) checkBeforeUpload(upload);
  });
  // A form marked data-once submits once: a second click (approve, upload, cancel) while the
  // first is on its way sends nothing (the server refuses a second decision all the same).
  // Forms are found when submitted, not at load: the status part of a page is replaced live.
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!form.matches("form[data-once]")) return;
    if (form.dataset.sent) {
      event.preventDefault();
      return;
    }
    form.dataset.sent = "true";
    for (const button of form.querySelectorAll("button")) button.disabled = true;
  });
  // A page restored from the back-forward cache gets its buttons back.
  window.addEventListener("pageshow", (event) => {
    if (!event.persisted) return;
    for (const form of document.querySelectorAll("form[data-sent]")) {
      delete form.dataset.sent;
      for (const button of form.querySelectorAll("button")) button.disabled = false;
      if (form.refreshButtons) form.refreshButtons();
    }
  });
})();
