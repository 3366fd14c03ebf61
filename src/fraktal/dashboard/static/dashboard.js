// fraktal dashboard: polls the JSON API and redraws; no framework, no build.
//
// Every value from the server reaches the page through textContent or
// setAttribute, never as HTML, so a worker named "<script>" stays text.

"use strict";

const POLL_MS = 800;
const MAX_EVENTS = 200;

const state = {
  lastEvent: 0,
  auth: { required: false, authenticated: true },
  pinned: null, // a job the user picked to look at; null follows the live one
  shown: null, // the job whose preview is on the canvas
  previewKey: null,
  previewLoading: false,
  jobItems: new Map(),
};

const $ = (id) => document.getElementById(id);

function el(tag, attributes = {}, children = []) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "text") node.textContent = value;
    else if (name === "className") node.className = value;
    else node.setAttribute(name, value);
  }
  node.append(...children);
  return node;
}

// -- formatting --------------------------------------------------------

function count(n) {
  return n == null ? "–" : n.toLocaleString("en-US");
}

function rate(value, unit) {
  if (value == null) return "–";
  const prefixes = ["", "k", "M", "G", "T", "P"];
  let i = 0;
  while (value >= 1000 && i < prefixes.length - 1) {
    value /= 1000;
    i += 1;
  }
  const digits = value < 10 ? 2 : value < 100 ? 1 : 0;
  return `${value.toFixed(digits)} ${prefixes[i]}${unit}`;
}

