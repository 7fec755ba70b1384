// litesam web page: plain JS, no build step. Talks only to the documented /api endpoints.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  imageId: null, name: null, w: 0, h: 0, scale: 1,
  points: [], box: null, undo: [], redo: [],
  masks: [], chosen: 0, seq: 0, prompt: null,
  everything: null, hovered: -1,
  objects: [], folder: null, index: -1,
  models: null, encodeMs: 1000, drag: null,
  image: null, layer: null,  // the overlay's pixels, and the kept objects' (redrawn when those change)
  hover: null, hoverTimer: 0,  // the preview under a resting mouse (before the first click)
};
const HOVER_MS = 80;  // the mouse rests this long before its preview is asked for
window.litesamLatencies = [];  // click -> mask on screen, ms (read by tests and benchmarks)
window.litesamTimings = [];  // where each click's time went: server, request (+ JSON), unpack, draw, frame

function status(text) { $("status").textContent = text; }

async function api(path, options = {}) {
  const response = await fetch(path, options);
  const body = await response.json().catch(() => ({}));
  if (!response.ok) {
    const detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    throw new Error(detail || response.statusText);
  }
  return body;
}
const postJSON = (path, data) => api(path, {
  method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(data),
});

// -- progress while an image is encoded -------------------------------------------------------------
function withProgress(label, promise) {
  const bar = $("progress-bar"), box = $("progress"), start = performance.now();
  box.hidden = false;
  const timer = setInterval(() => {
    const t = performance.now() - start;
    bar.style.width = (95 * (1 - Math.exp(-t / S.encodeMs))).toFixed(1) + "%";
    $("progress-text").textContent = `${label} ${(t / 1000).toFixed(1)} s`;
  }, 50);
  return promise.finally(() => { clearInterval(timer); box.hidden = true; bar.style.width = "0"; });
}

// -- models -----------------------------------------------------------------------------------------
async function loadModels() {
  const info = await api("/api/models");
  S.models = info;
  const select = $("model");
  select.innerHTML = "";
  for (const m of info.models) {
    const option = new Option(m.available ? m.name : `${m.name} (needs ${m.checkpoint})`, m.name);
    option.disabled = !m.available;
    select.add(option);
  }
  select.value = info.current || "";
  const needs = info.models.filter((m) => !m.available);
  const note = $("needs");
  note.hidden = !(needs.length || !info.current || info.random_weights);
  note.innerHTML = "";
  const line = (text) => { const p = document.createElement("p"); p.textContent = text; note.append(p); };
  if (info.random_weights) line("Random weights (demo/timing): masks are meaningless.");
  if (!info.current) line("No model loaded yet: pick one, or drop its checkpoint file here.");
  for (const m of needs) {
    line(`${m.name} needs ${m.checkpoint}` + (m.url ? ` from ${m.url}` : "") +
      ` — drop it here or save it as ${m.checkpoint_path}`);
  }
}

async function selectModel(name) {
  status(`loading ${name}…`);
  endHover();
  try {
    await withProgress(`loading ${name}`, postJSON("/api/models/select", { name }));
    await loadModels();
    status(`model ${name}`);
    if (S.imageId) await encodeCurrent();
  } catch (e) { status(e.message); await loadModels(); }
}

async function uploadCheckpoint(file) {
  const known = S.models.models.find((m) => m.checkpoint === file.name);
  const model = known ? known.name : $("model").value;
  const form = new FormData();
  form.append("file", file);
  form.append("model", model);
  try {
    await withProgress(`checking ${file.name}`, api("/api/checkpoints", { method: "POST", body: form }));
    await loadModels();
    status(`${file.name} stored; model ${model}`);
  } catch (e) { status(e.message); }
}

