// pagemill's web page: an API key, uploads, live progress, and each result page's image
// with its region boxes beside its markdown. Talks only to the /v1 API, with the key as an
// Authorization header. Text from documents only ever becomes text nodes.

import { render } from "./markdown.js";

const KEY = "pagemill.key";
const JOBS = "pagemill.jobs";
const POLL_MS = 1000;
const ENDED = new Set(["succeeded", "partial", "failed", "cancelled"]);
const ID = /^[0-9a-f]{32}$/;
const FIGURE = /^images\/(page-[0-9]{5,}-region-[0-9]{4,}\.png)$/;
const SVG = "http://www.w3.org/2000/svg";

const $ = (id) => document.getElementById(id);
const jobs = new Map(); // id -> last JobOut seen
let pollTimer = null;
let objectUrls = [];
let shownJob = null;

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

// -- the API ---------------------------------------------------------------------------

function detail(status, body) {
  if (body && typeof body.detail === "string") return body.detail;
  if (body && Array.isArray(body.detail)) {
    return body.detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }
  return `HTTP ${status}`;
}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(KEY);
  const headers = new Headers(options.headers || {});
  if (key) headers.set("Authorization", `Bearer ${key}`);
  let response;
  try {
    response = await fetch(path, { ...options, headers, cache: "no-store" });
  } catch (error) {
    throw new ApiError(0, `the API is unreachable (${error.message})`);
  }
  if (response.status === 401) {
    signOut("The API key was not accepted (401): it is unknown or revoked.");
    throw new ApiError(401, "not signed in");
  }
  if (!response.ok) {
    let body = null;
    try {
      body = await response.json();
    } catch {
      // not JSON
    }
    throw new ApiError(response.status, detail(response.status, body));
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();

async function blobUrl(path) {
  const url = URL.createObjectURL(await (await api(path)).blob());
  objectUrls.push(url);
  return url;
}

// -- signing in ------------------------------------------------------------------------

function showError(id, message) {
  const node = $(id);
  node.textContent = message || "";
  node.hidden = !message;
}

async function signIn(key) {
  sessionStorage.setItem(KEY, key);
  try {
    const me = await getJson("/v1/me");
    $("who").textContent = `tenant ${me.tenant}`;
  } catch (error) {
    if (error.status !== 401) {
      showError("sign-in-error", `Could not check the key: ${error.message}`);
      sessionStorage.removeItem(KEY);
    }
    return;
  }
  showError("sign-in-error", "");
  $("sign-in").hidden = true;
  $("workspace").hidden = false;
  $("who").hidden = false;
  $("sign-out").hidden = false;
  for (const id of JSON.parse(sessionStorage.getItem(JOBS) || "[]")) {
    if (ID.test(id) && !jobs.has(id)) jobs.set(id, null);
  }
  renderJobs();
  poll();
}

function signOut(message) {
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(JOBS);
  jobs.clear();
  clearTimeout(pollTimer);
  closeResult();
  $("jobs").replaceChildren();
  $("workspace").hidden = true;
  $("who").hidden = true;
  $("sign-out").hidden = true;
  $("sign-in").hidden = false;
  $("api-key").value = "";
  showError("sign-in-error", message);
}

// -- submitting ------------------------------------------------------------------------

async function upload(files) {
  if (!files.length) return;
  showError("upload-error", "");
  const form = new FormData();
  for (const file of files) form.append("files", file, file.name);
  const mode = $("mode").value;
  if (mode) form.append("mode", mode);
  const names = files.length === 1 ? files[0].name : `${files.length} files`;
  $("upload-status").textContent = `Uploading ${names}…`;
  try {
    const submitted = await (await api("/v1/jobs", { method: "POST", body: form })).json();
    for (const job of submitted.jobs) jobs.set(job.id, job);
    $("upload-status").textContent = `Submitted ${names}.`;
    remember();
    renderJobs();
    poll();
  } catch (error) {
    $("upload-status").textContent = "";
    if (error.status !== 401) showError("upload-error", `Upload failed: ${error.message}`);
  }
}

function remember() {
  sessionStorage.setItem(JOBS, JSON.stringify([...jobs.keys()]));
}

// -- progress --------------------------------------------------------------------------

// Polls every unfinished job about once a second, until none is left: one request per
// batch (however many jobs it has), one per job submitted alone.
let polling = false;
let pollAgain = false;

async function poll() {
  if (polling) {
    pollAgain = true; // a round is under way; run another right after it
    return;
  }
  polling = true;
  clearTimeout(pollTimer);
  try {
    await pollOnce();
  } catch (error) {
    if (error.status === 401) return; // signed out
  } finally {
    polling = false;
  }
  renderJobs();
  if (shownJob && jobs.get(shownJob)) showState(jobs.get(shownJob).state);
  if (pollAgain) {
    pollAgain = false;
    poll();
  } else if ([...jobs.values()].some((job) => !job || !ENDED.has(job.state))) {
    pollTimer = setTimeout(poll, POLL_MS);
  }
}

async function pollOnce() {
  const open = [...jobs.entries()].filter(([, job]) => !job || !ENDED.has(job.state));
  const batches = new Set(open.map(([, job]) => job?.batch_id).filter(Boolean));
  for (const batchId of batches) {
    const batch = await tolerant(`/v1/batches/${batchId}`);
    for (const job of batch?.jobs || []) if (jobs.has(job.id)) jobs.set(job.id, job);
  }
  for (const [id, job] of open) {
    if (job?.batch_id) continue;
    try {
      jobs.set(id, await getJson(`/v1/jobs/${id}?pages=false`));
    } catch (error) {
      if (error.status !== 404) throw error;
      jobs.delete(id);
      remember();
      showError("upload-error", `No job ${id} for this key.`);
    }
  }
}

// A poll that fails for a passing reason (503, a network blip) is tried again next round.
async function tolerant(path) {
  try {
    return await getJson(path);
  } catch (error) {
    if (error.status === 401) throw error;
    return null;
  }
}

function pagesText(job) {
  const p = job.progress;
  if (p.pages_total === null) return ENDED.has(job.state) ? "" : "counting pages…";
  const failed = p.pages_failed ? `, ${p.pages_failed} failed` : "";
  return `${p.pages_done} / ${p.pages_total} pages${failed}`;
}

function renderJobs() {
  const list = $("jobs");
  $("no-jobs").hidden = jobs.size > 0;
  const template = $("job-template");
  for (const [id, job] of jobs) {
    let item = list.querySelector(`li[data-id="${id}"]`);
    if (!item) {
      item = template.content.firstElementChild.cloneNode(true);
      item.dataset.id = id;
      item.querySelector(".view").addEventListener("click", () => showResult(id));
      list.prepend(item);
    }
    if (!job) {
      item.querySelector(".job-name").textContent = id;
      continue;
    }
    item.dataset.state = job.state;
    item.querySelector(".job-name").textContent = job.filename;
    const state = item.querySelector(".state");
    state.textContent = job.state;
    state.dataset.state = job.state;
    item.querySelector(".job-pages").textContent = pagesText(job);
    const bar = item.querySelector("progress");
    bar.value = job.progress.percent;
    bar.title = `${job.progress.percent}%`;
    const error = item.querySelector(".job-error");
    error.textContent = job.error || "";
    error.hidden = !job.error;
    item.querySelector(".view").hidden = !job.result;
  }
}

// -- results ---------------------------------------------------------------------------

function showState(state) {
  $("result-state").textContent = state;
  $("result-state").dataset.state = state;
}

function closeResult() {
  shownJob = null;
  $("result").hidden = true;
  $("pages").replaceChildren();
  for (const url of objectUrls) URL.revokeObjectURL(url);
  objectUrls = [];
}

async function showResult(id) {
  closeResult();
  shownJob = id;
  const job = jobs.get(id);
  $("result").hidden = false;
  $("result-title").textContent = job ? job.filename : id;
  showState(job ? job.state : "");
  showError("result-error", job && job.error ? job.error : "");
  let document_;
  try {
    document_ = await getJson(`/v1/jobs/${id}/result?format=json`);
  } catch (error) {
    if (error.status !== 401) showError("result-error", `No result: ${error.message}`);
    return;
  }
  if (shownJob !== id) return;
  const loader = new IntersectionObserver(loadVisible, { rootMargin: "800px" });
  for (const page of document_.pages) {
    const article = pageView(id, page);
    $("pages").append(article);
    const figure = article.querySelector(".page-image");
    if (page.width) {
      loader.observe(figure);
    } else {
      // Never laid out (it failed first): no boxes, and no image to ask for.
      figure.classList.add("no-image");
      figure.querySelector(".image-missing").textContent = "the page was not laid out";
    }
  }
  $("result").scrollIntoView({ behavior: "smooth", block: "start" });
}

// Page images load as their page comes near the screen, so a long document costs only
// what is looked at.
function loadVisible(entries, observer) {
  for (const entry of entries) {
    if (!entry.isIntersecting) continue;
    observer.unobserve(entry.target);
    const figure = entry.target;
    blobUrl(figure.dataset.src)
      .then((url) => {
        figure.querySelector("img").src = url;
      })
      .catch((error) => {
        figure.classList.add("no-image");
        figure.querySelector(".image-missing").textContent =
          error.status === 404 ? "no page image kept" : `page image: ${error.message}`;
      });
  }
}

function pageView(jobId, page) {
  const article = document.createElement("article");
  article.className = "page";
  article.dataset.page = page.page;
  article.dataset.state = page.state;
  const title = document.createElement("h3");
  title.textContent = `Page ${page.page}`;
  const state = document.createElement("span");
  state.className = "state";
  state.dataset.state = page.state;
  state.textContent = page.state;
  title.append(" ", state);
  article.append(title);
  if (page.error) {
    const error = document.createElement("p");
    error.className = "error page-error";
    error.textContent = `This page failed: ${page.error}`;
    article.append(error);
  }
  const body = document.createElement("div");
  body.className = "page-body";
  body.append(pageImage(jobId, page), pageMarkdown(jobId, page));
  article.append(body);
  return article;
}

function pageImage(jobId, page) {
  const figure = document.createElement("figure");
  figure.className = "page-image";
  figure.dataset.src = `/v1/jobs/${jobId}/pages/${page.page}/image`;
  const width = page.width || 1000;
  const height = page.height || 1414;
  // The box's shape before the image arrives (or if it never does).
  figure.style.aspectRatio = `${width} / ${height}`;
  const img = document.createElement("img");
  img.alt = `page ${page.page}`;
  const missing = document.createElement("span");
  missing.className = "image-missing";
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("preserveAspectRatio", "none");
  const font = Math.max(12, Math.round(width / 48));
  for (const region of page.regions || []) svg.append(regionBox(region, font));
  figure.append(img, svg, missing);
  return figure;
}

function regionBox(region, font) {
  const [x0, y0, x1, y1] = region.bbox;
  const group = document.createElementNS(SVG, "g");
  const title = region.label.endsWith("title") ? " is-title" : "";
  group.setAttribute("class", `region task-${region.task} state-${region.state}${title}`);
  group.dataset.index = region.index;
  group.dataset.label = region.label;
  const box = document.createElementNS(SVG, "rect");
  box.setAttribute("class", "box");
  box.setAttribute("x", x0);
  box.setAttribute("y", y0);
  box.setAttribute("width", Math.max(1, x1 - x0));
  box.setAttribute("height", Math.max(1, y1 - y0));
  const name = `${region.index + 1} ${region.label}`;
  const tag = document.createElementNS(SVG, "rect");
  tag.setAttribute("class", "tag");
  tag.setAttribute("x", x0);
  tag.setAttribute("y", Math.max(0, y0 - font * 1.3));
  tag.setAttribute("width", font * (0.62 * name.length + 0.6));
  tag.setAttribute("height", font * 1.3);
  const label = document.createElementNS(SVG, "text");
  label.setAttribute("class", "label");
  label.setAttribute("x", x0 + font * 0.3);
  label.setAttribute("y", Math.max(0, y0 - font * 1.3) + font);
  label.setAttribute("font-size", font);
  label.textContent = name;
  const tip = document.createElementNS(SVG, "title");
  const text = (region.content || region.error || "").slice(0, 300);
  tip.textContent = `${name} (${region.task}, ${region.source || "—"})${text ? `\n${text}` : ""}`;
  group.append(tip, box, tag, label);
  return group;
}

function pageMarkdown(jobId, page) {
  const section = document.createElement("div");
  section.className = "markdown";
  // Results assembled before pages carried their own markdown: the regions' text in order.
  const markdown =
    typeof page.markdown === "string"
      ? page.markdown
      : (page.regions || [])
          .filter((r) => r.task !== "abandon" && r.content)
          .map((r) => r.content)
          .join("\n\n");
  if (!markdown.trim()) {
    section.append(Object.assign(document.createElement("p"), {
      className: "muted",
      textContent: page.state === "failed" ? "Nothing was read on this page." : "No text on this page.",
    }));
    return section;
  }
  section.append(render(markdown, (alt, href) => figureImage(jobId, alt, href)));
  return section;
}

function figureImage(jobId, alt, href) {
  const img = document.createElement("img");
  img.className = "figure";
  img.alt = alt;
  const name = FIGURE.exec(href);
  if (name) {
    blobUrl(`/v1/jobs/${jobId}/images/${name[1]}`)
      .then((url) => {
        img.src = url;
      })
      .catch(() => {
        img.alt = `${alt} (not available)`;
      });
  }
  return img;
}

async function download(format) {
  if (!shownJob) return;
  try {
    const url = await blobUrl(`/v1/jobs/${shownJob}/result?format=${format}`);
    const link = document.createElement("a");
    const base = (jobs.get(shownJob)?.filename || shownJob).replace(/\.[^.]*$/, "");
    link.href = url;
    link.download = `${base}.${format}`;
    link.click();
  } catch (error) {
    if (error.status !== 401) showError("result-error", `Download failed: ${error.message}`);
  }
}

// -- wiring ----------------------------------------------------------------------------

function wire() {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const key = $("api-key").value.trim();
    if (key) signIn(key);
  });
  $("sign-out").addEventListener("click", () => signOut(""));
  $("open-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("open-id").value.trim().toLowerCase();
    if (!ID.test(id)) {
      showError("upload-error", "A job id is 32 hex characters.");
      return;
    }
    showError("upload-error", "");
    if (!jobs.has(id)) jobs.set(id, null);
    remember();
    renderJobs();
    poll();
  });
  $("file-input").addEventListener("change", (event) => {
    upload([...event.target.files]);
    event.target.value = "";
  });
  const zone = $("drop-zone");
  for (const name of ["dragenter", "dragover"]) {
    zone.addEventListener(name, (event) => {
      event.preventDefault();
      zone.classList.add("over");
    });
  }
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("over");
    upload([...(event.dataTransfer?.files || [])]);
  });
  // A file dropped beside the zone must not make the browser leave the page.
  for (const name of ["dragover", "drop"]) {
    window.addEventListener(name, (event) => event.preventDefault());
  }
  $("close-result").addEventListener("click", closeResult);
  $("download-md").addEventListener("click", () => download("md"));
  $("download-json").addEventListener("click", () => download("json"));

  const key = sessionStorage.getItem(KEY);
  if (key) signIn(key);
}

wire();