function duration(seconds) {
  if (seconds == null) return "–";
  const s = Math.max(0, seconds);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  const minutes = Math.floor(s / 60);
  if (minutes < 60) return `${minutes} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

function clock(time) {
  return new Date(time * 1000).toLocaleTimeString("en-GB", { hour12: false });
}

function percent(progress) {
  return progress >= 1 ? "100%" : `${(Math.floor(progress * 1000) / 10).toFixed(1)}%`;
}

function centre(p) {
  const sign = p.center_im < 0 ? "−" : "+";
  return `${p.center_re} ${sign} ${Math.abs(p.center_im)}i`;
}

function describe(p) {
  const colours = p.palette + (p.equalize ? ", equalized" : "");
  return `${p.width}×${p.height} · centre ${centre(p)} · span ${p.span} · ` +
    `max-iter ${count(p.max_iter)} · ${colours} · tiles of ${p.tile_size} px`;
}

function statusBadge(status) {
  return el("span", { className: `status status-${status}`, text: status });
}

// -- talking to the master ---------------------------------------------

async function getJson(url) {
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response.json();
}

async function postJson(url, body) {
  const response = await fetch(url, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
    credentials: "same-origin",
  });
  let data = {};
  try {
    data = await response.json();
  } catch (error) {
    data = { error: `HTTP ${response.status}` };
  }
  return { ok: response.ok, status: response.status, body: data };
}

function say(node, kind, text) {
  node.className = `message ${kind}`;
  node.textContent = text;
}

function mayWrite(messageNode) {
  if (!state.auth.required || state.auth.authenticated) return true;
  say(messageNode, "error", "Log in first: submitting and cancelling need the master's token.");
  return false;
}

async function submitJob(fields, messageNode) {
  if (!mayWrite(messageNode)) return;
  say(messageNode, "", "submitting…");
  const answer = await postJson("/api/submit", fields);
  if (answer.ok) {
    const job = answer.body.job;
    // What happened, not the job's status: that changes, and the job
    // list shows it live.
    const what = job.status === "done" ? "was done already" : "submitted";
    say(messageNode, "ok", `job ${job.id} ${what}`);
    state.pinned = null;
  } else {
    say(messageNode, "error", answer.body.error || `HTTP ${answer.status}`);
  }
}

async function cancelJob(jobId, messageNode) {
  if (!mayWrite(messageNode)) return;
  const answer = await postJson("/api/cancel", { job_id: jobId });
  if (answer.ok) say(messageNode, "ok", `job ${jobId} cancelled`);
  else say(messageNode, "error", answer.body.error || `HTTP ${answer.status}`);
}

// -- drawing -------------------------------------------------------------

function renderConnection(ok, error) {
  const badge = $("connection");
  badge.className = ok ? "badge badge-ok" : "badge badge-bad";
  badge.textContent = ok ? "live" : "master unreachable";
  badge.title = ok ? "" : String(error);
}

function renderSummary(status) {
  const queued = status.queue.length;
  $("cluster-summary").textContent =
    `${status.workers_connected} worker${status.workers_connected === 1 ? "" : "s"} connected · ` +
    `${count(status.totals.tiles_done)} tiles computed · ` +
    `${queued} job${queued === 1 ? "" : "s"} queued`;
}

function renderJob(job, running) {
  $("job-title").textContent = running ? "Running job" : "Last job";
  $("cancel-job").hidden = !running;
  $("job-status").replaceChildren(job ? statusBadge(job.status) : "");
  if (!job) {
    $("job-params").textContent = "No job yet: submit one below.";
    return;
  }
  $("job-card").dataset.job = job.id;
  $("job-params").textContent = `${job.id} · ${describe(job.params)}`;
  $("progress-bar").style.width = `${(job.progress * 100).toFixed(2)}%`;
  $("progress-text").textContent = percent(job.progress);
  $("progress-tiles").textContent =
    `${count(job.tiles.done)} of ${count(job.tiles.total)} tiles`;
  for (const name of ["pending", "leased", "done", "requeued", "failed"]) {
    $(`tiles-${name}`).textContent = count(job.tiles[name]);
  }
  $("pixel-rate").textContent = rate(job.pixels_per_second, "px/s");
  $("iteration-rate").textContent = rate(job.iterations_per_second, "it/s");
  $("elapsed").textContent = duration(job.elapsed);
  $("eta").textContent = job.status === "running" ? duration(job.eta) : "–";
  $("job-error").hidden = !job.error;
  $("job-error").textContent = job.error || "";
  document.title = running ? `${percent(job.progress)} · fraktal` : "fraktal";
}

function workerRows(worker) {
  const chunks = worker.chunks.map((c) => el("span", {
    className: "chunk",
    text: `#${c.id}: ${c.tiles} tile${c.tiles === 1 ? "" : "s"}`,
  }));
  const processes = `${worker.processes} process${worker.processes === 1 ? "" : "es"}`;
  const speed = el("td", { className: "num" }, [
    worker.tiles_per_second == null ? "–" : `${count(Math.round(worker.tiles_per_second))} tiles/s`,
    el("span", { className: "note", text: rate(worker.pixels_per_second, "px/s") }),
  ]);
  const heard = worker.connected ? `${worker.heartbeat_age.toFixed(1)} s` : "–";
  const row = el("tr", {
    "data-id": worker.id,
    "data-name": worker.name,
    "data-status": worker.status,
    className: worker.connected ? "" : "ended",
  }, [
    el("td", {}, [
      worker.name,
      el("span", { className: "note", text: `${worker.id} · ${worker.host} · ${processes}` }),
    ]),
    el("td", {}, [statusBadge(worker.status)]),
    el("td", { className: "num col-chunks" }, chunks.length ? chunks : ["–"]),
    el("td", { className: "num", text: count(worker.tiles_done) }),
    speed,
    el("td", { className: "num col-heard", text: heard }),
  ]);
  if (worker.connected) return [row];
  // A worker that is gone keeps its row, with when and why on a line of its own.
  const when = worker.ended ? `${worker.status} at ${clock(worker.ended)}` : worker.status;
  const why = el("tr", { className: "why", "data-for": worker.id }, [
    el("td", { colspan: "6", text: `${when}: ${worker.reason || "no reason given"}` }),
  ]);
  return [row, why];
}