// -- images -----------------------------------------------------------------------------------------
async function showBitmap(blob) {
  const bitmap = await createImageBitmap(blob);
  S.w = bitmap.width; S.h = bitmap.height; S.image = null; S.layer = null; S.hover = null;
  S.imageId = null;  // until the new image is uploaded: no clicks or previews on the old one
  const stage = $("stage");
  S.scale = Math.min(1, (stage.clientWidth - 4) / S.w, (window.innerHeight * 0.85) / S.h);
  for (const c of [$("image"), $("overlay")]) {
    c.width = S.w; c.height = S.h;
    c.style.width = `${S.w * S.scale}px`; c.style.height = `${S.h * S.scale}px`;
  }
  stage.style.height = `${S.h * S.scale}px`;
  $("image").getContext("2d").drawImage(bitmap, 0, 0);
  $("drop-hint").hidden = true;
}

function resetPrompts() {
  S.points = []; S.box = null; S.undo = []; S.redo = []; S.masks = []; S.chosen = 0; S.everything = null;
}

async function openFile(file) {
  resetPrompts(); S.objects = [];
  await showBitmap(file);
  const form = new FormData();
  form.append("file", file);
  try {
    const info = await withProgress("encoding", api("/api/images", { method: "POST", body: form }));
    setImage(info);
  } catch (e) { status(e.message); }
}

function setImage(info) {
  S.imageId = info.image_id; S.name = info.name;
  if (info.encode_ms > 50) S.encodeMs = info.encode_ms;
  if (info.objects) S.objects = info.objects.map(decodedObject);
  status(`${info.name}: ${info.width}x${info.height}, encoded in ${info.encode_ms} ms`);
  renderObjects(); draw();
}

async function encodeCurrent() {
  // the server keeps the pixels: the next prediction encodes them with the new model
  if (S.folder) await openIndex(S.index); else await withProgress("encoding", predict());
}

async function loadFolder() {
  const response = await fetch("/api/folder");
  if (!response.ok) return;
  S.folder = await response.json();
  $("folder-nav").hidden = false;
  const list = $("folder-list");
  list.innerHTML = "";
  S.folder.images.forEach((im) => list.add(new Option(`${im.name} (${im.objects})`, im.index)));
  const done = S.folder.images.filter((im) => im.objects > 0).map((im) => im.index);
  await openIndex(done.length ? Math.max(...done) : 0);
}

async function openIndex(index) {
  if (!S.folder || index < 0 || index >= S.folder.images.length) return;
  S.index = index; $("folder-list").value = index;
  resetPrompts(); S.objects = [];
  const blob = await (await fetch(`/api/folder/images/${index}`)).blob();
  await showBitmap(blob);
  try {
    setImage(await withProgress("encoding", postJSON("/api/folder/open", { index })));
  } catch (e) { status(e.message); }
}

// -- prompts and masks ------------------------------------------------------------------------------
const askBest = (prompt) => postJSON("/api/predict", {
  ...prompt, multimask: true, format: "bits", pick: "best",
});

function snapshot() { return { points: S.points.map((p) => ({ ...p })), box: S.box && [...S.box] }; }
function change(mutate) {
  clearTimeout(S.hoverTimer);
  S.undo.push(snapshot()); S.redo = [];
  mutate();
  S.everything = null;
  predict();
}
function restore(from, to) {
  if (!from.length) return;
  to.push(snapshot());
  const s = from.pop();
  S.points = s.points; S.box = s.box;
  predict();
}

