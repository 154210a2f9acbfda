// "Who spoke when": send the current recording to /diarize and draw its timeline.
import { UserError } from "./audio.js";
import { api, fail, show, state } from "./app.js";

const $ = (id) => document.getElementById(id);
// Colours far apart (Tableau 10), one per speaker in order of first appearance.
const COLOURS = ["#4e79a7", "#f28e2b", "#59a14f", "#e15759", "#76b7b2",
  "#edc948", "#b07aa1", "#ff9da7", "#9c755f", "#bab0ac"];

function lane(name, colour, turns, duration) {
  const row = document.createElement("div");
  row.className = "lane";
  const label = document.createElement("span");
  label.className = "lane-name";
  label.textContent = name;
  label.style.color = colour;
  const track = document.createElement("div");
  track.className = "lane-track";
  for (const t of turns) {
    const bar = document.createElement("div");
    bar.className = "turn";
    bar.style.left = `${(100 * t.start) / duration}%`;
    bar.style.width = `${(100 * (t.end - t.start)) / duration}%`;
    bar.style.background = colour;
    bar.title = `${name}: ${t.start.toFixed(1)}–${t.end.toFixed(1)} s`;
    track.append(bar);
  }
  row.append(label, track);
  return row;
}

export function renderTimeline(result) {
  const box = $("timeline");
  box.replaceChildren();
  const summary = document.createElement("p");
  summary.className = "verdict ok";
  const names = result.speakers.map((s) => s.label);
  summary.textContent = names.length
    ? `${names.length} speaker(s) in ${result.duration_s.toFixed(1)} s: ${names.join(", ")}`
    : "No speech found.";
  box.append(summary);
  const duration = Math.max(result.duration_s, 0.001);
  result.speakers.forEach((s, i) => {
    const turns = result.segments.filter((t) => t.speaker === s.label);
    const row = lane(s.label, COLOURS[i % COLOURS.length], turns, duration);
    row.dataset.speaker = s.label;
    if (s.enrolled) row.title = `enrolled, score ${s.score.toFixed(2)}`;
    box.append(row);
  });
  const axis = document.createElement("div");
  axis.className = "axis muted";
  for (const f of [0, 0.25, 0.5, 0.75, 1]) {
    const tick = document.createElement("span");
    tick.textContent = `${(f * duration).toFixed(1)} s`;
    axis.append(tick);
  }
  box.append(axis);
}

$("diarize").addEventListener("click", async (e) => {
  const button = e.target;
  show("");
  $("timeline").replaceChildren();
  button.disabled = true;
  try {
    if (!state.clip) throw new UserError("Record something or choose a file first.");
    const form = new FormData();
    form.append("file", state.clip, state.clipName);
    const n = $("num-speakers").value.trim();
    const query = n ? `?num_speakers=${encodeURIComponent(n)}` : "";
    renderTimeline(await api(`/diarize${query}`, { method: "POST", form }));
  } catch (err) { fail(err); } finally { button.disabled = false; }
});
