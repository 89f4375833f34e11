// The irtdb page: search by an uploaded or dropped image (or by a result), duplicates, info.
// Plain DOM code, no libraries; everything comes from this server's API.
"use strict";

const $ = (id) => document.getElementById(id);
const views = { search: $("view-search"), dups: $("view-dups"), info: $("view-info") };
let queryUrl = null;

function show(name) {
  for (const [n, el] of Object.entries(views)) {
    el.hidden = n !== name;
    $("tab-" + n).setAttribute("aria-pressed", String(n === name));
  }
  if (name === "info") loadInfo();
  if (name === "dups" && !$("groups").hasChildNodes()) loadDups();
}

async function api(url, options) {
  const r = await fetch(url, options);
  const body = await r.json().catch(() => ({ error: r.statusText }));
  if (!r.ok) throw new Error(body.error || ("HTTP " + r.status));
  return body;
}

function setStatus(el, text, isError) {
  el.textContent = text;
  el.classList.toggle("error", Boolean(isError));
}

function params() {
  const k = Math.min(1000, Math.max(1, parseInt($("k").value, 10) || 24));
  return "k=" + k + ($("exact").checked ? "&exact=1" : "");
}

function tile(hit, caption) {
  const li = document.createElement("li");
  li.className = "hit";
  li.dataset.id = hit.id;
  const b = document.createElement("button");
  b.type = "button";
  b.title = "search by " + hit.path;
  const img = document.createElement("img");
  img.loading = "lazy";
  img.alt = hit.path;
  img.src = "/api/images/" + hit.id + "/thumbnail";
  const score = document.createElement("div");
  score.className = "score";
  score.textContent = caption;
  const path = document.createElement("div");
  path.className = "path";
  path.textContent = hit.path;
  b.append(img, score, path);
  b.addEventListener("click", () => { show("search"); searchById(hit.id, hit.path); });
  li.append(b);
  return li;
}

function render(answer) {
  const ol = $("results");
  ol.replaceChildren(...answer.hits.map((h) => tile(h, "#" + h.rank + "  " + h.score.toFixed(4))));
  const ms = answer.timings ? Object.values(answer.timings).reduce((a, b) => a + b, 0) : 0;
  setStatus($("status"), answer.hits.length + " results (" + answer.method + ", " + ms.toFixed(0) + " ms)");
  const first = ol.querySelector("button");
  if (first) first.focus({ preventScroll: true });
}

function showQuery(src, label) {
  if (queryUrl) URL.revokeObjectURL(queryUrl);
  queryUrl = src.startsWith("blob:") ? src : null;
  $("query-img").src = src;
  $("query-label").textContent = label;
  $("query").hidden = false;
}

async function searchFile(file) {
  if (!file) return;
  showQuery(URL.createObjectURL(file), file.name);
  setStatus($("status"), "searching…");
  try {
    const type = file.type && file.type.startsWith("image/") ? file.type : "application/octet-stream";
    render(await api("/api/query?" + params(), { method: "POST", headers: { "Content-Type": type }, body: file }));
  } catch (e) {
    $("results").replaceChildren();
    setStatus($("status"), e.message, true);
  }
}

async function searchById(id, path) {
  showQuery("/api/images/" + id + "/thumbnail", path);
  setStatus($("status"), "searching…");
  try {
    render(await api("/api/query?id=" + id + "&" + params()));
  } catch (e) {
    setStatus($("status"), e.message, true);
  }
}

async function loadDups() {
  const t = $("threshold").value;
  setStatus($("dups-status"), "grouping…");
  try {
    const r = await api("/api/duplicates" + (t ? "?threshold=" + encodeURIComponent(t) : ""));
    if (!t) $("threshold").value = r.threshold;
    const groups = r.groups.map((g, i) => {
      const div = document.createElement("div");
      div.className = "group";
      const h = document.createElement("h2");
      h.textContent = "Group " + (i + 1) + ": " + g.images.length + " images";
      const ol = document.createElement("ol");
      ol.className = "grid";
      ol.append(...g.images.map((m) => tile(m, m.score.toFixed(4))));
      div.append(h, ol);
      return div;
    });
    $("groups").replaceChildren(...groups);
    setStatus($("dups-status"), r.groups.length + " groups, " + r.grouped + " of " + r.images + " images (cosine ≥ " + r.threshold + ", " + r.method + ")");
  } catch (e) {
    setStatus($("dups-status"), e.message, true);
  }
}

async function loadInfo() {
  try {
    const i = await api("/api/info");
    const rows = [
      ["database", i.db], ["root", i.root], ["images", i.images], ["embedded", i.embedded],
      ["failed", i.failed], ["model", i.serving.model],
      ["random weights", i.serving.random_weights ? "yes: similarity is colour and layout" : "no"],
      ["PCA", i.pca ? i.pca.in_dim + " → " + i.pca.out_dim : "none"],
      ["index generation", i.serving.generation + " (" + i.serving.count + " vectors)"],
    ];
    $("info").replaceChildren(...rows.flatMap(([k, v]) => {
      const dt = document.createElement("dt"); dt.textContent = k;
      const dd = document.createElement("dd"); dd.textContent = String(v);
      return [dt, dd];
    }));
  } catch (e) {
    $("info").textContent = e.message;
  }
}

$("tab-search").addEventListener("click", () => show("search"));
$("tab-dups").addEventListener("click", () => show("dups"));
$("tab-info").addEventListener("click", () => show("info"));
$("file").addEventListener("change", (e) => searchFile(e.target.files[0]));
$("search-form").addEventListener("submit", (e) => { e.preventDefault(); searchFile($("file").files[0]); });
$("dups-form").addEventListener("submit", (e) => { e.preventDefault(); loadDups(); });
const drop = $("drop");
for (const ev of ["dragenter", "dragover"]) {
  drop.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
}
for (const ev of ["dragleave", "drop"]) {
  drop.addEventListener(ev, () => drop.classList.remove("over"));
}
drop.addEventListener("drop", (e) => { e.preventDefault(); searchFile(e.dataTransfer.files[0]); });
// Paste an image from the clipboard.
document.addEventListener("paste", (e) => {
  const f = [...(e.clipboardData ? e.clipboardData.files : [])][0];
  if (f) searchFile(f);
});