async function predict() {
  const t0 = performance.now();
  const seq = ++S.seq;
  if (!S.imageId || (!S.points.length && !S.box)) { S.masks = []; draw(); renderCandidates(); return; }
  try {
    const prompt = {
      image_id: S.imageId, points: S.points.map((p) => [p.x, p.y]), labels: S.points.map((p) => p.label),
      box: S.box,
    };
    const hover = S.hover, [p] = S.points;  // a first click where the mouse rested: its preview's request
    const hovered = hover && !hover.failed && !S.box && S.points.length === 1 && p.label === 1
      && p.x === hover.x && p.y === hover.y;
    const result = await (hovered ? hover.request : askBest(prompt));
    if (seq !== S.seq) return;  // a newer click is on its way
    const t1 = performance.now();
    // the best candidate's mask comes now, the others when picked (choose)
    S.masks = result.scores.map((score, index) => ({ score, index, bits: null }));
    for (const m of result.masks) {
      S.masks[m.index] = { ...m, bits: hovered && hover.bits ? hover.bits : unpackBits(m.bits, S.w * S.h) };
    }
    S.chosen = result.masks[0].index;
    S.prompt = prompt;
    const t2 = performance.now();
    draw(); renderCandidates();
    const t3 = performance.now();
    await new Promise((resolve) => requestAnimationFrame(() => resolve()));
    const ms = performance.now() - t0;
    window.litesamLatencies.push(ms);
    window.litesamTimings.push({
      total: ms, server: result.decode_ms, request: t1 - t0, unpack: t2 - t1, draw: t3 - t2, frame: t0 + ms - t3,
      hovered: hovered ? 1 : 0,
    });
    status(`${S.masks.length} masks, ${ms.toFixed(0)} ms (decoder ${result.decode_ms} ms)`);
  } catch (e) { if (seq === S.seq) status(e.message); }
}

// Base64 packed bits (numpy.packbits of the row-major mask) -> Uint8Array of n 0/1, a byte at a time:
// each packed byte becomes two 32-bit words of its eight 0/1 bytes (little-endian: first pixel lowest).
const BYTE_WORDS = (() => {
  const words = new Uint32Array(512);
  for (let b = 0; b < 256; b++) for (let k = 0; k < 8; k++) {
    if ((b >> (7 - k)) & 1) words[2 * b + (k >> 2)] |= 1 << (8 * (k & 3));
  }
  return words;
})();
function unpackBits(b64, n) {
  const text = atob(b64), words = new Uint32Array(2 * text.length);
  for (let i = 0; i < text.length; i++) {
    const b = 2 * text.charCodeAt(i);
    words[2 * i] = BYTE_WORDS[b]; words[2 * i + 1] = BYTE_WORDS[b + 1];
  }
  return new Uint8Array(words.buffer, 0, n);
}

// Uncompressed column-major RLE (zeros first) -> Uint8Array of h*w (row-major) 0/1.
function rleBits(rle) {
  const [h, w] = rle.size, bits = new Uint8Array(h * w);
  let pos = 0;
  rle.counts.forEach((n, i) => {
    if (i % 2) for (let p = pos; p < pos + n; p++) bits[(p % h) * w + ((p / h) | 0)] = 1;
    pos += n;
  });
  return bits;
}

function bitsToRle(bits, h, w) {
  const counts = [];
  let value = 0, run = 0;
  for (let x = 0; x < w; x++) for (let y = 0; y < h; y++) {
    const b = bits[y * w + x];
    if (b !== value) { counts.push(run); run = 0; value = b; }
    run++;
  }
  counts.push(run);
  return { size: [h, w], counts };
}

// -- hover preview: what a first click there would select, asked for once the mouse rests -----------
function hoverWanted() {
  return $("hover").checked && S.imageId && !S.points.length && !S.box && !S.everything && !S.drag;
}

function scheduleHover(x, y) {
  clearTimeout(S.hoverTimer);
  if (hoverWanted()) S.hoverTimer = setTimeout(() => hoverAt(x, y), HOVER_MS);
}

// One preview request at a time; the latest resting place is asked for when it returns. A click on the
// same spot uses this request (predict), so its mask is there as soon as the request is done.
async function hoverAt(x, y) {
  if (!hoverWanted() || (S.hover && S.hover.x === x && S.hover.y === y)) return;
  if (S.hover && !S.hover.done) { S.hover.next = [x, y]; return; }
  const hover = { x, y, done: false, failed: false, next: null, bits: null };
  hover.request = askBest({ image_id: S.imageId, points: [[x, y]], labels: [1], box: null });
  S.hover = hover;
  try {
    hover.bits = unpackBits((await hover.request).masks[0].bits, S.w * S.h);
  } catch (e) { hover.failed = true; }  // no preview; a click here asks again
  hover.done = true;
  if (S.hover !== hover) return;
  if (hover.next) hoverAt(...hover.next); else if (hoverWanted()) draw();
}

