// The samplecnn page: tags dropped, picked or recorded audio through /v1/predict, and starts and
// follows trainings through /v1/jobs. Everything it loads comes from this server.
"use strict";

const $ = (selector) => document.querySelector(selector);
let lastFiles = [];

function headers() {
  const token = localStorage.getItem("samplecnn-token");
  return token ? { Authorization: `Bearer ${token}` } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 401) {
    $("#token-box").hidden = false;
    throw new Error("this server needs its token (enter it above)");
  }
  if (!response.ok) {
    const body = await response.json().catch(() => ({}));
    const detail = Array.isArray(body.detail)
      ? body.detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ")
      : body.detail || response.statusText;
    throw new Error(detail);
  }
  return response;
}

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (key === "style") node.style.cssText = value; else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

async function showModel() {
  try {
    const model = await (await api("/v1/model")).json();
    const test = model.test ? ` · test accuracy ${model.test.accuracy.toFixed(3)}` : "";
    $("#model-info").textContent = `${model.path} · ${model.classes.length} classes · ` +
      `${model.spec.task}${test}`;
  } catch (error) {
    $("#model-info").textContent = error.message;
  }
}

function query() {
  const params = new URLSearchParams({ top_k: $("#top-k").value || "5" });
  if ($("#window").value) params.set("window", $("#window").value);
  if ($("#hop").value) params.set("hop", $("#hop").value);
  return params;
}

function form(files) {
  const body = new FormData();
  for (const file of files) body.append("file", file, file.name);
  return body;
}

async function tag(files) {
  if (!files.length) return;
  lastFiles = files;
  $("#embed").disabled = false;
  $("#status").textContent = `tagging ${files.length} file(s)…`;
  $("#results").replaceChildren();
  try {
    const started = performance.now();
    const answer = await (await api(`/v1/predict?${query()}`, { method: "POST", body: form(files) })).json();
    $("#status").textContent = `${answer.files.length} file(s) in ${((performance.now() - started) / 1000).toFixed(2)} s`;
    $("#results").replaceChildren(...answer.files.map(showFile));
  } catch (error) {
    $("#status").textContent = "";
    $("#results").replaceChildren(element("p", { class: "error" }, error.message));
  }
}

function bars(top) {
  return top.map(([name, probability]) => element("div", { class: "bar" },
    element("span", { class: "label" }, name),
    element("div", { class: "track" }, element("div", { class: "fill", style: `width:${(100 * probability).toFixed(1)}%` })),
    element("span", { class: "value" }, probability.toFixed(3))));
}

function timeline(rows) {
  // one column per window, one row per class that is among the top of any window
  const classes = [...new Set(rows.flatMap((row) => row.top.slice(0, 3).map(([name]) => name)))];
  const table = element("table");
  for (const name of classes) {
    const cells = rows.map((row) => {
      const p = row.scores[name];
      return element("td", { title: `${name} ${p.toFixed(3)} at ${row.start.toFixed(2)}-${row.end.toFixed(2)} s`,
        style: `background: rgba(58,110,165,${p.toFixed(3)})` });
    });
    table.append(element("tr", {}, element("th", {}, name), ...cells));
  }
  return element("div", { class: "timeline" }, element("div", {}, `timeline: ${rows.length} windows, ` +
    `${rows[0].start.toFixed(2)}-${rows[rows.length - 1].end.toFixed(2)} s`), table);
}

function showFile(file) {
  const card = element("div", { class: "file-result" }, element("h4", {}, file.path));
  if (file.error) {
    card.append(element("p", { class: "error" }, file.error));
    return card;
  }
  const rows = file.predictions;
  if (rows.length === 1) {
    card.append(element("div", {}, `${rows[0].end.toFixed(2)} s`), ...bars(rows[0].top));
  } else {
    // the whole file: the mean of its windows' probabilities
    const mean = Object.keys(rows[0].scores).map((name) =>
      [name, rows.reduce((sum, row) => sum + row.scores[name], 0) / rows.length]);
    mean.sort((a, b) => b[1] - a[1]);
    card.append(element("div", {}, "mean over the windows"), ...bars(mean.slice(0, rows[0].top.length)),
      timeline(rows));
  }
  return card;
}

async function downloadEmbeddings() {
  const params = query();
  params.delete("top_k");
  params.set("format", "npy");
  try {
    const response = await api(`/v1/embed?${params}`, { method: "POST", body: form(lastFiles) });
    const link = element("a", { href: URL.createObjectURL(await response.blob()), download: "embeddings.npy" });
    link.click();
  } catch (error) {
    $("#status").textContent = error.message;
  }
}

