// The voxid page: record or upload, enrol / verify / identify, live identification.
import { Microphone, TARGET_RATE, UserError, encodeWav } from "./audio.js";

const $ = (id) => document.getElementById(id);
export const state = { clip: null, clipName: "", recorder: null, live: null };

export function show(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = kind === "info" ? "info" : "";
  box.hidden = !text;
}

function clearMessage() { show(""); }

export function fail(err) {
  show(err instanceof UserError ? err.message : `Something went wrong: ${err.message || err}`);
}

// ---------------------------------------------------------------- API calls

const apiKey = $("api-key");
apiKey.value = sessionStorage.getItem("voxid-api-key") || "";
apiKey.addEventListener("input", () => sessionStorage.setItem("voxid-api-key", apiKey.value));

export async function api(path, { method = "GET", form = null, auth = false } = {}) {
  const headers = {};
  if (auth) headers["X-API-Key"] = apiKey.value.trim();
  let response;
  try {
    response = await fetch(path, { method, body: form, headers });
  } catch {
    throw new UserError("The server cannot be reached. Is `voxid serve` still running?");
  }
  let body = null;
  try { body = await response.json(); } catch { /* a non-JSON error page */ }
  if (!response.ok) {
    const detail = body && typeof body.detail === "string" ? body.detail : response.statusText;
    if (response.status === 401) throw new UserError(`Not allowed: ${detail}. Enter the API key printed by \`voxid serve\`.`);
    if (response.status === 413) throw new UserError(`Too large: ${detail}.`);
    if (response.status >= 500) throw new UserError("The server failed on this request; see its log.");
    throw new UserError(detail);
  }
  return body;
}

async function refresh() {
  try {
    const [health, list] = await Promise.all([api("/health"), api("/speakers")]);
    $("health").textContent = `${health.model} (${health.backend}) · ${health.speakers} speaker(s) · threshold ${Number(health.threshold).toFixed(2)}`;
    renderSpeakers(list.speakers);
  } catch (err) {
    $("health").textContent = "server unreachable";
    fail(err);
  }
}

// One chip per name up to case: "wisleyv" (trained) and "Wisleyv" (enrolled) are one
// person to whoever reads the list, though the registry keeps both.
function groupByName(speakers) {
  const groups = new Map();
  for (const s of speakers) {
    const key = s.name.toLowerCase();
    if (!groups.has(key)) groups.set(key, []);
    groups.get(key).push(s);
  }
  return [...groups.values()];
}

function chipLabel(group) {
  const enrolled = group.filter((s) => s.source === "enrolled");
  const parts = [];
  if (enrolled.length) parts.push(String(enrolled.reduce((n, s) => n + s.n_utterances, 0)));
  if (enrolled.length < group.length) parts.push("trained");
  return `${(enrolled[0] || group[0]).name} (${parts.join(", ")})`;
}

function renderSpeakers(speakers) {
  const ul = $("speakers");
  ul.replaceChildren();
  if (!speakers.length) {
    const li = document.createElement("li");
    li.className = "muted";
    li.textContent = "No speakers enrolled yet: record someone and press Enrol.";
    ul.append(li);
  }
  for (const group of groupByName(speakers)) {
    const li = document.createElement("li");
    const label = document.createElement("span");
    label.textContent = chipLabel(group);
    li.append(label);
    for (const s of group.filter((g) => g.source === "enrolled")) {
      const del = document.createElement("button");
      del.type = "button";
      del.textContent = "✕";
      del.title = `Remove ${s.name}`;
      del.setAttribute("aria-label", `Remove ${s.name}`);
      del.addEventListener("click", () => removeSpeaker(s.name));
      li.append(del);
    }
    ul.append(li);
  }
}

async function removeSpeaker(name) {
  if (!confirm(`Remove ${name} and all their recordings?`)) return;
  try {
    await api(`/speakers/${encodeURIComponent(name)}`, { method: "DELETE", auth: true });
    show(`Removed ${name}.`, "info");
    refresh();
  } catch (err) { fail(err); }
}