function endHover() {
  clearTimeout(S.hoverTimer);
  if (S.hover) { S.hover = null; draw(); }
}

// -- drawing ----------------------------------------------------------------------------------------
const COLOURS = Array.from({ length: 64 }, (_, i) => {
  const hue = (i * 137.5) % 360, c = 0.7, x = c * (1 - Math.abs(((hue / 60) % 2) - 1));
  const [r, g, b] = hue < 60 ? [c, x, 0] : hue < 120 ? [x, c, 0] : hue < 180 ? [0, c, x]
    : hue < 240 ? [0, x, c] : hue < 300 ? [x, 0, c] : [c, 0, x];
  return [(r + 0.3) * 255, (g + 0.3) * 255, (b + 0.3) * 255].map((v) => Math.min(255, v | 0));
});

const rgba = (r, g, b, a) => (a << 24) | (b << 16) | (g << 8) | r;

// The kept objects' pixels, computed again only when the objects change (renderObjects).
function objectLayer() {
  if (!S.layer) {
    S.layer = new Uint32Array(S.w * S.h);
    const kept = rgba(40, 200, 90, 90);
    for (const o of S.objects) for (let i = 0; i < o.bits.length; i++) if (o.bits[i]) S.layer[i] = kept;
  }
  return S.layer;
}

function paint(px, bits, colour) {
  for (let i = 0; i < bits.length; i++) if (bits[i]) px[i] = colour;
}

function draw() {
  const canvas = $("overlay"), ctx = canvas.getContext("2d");
  if (!S.w) return;
  if (!S.image) S.image = ctx.createImageData(S.w, S.h);
  const image = S.image, px = new Uint32Array(image.data.buffer);
  if (S.objects.length) px.set(objectLayer()); else px.fill(0);
  if (S.everything) {
    const { labels } = S.everything;
    for (let i = 0; i < labels.length; i++) {
      const k = labels[i];
      if (k < 0) continue;
      const [r, g, b] = COLOURS[k % COLOURS.length];
      px[i] = k === S.hovered ? rgba(255, 255, 255, 190) : rgba(r, g, b, 130);
    }
  } else if (S.masks[S.chosen]) {
    paint(px, S.masks[S.chosen].bits, rgba(30, 144, 255, 140));
  } else if (S.hover && S.hover.bits && hoverWanted()) {
    paint(px, S.hover.bits, rgba(30, 144, 255, 80));
  }
  ctx.putImageData(image, 0, 0);
  const r = Math.max(3, 6 / S.scale);
  for (const p of S.points) {
    ctx.beginPath(); ctx.arc(p.x, p.y, r, 0, 2 * Math.PI);
    ctx.fillStyle = p.label ? "#2e2" : "#e22"; ctx.fill();
    ctx.lineWidth = r / 3; ctx.strokeStyle = "#fff"; ctx.stroke();
  }
  const box = S.drag && S.drag.moved ? S.drag.box : S.box;
  if (box) {
    ctx.lineWidth = Math.max(2, 2 / S.scale); ctx.strokeStyle = "#ff0";
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
  }
}

// Show candidate i, fetching its mask first if only its score is here.
async function choose(i) {
  const m = S.masks[i];
  if (!m.bits) {
    try {
      const seq = S.seq;
      const result = await postJSON("/api/predict", { ...S.prompt, multimask: true, format: "bits", pick: i });
      if (seq !== S.seq) return;
      S.masks[i] = { ...result.masks[0], bits: unpackBits(result.masks[0].bits, S.w * S.h) };
    } catch (e) { status(e.message); return; }
  }
  S.chosen = i; draw(); renderCandidates();
}

function renderCandidates() {
  const div = $("candidates");
  div.innerHTML = "";
  S.masks.forEach((m, i) => {
    const b = document.createElement("button");
    b.textContent = `${i + 1}: ${m.score.toFixed(2)}`;
    b.className = i === S.chosen ? "chosen" : "";
    b.onclick = () => choose(i);
    div.append(b);
  });
}