function renderWorkers(workers) {
  $("workers").tBodies[0].replaceChildren(...workers.flatMap(workerRows));
  $("workers-empty").hidden = workers.length > 0;
  $("workers-empty").textContent = "No worker has joined yet.";
  const live = workers.filter((w) => w.connected).length;
  $("workers-count").textContent = `${live} connected, ${workers.length - live} gone`;
}

function renderEvents(answer) {
  const list = $("events");
  for (const event of answer.events) {
    list.prepend(el("li", { className: `kind-${event.kind}` }, [
      el("time", { text: clock(event.time) }),
      el("span", { text: event.text }),
    ]));
  }
  while (list.children.length > MAX_EVENTS) list.lastElementChild.remove();
  state.lastEvent = answer.last;
}

function jobItem(job) {
  const thumb = el("img", { alt: `preview of job ${job.id}`, title: "show this job" });
  thumb.addEventListener("click", () => {
    state.pinned = job.id;
    tick();
  });
  const text = el("div", { className: "job-text" });
  const actions = el("div", { className: "job-actions" });
  return el("li", { "data-job": job.id }, [thumb, text, actions]);
}

function updateJobItem(item, job) {
  const [thumb, text, actions] = item.children;
  const source = `/api/jobs/${encodeURIComponent(job.id)}/preview.png?size=192&v=${job.status}-${job.tiles.done}`;
  if (thumb.getAttribute("src") !== source) thumb.setAttribute("src", source);

  let outcome = job.status === "running" ? `${percent(job.progress)}, ETA ${duration(job.eta)}` : "";
  if (job.status === "done") outcome = `in ${duration(job.elapsed)}`;
  text.replaceChildren(
    el("strong", { text: job.id }), " ", statusBadge(job.status), " ",
    el("span", { className: "muted", text: outcome }),
    el("br"), el("code", { text: describe(job.params) }),
    ...(job.error ? [el("br"), el("span", { className: "error", text: job.error })] : []),
  );

  const buttons = [];
  if (job.picture) {
    buttons.push(el("a", {
      className: "button",
      href: `/api/jobs/${encodeURIComponent(job.id)}/image.png`,
      text: "download PNG",
    }));
  }
  if (job.status === "queued" || job.status === "running") {
    const cancel = el("button", { type: "button", className: "danger", text: "cancel" });
    cancel.addEventListener("click", () => cancelJob(job.id, $("submit-message")));
    buttons.push(cancel);
  }
  actions.replaceChildren(...buttons);
  item.classList.toggle("shown", state.shown !== null && state.shown.id === job.id);
}

function renderJobs(jobs) {
  const list = $("jobs");
  const seen = new Set();
  for (const job of jobs) {
    seen.add(job.id);
    if (!state.jobItems.has(job.id)) state.jobItems.set(job.id, jobItem(job));
    const item = state.jobItems.get(job.id);
    updateJobItem(item, job);
    list.append(item); // moves it into API order, newest first
  }
  for (const [id, item] of state.jobItems) {
    if (!seen.has(id)) {
      item.remove();
      state.jobItems.delete(id);
    }
  }
  $("jobs-empty").hidden = jobs.length > 0;
}

function previewSide() {
  const width = $("preview").parentElement.clientWidth * (window.devicePixelRatio || 1);
  return Math.max(128, Math.min(1024, Math.ceil(width / 128) * 128));
}