// ---------------------------------------------------------------- the recording

function setClip(blob, name, info) {
  state.clip = blob;
  state.clipName = name;
  $("clip-info").textContent = info;
  const audio = $("playback");
  if (audio.src) URL.revokeObjectURL(audio.src);
  audio.src = URL.createObjectURL(blob);
  audio.hidden = false;
}

$("record").addEventListener("click", async () => {
  const button = $("record");
  clearMessage();
  if (state.recorder) {
    const { mic, chunks } = state.recorder;
    state.recorder = null;
    await mic.stop();
    button.textContent = "● Record";
    button.classList.remove("recording");
    $("level").style.width = "0";
    const samples = chunks.reduce((n, c) => n + c.length, 0);
    setClip(encodeWav(chunks), "recording.wav", `Recorded ${(samples / TARGET_RATE).toFixed(1)} s.`);
    return;
  }
  const mic = new Microphone();
  const chunks = [];
  try {
    await mic.start((pcm, level) => {
      chunks.push(pcm);
      $("level").style.width = `${Math.min(100, level * 400)}%`;
      const seconds = chunks.reduce((n, c) => n + c.length, 0) / TARGET_RATE;
      $("clip-info").textContent = `Recording… ${seconds.toFixed(1)} s (press Stop when done)`;
    });
  } catch (err) { fail(err); return; }
  state.recorder = { mic, chunks };
  button.textContent = "■ Stop";
  button.classList.add("recording");
});

$("file").addEventListener("change", (e) => {
  const file = e.target.files[0];
  if (file) setClip(file, file.name, `File: ${file.name} (${(file.size / 1e6).toFixed(2)} MB).`);
});

function needClip() {
  if (!state.clip) throw new UserError("Record something or choose a file first.");
  const form = new FormData();
  return form;
}

function needName() {
  const name = $("name").value.trim();
  if (!name) throw new UserError("Enter the speaker's name first.");
  return name;
}

function audioSummary(a) {
  return `${a.duration_s.toFixed(1)} s, ${Math.round(a.speech_ratio * 100)} % speech`;
}

function renderCandidates(candidates, threshold) {
  const ul = document.createElement("ul");
  ul.className = "candidates";
  for (const c of candidates) {
    const li = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = c.name;
    const bar = document.createElement("div");
    bar.className = "mini";
    const fill = document.createElement("div");
    // The threshold sits mid-bar whatever the scale (cosine, or AS-normed with a cohort).
    const scale = threshold > 0 ? 2 * threshold : 1;
    fill.style.width = `${Math.max(0, Math.min(1, c.score / scale)) * 100}%`;
    if (c.score < threshold) fill.style.background = "var(--warn)";
    const mark = document.createElement("span");
    mark.className = "threshold";
    mark.title = `threshold ${threshold.toFixed(2)}`;
    bar.append(fill, mark);
    const score = document.createElement("span");
    score.textContent = c.score.toFixed(2);
    li.append(name, bar, score);
    ul.append(li);
  }
  return ul;
}

function verdict(text, ok) {
  const p = document.createElement("p");
  p.className = `verdict ${ok ? "ok" : "bad"}`;
  p.textContent = text;
  return p;
}

async function action(button, run) {
  clearMessage();
  // A result left from the last request would read as this one's when this one fails.
  $("result").replaceChildren();
  button.disabled = true;
  try { await run(); } catch (err) { fail(err); } finally { button.disabled = false; }
}

$("enrol").addEventListener("click", (e) => action(e.target, async () => {
  const name = needName();
  const form = needClip();
  form.append("name", name);
  form.append("files", state.clip, state.clipName);
  const r = await api("/enroll", { method: "POST", form, auth: true });
  $("result").replaceChildren(verdict(`Enrolled ${r.name} (${audioSummary(r.audio[0])}).`, true));
  refresh();
}));

