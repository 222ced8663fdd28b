// The song view an MCP Apps host renders inline for `get_song` and `generate_song`.
//
// It speaks to the host only through the extension's own client (`App` from
// @modelcontextprotocol/ext-apps): the tool result arrives as a notification, progress is
// followed with bounded `get_song` calls, the takes are read as `bygheart://` resources and
// played from blob: URLs, and the buttons call `keep_take`, `generate_song` or `retry_song`.
// Nothing is fetched from the network. Text from the server is data: it only ever reaches
// the page through textContent.

import {
  App,
  applyDocumentTheme,
  applyHostFonts,
  applyHostStyleVariables,
} from "@modelcontextprotocol/ext-apps/app-with-deps";

const FINAL = new Set(["done", "failed", "cancelled"]);
const AUDIO = /\.(mp3|wav|flac|ogg|opus|aac|m4a)$/i;
// Each follow-up call waits at most this long: well under the ~60 s after which hosts cut a
// tool call, and under the server's own 50 s bound.
const FOLLOW_SECONDS = 25;
// A view left open does not poll forever (a song held until tomorrow's credits, say): after
// this long it stops and offers to check again.
const FOLLOW_FOR_MS = 30 * 60 * 1000;
// The generate_song arguments a "make again" carries over from the finished song's request.
const AGAIN_FIELDS = [
  "lyrics", "description", "style", "title", "model", "duration", "bpm", "key",
  "time_signature", "language", "instrumental", "takes",
];

const root = document.getElementById("song");
const app = new App({ name: "bygheartd song", version: "1" }, {}, { autoResize: true });

const state = {
  record: null, // the job record (the tools' structured content)
  sidecar: null, // the song resource once done: quality verdicts, keeper, request
  audio: new Map(), // take URI -> blob: URL
  busy: false,
  error: null,
  following: null, // the job id being followed
  paused: false, // followed long enough: "Check again" resumes
};

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name === "text") node.textContent = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function baseName(path) {
  return String(path || "").split(/[\\/]/).pop();
}

function textOf(result) {
  return (result.content || []).filter((c) => c.type === "text").map((c) => c.text).join("\n");
}

/** The audio takes in order: `number` as keep_take counts them, `uri` the take resource. */
function takesOf(record) {
  const takes = [];
  (record.files || []).forEach((file, index) => {
    if (!AUDIO.test(file.path || "")) return;
    takes.push({
      number: takes.length + 1,
      uri: `bygheart://songs/${record.id}/takes/${index + 1}`,
      name: baseName(file.path),
      size: file.size,
    });
  });
  return takes;
}

function statusLine(record) {
  const parts = [record.status];
  if (record.status === "running" && typeof record.progress === "number") {
    parts[0] = `running, ${Math.round(record.progress * 100)}%`;
  }
  if (record.status === "done") {
    const count = takesOf(record).length;
    parts.push(count === 1 ? "1 take" : `${count} takes`);
  }
  if (record.eta_seconds && !FINAL.has(record.status)) parts.push(`about ${Math.round(record.eta_seconds)} s left`);
  if (record.reason && ["held", "failed", "cancelled"].includes(record.status)) parts.push(record.reason);
  if (record.resumes_at) parts.push(`resumes at ${record.resumes_at}`);
  return parts.join(" · ");
}

function progressValue(record) {
  if (record.status === "done") return 1;
  if (typeof record.progress === "number") return Math.max(0.02, record.progress);
  return { queued: 0, held: 0, submitting: 0.02, running: 0.05, downloading: 0.9, processing: 0.95 }[record.status] ?? 0;
}

function verdictOf(take) {
  const quality = state.sidecar && state.sidecar.quality;
  const entry = quality && typeof quality === "object" ? quality[take.name] : null;
  return entry && typeof entry === "object" ? entry : null;
}

function keeperNumber(record) {
  if (record.keeper && typeof record.keeper.take === "number") return record.keeper.take;
  return null;
}

function renderTake(record, take) {
  const keeper = keeperNumber(record) === take.number;
  const verdict = verdictOf(take);
  const header = el("header", {},
    el("h2", { text: `Take ${take.number}` }),
    el("span", { class: "note", text: take.name }),
    verdict && verdict.verdict ? el("span", {
      class: `badge ${verdict.verdict === "pass" ? "pass" : "fail"}`,
      text: verdict.verdict === "pass" ? "passed the quality check" : "failed the quality check",
    }) : null,
    keeper ? el("span", {
      class: "badge keeper",
      text: record.keeper.by === "person" ? "keeper (your choice)" : "keeper",
    }) : null,
  );
  const findings = verdict && Array.isArray(verdict.findings) && verdict.findings.length
    ? el("ul", { class: "findings" }, ...verdict.findings.map((f) => el("li", {
      text: f && typeof f === "object" ? (f.message || f.code || "") : String(f),
    })))
    : null;
  const src = state.audio.get(take.uri);
  const player = src
    ? el("audio", { controls: true, preload: "metadata", src, "data-take": take.number })
    : el("p", { class: "loading", text: "Loading the audio…" });
  const keep = keeper ? null : el("button", {
    type: "button",
    "data-keep": take.number,
    disabled: state.busy,
    onclick: () => keepTake(record.id, take.number),
    text: "Keep this take",
  });
  return el("li", { class: `take${keeper ? " keeper" : ""}`, "data-take": take.number },
    header, findings, player, keep ? el("div", { class: "actions" }, keep) : null);
}