function renderPreview(job) {
  state.shown = job;
  $("follow-live").hidden = state.pinned === null;
  const download = $("download");
  if (!job) {
    $("preview-caption").textContent = "nothing to show yet";
    download.hidden = true;
    return;
  }
  $("preview-caption").textContent = `job ${job.id}, ${job.status}, ${percent(job.progress)}`;
  download.hidden = !job.picture;
  download.href = `/api/jobs/${encodeURIComponent(job.id)}/image.png`;

  const side = previewSide();
  const key = `${job.id}:${job.status}:${job.tiles.done}:${side}`;
  if (key === state.previewKey || state.previewLoading) return;
  state.previewLoading = true;
  const image = new Image();
  image.onload = () => {
    const canvas = $("preview");
    canvas.width = image.naturalWidth;
    canvas.height = image.naturalHeight;
    canvas.getContext("2d").drawImage(image, 0, 0);
    canvas.dataset.job = job.id;
    canvas.dataset.done = String(job.tiles.done);
    state.previewKey = key;
    state.previewLoading = false;
  };
  image.onerror = () => {
    state.previewLoading = false;
  };
  image.src = `/api/jobs/${encodeURIComponent(job.id)}/preview.png?size=${side}&v=${job.tiles.done}`;
}

// -- the loop ------------------------------------------------------------

let timer = null;
let polling = false;
let again = false;

// One poll at a time; a poll asked for during another runs right after it.
async function tick() {
  if (polling) {
    again = true;
    return;
  }
  polling = true;
  clearTimeout(timer);
  try {
    const [status, workers, events, jobs] = await Promise.all([
      getJson("/api/status"),
      getJson("/api/workers"),
      getJson(`/api/events?after=${state.lastEvent}`),
      getJson("/api/jobs"),
    ]);
    renderConnection(true);
    state.auth = status.auth;
    renderSummary(status);
    renderJob(status.job || jobs.jobs[0] || null, status.job !== null);
    renderWorkers(workers.workers);
    renderEvents(events);
    let shown = status.job || jobs.jobs[0] || null;
    if (state.pinned !== null) {
      shown = jobs.jobs.find((job) => job.id === state.pinned) || shown;
    }
    renderPreview(shown);
    renderJobs(jobs.jobs);
  } catch (error) {
    renderConnection(false, error);
  } finally {
    polling = false;
    timer = setTimeout(tick, again ? 0 : POLL_MS);
    again = false;
  }
}

// -- controls ------------------------------------------------------------

function formFields(form) {
  const data = new FormData(form);
  return {
    center: data.get("center"),
    span: data.get("span"),
    size: data.get("size"),
    max_iter: data.get("max_iter"),
    palette: data.get("palette"),
    equalize: data.get("equalize") === "on",
  };
}

function fillForm(fields) {
  const form = $("submit-form");
  for (const name of ["center", "span", "size", "max_iter", "palette"]) {
    form.elements[name].value = String(fields[name]);
  }
  form.elements.equalize.checked = Boolean(fields.equalize);
}

function zoomAt(event) {
  const job = state.shown;
  if (!job) return;
  const box = event.currentTarget.getBoundingClientRect();
  const fx = (event.clientX - box.left) / box.width;
  const fy = (event.clientY - box.top) / box.height;
  const p = job.params;
  // The pixel convention of the README: row 0 is the top of the view.
  const re = p.center_re + (fx - 0.5) * p.span;
  const im = p.center_im + (0.5 - fy) * p.span * p.height / p.width;
  const fields = {
    center: `${re},${im}`,
    span: p.span / Number($("zoom-factor").value),
    size: `${p.width}x${p.height}`,
    max_iter: p.max_iter,
    palette: p.palette,
    equalize: p.equalize,
    tile_size: p.tile_size,
  };
  fillForm(fields);
  submitJob(fields, $("zoom-message")).then(tick);
}

document.addEventListener("DOMContentLoaded", () => {
  $("submit-form").addEventListener("submit", (event) => {
    event.preventDefault();
    submitJob(formFields(event.currentTarget), $("submit-message")).then(tick);
  });
  $("cancel-job").addEventListener("click", () => {
    const id = $("job-card").dataset.job;
    if (id) cancelJob(id, $("submit-message")).then(tick);
  });
  $("follow-live").addEventListener("click", () => {
    state.pinned = null;
    tick();
  });
  $("preview").addEventListener("click", zoomAt);
  tick();
});