function decodedObject(o) { return { ...o, bits: rleBits(o.rle) }; }

function renderObjects() {
  S.layer = null;
  const list = $("objects");
  list.innerHTML = "";
  for (const o of S.objects) {
    const li = document.createElement("li"), span = document.createElement("span"),
      del = document.createElement("button");
    span.textContent = `${o.label} (${o.area} px)`;
    del.textContent = "×"; del.title = "delete";
    del.onclick = async () => {
      try {
        await api(`/api/annotations/${o.id}`, { method: "DELETE" });
        S.objects = S.objects.filter((x) => x.id !== o.id); renderObjects(); draw();
      } catch (e) { status(e.message); }
    };
    li.append(span, del); list.append(li);
  }
}

// -- actions ----------------------------------------------------------------------------------------
async function everything() {
  if (!S.imageId) return;
  try {
    const result = await withProgress("segmenting everything", postJSON("/api/everything", { image_id: S.imageId }));
    const labels = new Int32Array(S.w * S.h).fill(-1);
    const records = result.records.map((r) => ({ ...r, bits: rleBits(r.segmentation) }));
    records.forEach((r, k) => { for (let i = 0; i < r.bits.length; i++) if (r.bits[i]) labels[i] = k; });
    S.everything = { labels, records }; S.hovered = -1;
    status(`${records.length} masks`); draw();
  } catch (e) { status(e.message); }
}

async function keep() {
  const mask = S.masks[S.chosen];
  if (!S.imageId || !mask) return;
  try {
    const rle = mask.rle || bitsToRle(mask.bits, S.h, S.w);
    const object = await postJSON("/api/annotations", {
      image_id: S.imageId, rle, label: $("label").value, score: mask.score,
    });
    S.objects.push({ ...object, label: $("label").value || "object", rle, bits: mask.bits });
    if (S.folder) S.folder.images[S.index].objects++;
    resetPrompts(); renderObjects(); renderCandidates(); draw();
    status(`kept ${object.id}`);
  } catch (e) { status(e.message); }
}

function download(blob, name) {
  const a = document.createElement("a");
  a.href = URL.createObjectURL(blob); a.download = name;
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 1000);
}

function downloadMask() {
  const mask = S.masks[S.chosen];
  if (!mask) return status("no mask to download");
  const canvas = document.createElement("canvas");
  canvas.width = S.w; canvas.height = S.h;
  const ctx = canvas.getContext("2d"), image = ctx.createImageData(S.w, S.h), px = new Uint32Array(image.data.buffer);
  for (let i = 0; i < mask.bits.length; i++) px[i] = mask.bits[i] ? 0xffffffff : 0xff000000;
  ctx.putImageData(image, 0, 0);
  canvas.toBlob((blob) => download(blob, `${(S.name || "image").replace(/\.[^.]*$/, "")}_mask.png`), "image/png");
}

async function downloadCoco() {
  const response = await fetch("/api/annotations/coco");
  download(await response.blob(), "annotations.json");
}

// -- events -----------------------------------------------------------------------------------------
function imagePoint(e) {
  const rect = $("overlay").getBoundingClientRect();
  const clamp = (v, hi) => Math.max(0, Math.min(hi - 1, v));
  return [clamp((e.clientX - rect.left) / S.scale, S.w), clamp((e.clientY - rect.top) / S.scale, S.h)];
}