function render() {
  const record = state.record;
  root.replaceChildren();
  if (!record) {
    root.append(el("p", { class: "note", text: state.error ? "" : "Waiting for the song…" }));
    if (state.error) root.append(el("p", { class: "error", role: "alert", text: state.error }));
    return;
  }
  root.append(
    el("h1", { text: record.title || "Untitled" }),
    el("div", { class: "meta", text: [`job ${record.id}`, record.model].filter(Boolean).join(" · ") }),
    el("div", { class: "status", "data-status": record.status, text: statusLine(record) }),
  );
  if (!FINAL.has(record.status)) {
    root.append(el("progress", { max: 1, value: progressValue(record) }));
    if (state.paused) {
      root.append(el("div", { class: "actions" }, el("button", {
        type: "button",
        "data-check": "",
        onclick: () => follow(state.record),
        text: "Check again",
      })));
    }
  }
  if (record.status === "done") {
    const takes = takesOf(record);
    root.append(el("ul", { class: "takes" }, ...takes.map((t) => renderTake(record, t))));
  }
  if (FINAL.has(record.status)) {
    root.append(el("div", { class: "actions" }, el("button", {
      type: "button",
      "data-again": "",
      disabled: state.busy,
      onclick: () => makeAgain(record),
      text: "Make again",
    })));
  }
  if (state.error) root.append(el("p", { class: "error", role: "alert", text: state.error }));
}

async function call(name, args) {
  const result = await app.callServerTool({ name, arguments: args });
  if (result.isError) throw new Error(textOf(result) || `${name} failed`);
  return result.structuredContent;
}

async function readSong(id) {
  const result = await app.readServerResource({ uri: `bygheart://songs/${id}` });
  const text = (result.contents || []).map((c) => c.text || "").join("");
  try {
    return JSON.parse(text);
  } catch {
    return null;
  }
}

async function loadTake(take) {
  if (state.audio.has(take.uri)) return;
  const result = await app.readServerResource({ uri: take.uri });
  const content = (result.contents || [])[0];
  if (!content || typeof content.blob !== "string") {
    // Over the size read through MCP: the server answers with the file's path instead.
    throw new Error(content && content.text ? content.text : `take ${take.number} could not be read`);
  }
  const bytes = Uint8Array.from(atob(content.blob), (c) => c.charCodeAt(0));
  const url = URL.createObjectURL(new Blob([bytes], { type: content.mimeType || "audio/mpeg" }));
  state.audio.set(take.uri, url);
}

async function showDone(record) {
  state.sidecar = await readSong(record.id).catch(() => null);
  render();
  for (const take of takesOf(record)) {
    try {
      await loadTake(take);
    } catch (err) {
      state.error = String(err && err.message ? err.message : err);
    }
    render();
  }
}

async function follow(record) {
  state.record = record;
  state.following = record.id;
  state.paused = false;
  render();
  const until = Date.now() + FOLLOW_FOR_MS;
  while (!FINAL.has(state.record.status) && state.following === record.id) {
    if (Date.now() > until) {
      state.paused = true;
      render();
      return;
    }
    try {
      const next = await call("get_song", { job_id: record.id, wait_seconds: FOLLOW_SECONDS });
      if (state.following !== record.id) return;
      state.record = next;
      state.error = null;
    } catch (err) {
      state.error = `Could not follow the song: ${err.message || err}`;
      render();
      return;
    }
    render();
  }
  if (state.record.status === "done") await showDone(state.record);
}

async function keepTake(id, number) {
  state.busy = true;
  render();
  try {
    state.record = await call("keep_take", { job_id: id, take: number });
    state.error = null;
    if (state.sidecar) state.sidecar = await readSong(id).catch(() => state.sidecar);
  } catch (err) {
    state.error = String(err.message || err);
  }
  state.busy = false;
  render();
}

async function makeAgain(record) {
  state.busy = true;
  render();
  try {
    let next;
    if (record.status === "done") {
      const request = (state.sidecar && state.sidecar.request) || {};
      const args = {};
      for (const key of AGAIN_FIELDS) {
        if (request[key] !== undefined && request[key] !== null && request[key] !== "") args[key] = request[key];
      }
      if (args.lyrics && args.description) delete args.description;
      if (!args.title) args.title = record.title;
      // A new key: this is a new song on purpose, never the de-duplicated earlier one.
      args.idempotency_key = `again-${record.id}-${Date.now()}`;
      next = await call("generate_song", args);
    } else {
      next = await call("retry_song", { job_id: record.id });
    }
    state.sidecar = null;
    state.error = null;
    state.busy = false;
    await follow(next);
    return;
  } catch (err) {
    state.error = String(err.message || err);
  }
  state.busy = false;
  render();
}

function applyContext(context) {
  if (!context) return;
  if (context.theme) applyDocumentTheme(context.theme);
  if (context.styles && context.styles.variables) applyHostStyleVariables(context.styles.variables);
  if (context.styles && context.styles.css && context.styles.css.fonts) applyHostFonts(context.styles.css.fonts);
}

app.ontoolinput = (params) => {
  if (state.record) return;
  const args = (params && params.arguments) || {};
  const what = args.job_id ? `Looking up song ${args.job_id}…` : "Queuing the song…";
  root.replaceChildren(el("p", { class: "note", text: what }));
};

app.ontoolresult = (result) => {
  if (result.isError || !result.structuredContent || !result.structuredContent.id) {
    state.error = textOf(result) || "The tool gave no song.";
    render();
    return;
  }
  state.error = null;
  follow(result.structuredContent).catch((err) => {
    state.error = String(err.message || err);
    render();
  });
};

app.onhostcontextchanged = (context) => applyContext(context);

app.connect().then(() => applyContext(app.getHostContext())).catch((err) => {
  state.error = `Not connected to the host: ${err.message || err}`;
  render();
});
