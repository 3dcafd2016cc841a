// The page: upload a photo, show the model's answer and similar photos, take "wrong? it is ..."
// feedback on it; list the registry and the data's likely label errors.
"use strict";
const $ = (id) => document.getElementById(id);
const pct = (p) => (100 * p).toFixed(1) + "%";
const fmt = (v) => (typeof v === "number" ? (Math.abs(v) < 10 ? v.toFixed(3) : v.toFixed(1)) : (v ?? ""));

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  Object.assign(node, props);
  for (const child of children) node.append(child);
  return node;
}

function describe(m) {
  const acc = typeof m.test_accuracy === "number" ? `, test accuracy ${fmt(m.test_accuracy)}` : "";
  return `${m.name} v${m.version} @${m.alias} · ${m.strategy ?? "?"} · ${m.backbone ?? "?"}${acc}`;
}

async function loadModel() {
  try {
    const r = await fetch("/api/model");
    const body = await r.json();
    $("model-line").textContent = r.ok ? describe(body) : "no model: " + body.error;
  } catch (e) {
    $("model-line").textContent = "server unreachable";
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
  $("result").hidden = true;
  $("similar-block").hidden = true;
}

function showAnswer(body, file) {
  $("error").hidden = true;
  $("preview").src = URL.createObjectURL(file);
  $("breed").textContent = body.label.replaceAll("_", " ");
  $("species").textContent = `${body.species}, p = ${body.probability.toFixed(3)}`;
  $("top5").replaceChildren(...body.top5.map((t) => el("li", {},
    el("span", { className: "label", textContent: t.label.replaceAll("_", " ") }),
    el("span", { className: "bar", style: `width: ${Math.max(1, 100 * t.probability)}%` }),
    el("span", { className: "p", textContent: pct(t.probability) }))));
  $("neighbours").replaceChildren(...body.neighbours.map((n) => el("li", { className: "neighbour" },
    el("img", { src: n.thumb, alt: n.breed, title: n.file }),
    el("div", { className: "nb-breed", textContent: n.breed.replaceAll("_", " ") }),
    el("div", { className: "muted", textContent: "distance " + n.distance.toFixed(3) }))));
  $("result").hidden = false;
  $("similar-block").hidden = body.neighbours.length === 0;
  $("model-line").textContent = "answered by " + describe(body.model);
  showFeedback(body);
}

// "wrong? it is ...": only for a recorded answer (it has a prediction_id to name)
let classes = null;
async function showFeedback(body) {
  const form = $("feedback");
  form.dataset.predictionId = body.prediction_id || "";
  $("feedback-status").textContent = "";
  form.hidden = !body.prediction_id;
  if (!body.prediction_id) return;
  if (classes === null) {
    const r = await fetch("/api/classes");
    classes = r.ok ? (await r.json()).classes : [];
  }
  $("feedback-label").replaceChildren(...classes.filter((c) => c !== body.label)
    .map((c) => el("option", { value: c, textContent: c.replaceAll("_", " ") })));
}

async function sendFeedback(e) {
  e.preventDefault();
  const label = $("feedback-label").value;
  const r = await fetch("/api/feedback", { method: "POST", headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ prediction_id: $("feedback").dataset.predictionId, label }) });
  let body;
  try { body = await r.json(); } catch (err) { body = { error: `server answered HTTP ${r.status}` }; }
  $("feedback-status").textContent = r.ok ? `Thanks: recorded as ${label.replaceAll("_", " ")}` : body.error;
}

async function upload(file) {
  $("status").textContent = `Looking at ${file.name}…`;
  $("error").hidden = true;
  try {
    const r = await fetch("/api/predict", { method: "POST", body: file,
      headers: { "Content-Type": "application/octet-stream" } });
    let body;
    try { body = await r.json(); } catch (e) { body = { error: `server answered HTTP ${r.status}` }; }
    $("status").textContent = "";
    if (!r.ok || body.error) showError(`${file.name}: ${body.error}`);
    else showAnswer(body, file);
  } catch (e) {
    $("status").textContent = "";
    showError(`${file.name}: the server did not answer (${e})`);
  }
}

function table(node, columns, rows, cell) {
  node.tHead.replaceChildren(el("tr", {}, ...columns.map((c) => el("th", { textContent: c }))));
  node.tBodies[0].replaceChildren(...rows.map((row) => el("tr", {}, ...columns.map((c) => cell(row, c)))));
}

function plainCell(row, c) {
  const v = row[c];
  return el("td", { className: typeof v === "number" ? "num" : "", textContent: fmt(v) });
}

async function loadRegistry() {
  const r = await fetch("/api/registry");
  const body = await r.json();
  $("registry-name").textContent = body.name;
  for (const old of document.querySelectorAll(".registry-note")) old.remove();
  // a version whose registration did not finish (the register stage was killed), in words
  for (const note of body.notes || []) $("versions").before(el("p", { className: "registry-note", textContent: note }));
  const vcols = body.version_columns;  // the server's, from the metrics registry
  table($("versions"), vcols, body.versions, (row, c) => c === "aliases"
    ? el("td", {}, ...row.aliases.map((a) => el("span", { className: "alias " + a, textContent: "@" + a })))
    : plainCell(row, c));
  const cmp = body.comparison;
  $("comparison-source").textContent = cmp.source ? `from ${cmp.source}` : "no comparison yet: run the pipeline";
  const ccols = [...new Set(cmp.rows.flatMap((row) => Object.keys(row)))]
    .filter((c) => cmp.rows.some((row) => typeof row[c] !== "object"));
  if (ccols.includes("strategy")) ccols.splice(ccols.indexOf("strategy"), 1), ccols.unshift("strategy");
  table($("comparison"), ccols, cmp.rows, plainCell);
  const metric = ["test_accuracy", "accuracy", "val_accuracy"].find((m) => ccols.includes(m));
  $("comparison-plot").replaceChildren(...(metric ? [el("h3", { textContent: metric.replaceAll("_", " ") })] : []),
    ...(metric ? cmp.rows : []).map((row) => el("div", { className: "row" },
      el("span", { textContent: row.strategy ?? "" }),
      el("span", { className: "bar", style: `width: ${Math.max(1, 100 * (row[metric] || 0))}%` }),
      el("span", { className: "p", textContent: fmt(row[metric]) }))));
}

async function loadLabelIssues() {
  const r = await fetch("/api/data_issues");
  const body = await r.json();
  const cells = r.ok ? body.label_issues : [];
  $("label-issues-note").textContent = !r.ok ? body.error : cells.length
    ? "most doubtful first: the photo, its given label and the label the data suggests"
    : "none found (or the data_issues stage has not run)";
  $("label-issues").replaceChildren(...cells.map((c) => el("li", { className: "label-issue" },
    el("img", { src: c.thumb, alt: c.given_name, title: c.image_id }),
    el("div", { className: "given", textContent: "given: " + c.given_name.replaceAll("_", " ") }),
    el("div", { className: "suggested", textContent: "suggested: " + c.suggested_name.replaceAll("_", " ") }))));
}

function show(view) {
  for (const tab of document.querySelectorAll(".tab")) tab.classList.toggle("active", tab.dataset.view === view);
  $("view-predict").hidden = view !== "predict";
  $("view-models").hidden = view !== "models";
  if (view === "models") { loadRegistry(); loadLabelIssues(); }
}

for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => show(tab.dataset.view));
$("feedback").addEventListener("submit", sendFeedback);
$("file").addEventListener("change", (e) => { if (e.target.files.length) upload(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault();
  drop.classList.remove("over");
  if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]);
});
loadModel();