function bindEvents() {
  const overlay = $("overlay");
  overlay.addEventListener("contextmenu", (e) => e.preventDefault());
  overlay.addEventListener("mousedown", (e) => {
    if (!S.imageId) return;
    clearTimeout(S.hoverTimer);
    const [x, y] = imagePoint(e);
    if (e.button === 2) { change(() => S.points.push({ x, y, label: 0 })); return; }
    if (e.button === 0) S.drag = { x, y, shift: e.shiftKey, moved: false, box: null };
  });
  overlay.addEventListener("mousemove", (e) => {
    const [x, y] = imagePoint(e);
    if (S.drag) {
      if (Math.abs(x - S.drag.x) + Math.abs(y - S.drag.y) > 4 / S.scale) S.drag.moved = true;
      S.drag.box = [Math.min(x, S.drag.x), Math.min(y, S.drag.y), Math.max(x, S.drag.x), Math.max(y, S.drag.y)];
      if (S.drag.moved) draw();
    } else if (S.everything) {
      const k = S.everything.labels[(y | 0) * S.w + (x | 0)];
      if (k !== S.hovered) { S.hovered = k; draw(); }
    } else scheduleHover(x, y);
  });
  overlay.addEventListener("mouseleave", endHover);
  $("hover").addEventListener("change", endHover);
  window.addEventListener("mouseup", (e) => {
    const drag = S.drag;
    S.drag = null;
    if (!drag) return;
    if (drag.moved) { change(() => { S.box = drag.box; }); return; }
    const [x, y] = imagePoint(e);
    if (S.everything) {
      const k = S.everything.labels[(y | 0) * S.w + (x | 0)];
      if (k >= 0) {
        const r = S.everything.records[k];
        S.masks = [{ rle: r.segmentation, bits: r.bits, score: r.predicted_iou, area: r.area }];
        S.chosen = 0; S.everything = null; draw(); renderCandidates();
      }
      return;
    }
    change(() => S.points.push({ x, y, label: drag.shift ? 0 : 1 }));
  });
  $("file").addEventListener("change", (e) => e.target.files[0] && openFile(e.target.files[0]));
  $("model").addEventListener("change", (e) => selectModel(e.target.value));
  $("undo").onclick = () => restore(S.undo, S.redo);
  $("redo").onclick = () => restore(S.redo, S.undo);
  $("clear").onclick = () => change(() => { S.points = []; S.box = null; });
  $("everything").onclick = everything;
  $("keep").onclick = keep;
  $("download-mask").onclick = downloadMask;
  $("download-coco").onclick = downloadCoco;
  $("prev").onclick = () => openIndex(S.index - 1);
  $("next").onclick = () => openIndex(S.index + 1);
  $("folder-list").addEventListener("change", (e) => openIndex(Number(e.target.value)));
  document.addEventListener("keydown", (e) => {
    if (e.target.tagName === "INPUT" || e.target.tagName === "SELECT") {
      if (e.key === "Enter" && e.target.id === "label") keep();
      return;
    }
    const keys = {
      z: () => restore(S.undo, S.redo), y: () => restore(S.redo, S.undo), Escape: () => $("clear").click(),
      e: everything, k: keep, Enter: keep, n: () => openIndex(S.index + 1), p: () => openIndex(S.index - 1),
      ArrowRight: () => openIndex(S.index + 1), ArrowLeft: () => openIndex(S.index - 1),
    };
    if (keys[e.key]) { e.preventDefault(); keys[e.key](); } else if (/^[1-9]$/.test(e.key) && S.masks[e.key - 1]) {
      choose(e.key - 1);
    }
  });
  const stage = $("stage");
  stage.addEventListener("dragover", (e) => { e.preventDefault(); stage.classList.add("dragging"); });
  stage.addEventListener("dragleave", () => stage.classList.remove("dragging"));
  stage.addEventListener("drop", (e) => {
    e.preventDefault(); stage.classList.remove("dragging");
    const file = e.dataTransfer.files[0];
    if (!file) return;
    if (/\.(pt|pth|pth\.tar|zip|bin|safetensors)$/i.test(file.name)) uploadCheckpoint(file); else openFile(file);
  });
}

async function main() {
  bindEvents();
  try {
    await loadModels();
    const health = await api("/api/health");
    if (health.last_encode_ms) S.encodeMs = health.last_encode_ms;
    status(health.model ? `model ${health.model}` : (health.model_error || "no model loaded"));
    await loadFolder();
  } catch (e) { status(e.message); }
  document.body.dataset.ready = "1";
}
main();