let recorder = null;
async function toggleRecording() {
  if (recorder) {
    recorder.stop();
    return;
  }
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ audio: true });
    const chunks = [];
    recorder = new MediaRecorder(stream);
    recorder.ondataavailable = (event) => chunks.push(event.data);
    recorder.onstop = () => {
      stream.getTracks().forEach((track) => track.stop());
      const type = recorder.mimeType || "audio/webm";
      const suffix = type.includes("ogg") ? "ogg" : type.includes("mp4") ? "m4a" : "webm";
      recorder = null;
      $("#record").classList.remove("on");
      $("#record").textContent = "● record";
      tag([new File([new Blob(chunks, { type })], `recording.${suffix}`, { type })]);
    };
    recorder.start();
    $("#record").classList.add("on");
    $("#record").textContent = "■ stop";
  } catch (error) {
    $("#status").textContent = `microphone: ${error.message}`;
  }
}

// Training

async function fillTrainingForm() {
  try {
    const options = await (await api("/v1/training-options")).json();
    const form = $("#job-form");
    form.elements.dataset.replaceChildren(...options.datasets.map((name) => element("option", {}, name)));
    form.elements.block.replaceChildren(...options.blocks.map((name) => element("option", {}, name)));
    form.elements.block.value = options.defaults.block;
    for (const input of form.querySelectorAll("input[type=number]")) input.value = options.defaults[input.name];
  } catch (error) {
    $("#job-error").textContent = error.message;
  }
}

async function startJob(event) {
  event.preventDefault();
  const body = {};
  for (const [name, value] of new FormData(event.target)) {
    if (value === "") continue;
    const input = event.target.elements[name];
    body[name] = input.type === "number" ? Number(value) : value;
  }
  $("#job-error").textContent = "";
  try {
    await api("/v1/jobs", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    refreshJobs();
  } catch (error) {
    $("#job-error").textContent = error.message;
  }
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  const s = Math.round(value);
  return `${Math.floor(s / 3600)}:${String(Math.floor(s / 60) % 60).padStart(2, "0")}:${String(s % 60).padStart(2, "0")}`;
}

function number(value, digits = 4) {
  return typeof value === "number" ? value.toFixed(digits) : "–";
}

function jobRow(job) {
  const latest = job.latest || {};
  // log.csv names the accuracy after the metric: val_categorical_accuracy, val_binary_accuracy, ...
  const valAccuracy = Object.entries(latest).find(([key]) => key.startsWith("val_") && key.endsWith("accuracy"));
  const actions = element("td");
  const action = (label, method, path) => {
    const button = element("button", { type: "button" }, label);
    button.onclick = async () => {
      try {
        await api(path, { method, headers: { "Content-Type": "application/json" },
          body: path.endsWith("load") ? JSON.stringify({ run: job.id }) : undefined });
        refreshJobs();
        showModel();
      } catch (error) {
        $("#job-error").textContent = error.message;
      }
    };
    actions.append(button, " ");
  };
  if (job.status === "queued" || job.status === "running") action("cancel", "DELETE", `/v1/jobs/${job.id}`);
  if ((job.status === "cancelled" || job.status === "failed") && job.epoch) action("resume", "POST", `/v1/jobs/${job.id}/resume`);
  if (job.status === "finished") action("serve", "POST", "/v1/models/load");
  const test = job.results ? `acc ${number(job.results.test.accuracy, 3)} F1 ${number(job.results.test.f1, 3)}` : "";
  const status = element("td", { class: `status-${job.status}` }, job.status);
  if (job.error) status.append(element("div", { class: "error" }, job.error));
  return element("tr", { "data-job": job.id },
    element("td", { title: job.run_dir || "" }, job.id),
    status,
    element("td", {}, `${job.config.dataset} / ${job.config.block || "se"}`),
    element("td", {}, job.epoch === null ? "–" : `${job.stage + (job.status === "finished" ? 0 : 1)}/${job.num_stages} · ${job.epoch}`),
    element("td", {}, `${number(latest.loss)} / ${number(latest.val_loss)}`),
    element("td", {}, number(valAccuracy && valAccuracy[1], 3)),
    element("td", {}, `${seconds(job.elapsed_seconds)} / ${job.status === "running" ? "≤ " + seconds(job.eta_seconds) : "–"}`),
    element("td", {}, test),
    actions);
}

async function refreshJobs() {
  try {
    const { jobs } = await (await api("/v1/jobs")).json();
    $("#jobs tbody").replaceChildren(...jobs.map(jobRow));
  } catch (error) {
    $("#job-error").textContent = error.message;
  }
}

// Wiring

const drop = $("#drop");
drop.addEventListener("dragover", (event) => { event.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (event) => {
  event.preventDefault();
  drop.classList.remove("over");
  tag([...event.dataTransfer.files]);
});
$("#files").addEventListener("change", (event) => tag([...event.target.files]));
$("#record").addEventListener("click", toggleRecording);
$("#embed").addEventListener("click", downloadEmbeddings);
$("#job-form").addEventListener("submit", startJob);
$("#token-save").addEventListener("click", () => {
  localStorage.setItem("samplecnn-token", $("#token").value);
  $("#token-box").hidden = true;
  showModel(); fillTrainingForm(); refreshJobs();
});

showModel();
fillTrainingForm();
refreshJobs();
setInterval(refreshJobs, 2000);