$("verify").addEventListener("click", (e) => action(e.target, async () => {
  const name = needName();
  const form = needClip();
  form.append("name", name);
  form.append("file", state.clip, state.clipName);
  const r = await api("/verify", { method: "POST", form });
  const text = r.accepted ? `Yes: this is ${r.name}` : `No: this is not ${r.name}`;
  const detail = document.createElement("p");
  detail.className = "muted";
  detail.textContent = `score ${r.score.toFixed(2)}, threshold ${r.threshold.toFixed(2)} · ${audioSummary(r.audio)}`;
  $("result").replaceChildren(verdict(text, r.accepted), detail);
}));

$("identify").addEventListener("click", (e) => action(e.target, async () => {
  const form = needClip();
  form.append("file", state.clip, state.clipName);
  const r = await api("/identify?top_k=5", { method: "POST", form });
  const known = r.name !== "unknown";
  $("result").replaceChildren(
    verdict(known ? `This is ${r.name}` : "Unknown speaker: nobody passes the threshold", known),
    renderCandidates(r.candidates, r.threshold));
}));

// ---------------------------------------------------------------- live mode

function showDecision(d) {
  const display = $("live-display");
  const kind = d.label === "silence" ? "silence" : d.label === "unknown" ? "unknown" : "speaker";
  display.className = `live ${kind}`;
  $("live-label").textContent = kind === "silence" ? "silence" : kind === "unknown" ? "unknown speaker" : d.label;
  $("live-bar").style.width = `${kind === "silence" ? 0 : Math.round(d.confidence * 100)}%`;
  const score = d.score === null ? "" : ` · score ${d.score.toFixed(2)}`;
  $("live-info").textContent = `${d.t_end.toFixed(1)} s${score} · speech ${Math.round(d.speech_ratio * 100)} % · latency ${Math.round(d.latency_ms)} ms`;
}

async function stopLive(message) {
  const live = state.live;
  if (!live) return;
  state.live = null;
  if (live.ws.readyState <= 1) live.ws.close();
  await live.mic.stop();
  $("live").textContent = "Start live";
  $("live").setAttribute("aria-pressed", "false");
  $("live-display").className = "live idle";
  $("live-label").textContent = "—";
  $("live-bar").style.width = "0";
  if (message) fail(new UserError(message));
}

$("live").addEventListener("click", async () => {
  clearMessage();
  if (state.live) { await stopLive(); return; }
  const proto = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(`${proto}://${location.host}/ws/live?sample_rate=${TARGET_RATE}`);
  ws.binaryType = "arraybuffer";
  const mic = new Microphone();
  state.live = { ws, mic };
  let pending = [];
  let pendingLength = 0;
  ws.onmessage = (e) => {
    const msg = JSON.parse(e.data);
    if (msg.type === "decision") { clearMessage(); showDecision(msg); }
    else if (msg.type === "error") show(msg.message.includes("no enrolled") ? "No speakers enrolled yet: enrol someone first." : msg.message);
  };
  ws.onclose = () => { if (state.live && state.live.ws === ws) stopLive("The live connection to the server closed."); };
  ws.onopen = async () => {
    try {
      await mic.start((pcm) => {
        pending.push(pcm);
        pendingLength += pcm.length;
        if (pendingLength < TARGET_RATE / 10 || ws.readyState !== 1) return;
        const frame = new Int16Array(pendingLength);
        let off = 0;
        for (const p of pending) { frame.set(p, off); off += p.length; }
        pending = [];
        pendingLength = 0;
        ws.send(frame.buffer);
      });
    } catch (err) { await stopLive(); fail(err); return; }
    $("live").textContent = "Stop live";
    $("live").setAttribute("aria-pressed", "true");
    $("live-display").className = "live silence";
    $("live-label").textContent = "listening…";
  };
});

refresh();
