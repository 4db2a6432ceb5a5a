// The admin page: upload or server-path ingest jobs with live progress and per-file errors, and the document
// list with status, access and delete. Everything from the server is put on the page as text.
"use strict";

const KEY = "rag-api-key";
const $ = (id) => document.getElementById(id);
const key = () => sessionStorage.getItem(KEY);
let csrf = null;  // set when signed in by single sign-on: the session cookie goes along, this header with it
const auth = () => (csrf !== null ? { "X-CSRF-Token": csrf } : { "Authorization": "Bearer " + key() });

function show(signedIn) {
  $("sign-in").hidden = signedIn;
  $("admin").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  if (signedIn) { refresh(); }
}

function problemText(body, status) {
  return (body && (body.detail || (body.error && body.error.message))) || ("request failed with status " + status);
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...auth(), ...(options.headers || {}) } });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new Error(problemText(body, response.status));
  return body;
}

async function signIn(event) {
  event.preventDefault();
  const candidate = $("api-key").value.trim();
  const response = await fetch("/v1/admin/documents", { headers: { "Authorization": "Bearer " + candidate } });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    $("sign-in-error").textContent = "Sign-in refused: " + problemText(body, response.status);
    $("sign-in-error").hidden = false;
    return;
  }
  sessionStorage.setItem(KEY, candidate);
  $("api-key").value = "";
  $("sign-in-error").hidden = true;
  show(true);
}

function failure(error) {
  $("admin-error").textContent = error.message;
  $("admin-error").hidden = false;
}

async function upload(event) {
  event.preventDefault();
  $("admin-error").hidden = true;
  const form = new FormData();
  for (const file of $("files").files) form.append("files", file);
  const acl = $("upload-acl").value.trim();
  if (acl) form.append("acl", acl);
  try {
    await call("/v1/admin/ingest/uploads", { method: "POST", body: form });
    $("upload-form").reset();
    refresh();
  } catch (error) { failure(error); }
}

async function ingestPaths(event) {
  event.preventDefault();
  $("admin-error").hidden = true;
  const paths = $("paths").value.split("\n").map((p) => p.trim()).filter(Boolean);
  try {
    await call("/v1/admin/ingest/jobs", {
      method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ paths }),
    });
    $("path-form").reset();
    refresh();
  } catch (error) { failure(error); }
}

function jobLine(job) {
  const item = document.createElement("li");
  item.className = "job " + job.state;
  const total = job.total_files === null ? "?" : job.total_files;
  const head = document.createElement("div");
  head.textContent = job.kind + " job " + job.id.slice(0, 8) + ": " + job.state + ", " + job.files_done + " of " +
    total + " files, " + job.chunks_embedded + " chunks" + (job.summary ? " (" + job.summary + ")" : "");
  item.append(head);
  if (job.error) {
    const error = document.createElement("div");
    error.className = "failed-file";
    error.textContent = job.error;
    item.append(error);
  }
  for (const file of job.files || []) {
    if (file.status !== "failed") continue;
    const line = document.createElement("div");
    line.className = "failed-file";
    line.textContent = file.path.split("/").pop() + ": " + file.error;
    item.append(line);
  }
  return item;
}

let polling = null;

async function refresh() {
  try {
    const listed = await call("/v1/admin/ingest/jobs");
    const jobs = await Promise.all(listed.jobs.slice(0, 10).map((j) => call("/v1/admin/ingest/jobs/" + j.id)));
    $("jobs").replaceChildren(...jobs.map(jobLine));
    const busy = jobs.some((j) => j.state === "queued" || j.state === "running");
    clearTimeout(polling);
    polling = busy ? setTimeout(refresh, 1000) : null;
    const docs = await call("/v1/admin/documents");
    $("documents").tBodies[0].replaceChildren(...docs.documents.map(documentRow));
  } catch (error) { failure(error); }
  loadFeedback();
}

async function loadFeedback() {
  const rating = $("feedback-rating").value;
  try {
    const listed = await call("/v1/admin/feedback?limit=200" + (rating ? "&rating=" + rating : ""));
    $("feedback").tBodies[0].replaceChildren(...listed.data.map((f) => {
      const row = document.createElement("tr");
      const shown = f.rating === "up" ? "Helpful" : "Not helpful";
      row.append(cell(f.created), cell(f.user), cell(shown), cell(f.question), cell(f.answer), cell(f.comment || ""));
      return row;
    }));
    $("feedback-error").hidden = true;
  } catch (error) {
    $("feedback-error").textContent = "Feedback: " + error.message;
    $("feedback-error").hidden = false;
  }
}

function cell(text) {
  const td = document.createElement("td");
  td.textContent = text;
  return td;
}

function documentRow(doc) {
  const row = document.createElement("tr");
  row.append(cell(doc.title || doc.path), cell(doc.status), cell(doc.acl.join(", ")), cell(String(doc.chunk_count)));
  const actions = document.createElement("td");
  const remove = document.createElement("button");
  remove.type = "button";
  remove.textContent = "Delete";
  remove.setAttribute("aria-label", "Delete " + (doc.title || doc.path));
  remove.addEventListener("click", async () => {
    if (!confirm("Delete " + (doc.title || doc.path) + " from the store?")) return;
    try { await call("/v1/admin/documents/" + encodeURIComponent(doc.doc_id), { method: "DELETE" }); refresh(); }
    catch (error) { failure(error); }
  });
  actions.append(remove);
  row.append(actions);
  return row;
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("upload-form").addEventListener("submit", upload);
  $("path-form").addEventListener("submit", ingestPaths);
  $("feedback-rating").addEventListener("change", loadFeedback);
  $("sign-out").addEventListener("click", async () => {
    if (csrf !== null) await fetch("/auth/logout", { method: "POST", headers: auth() }).catch(() => null);
    csrf = null;
    sessionStorage.removeItem(KEY);
    show(false);
  });
  start();
});

// A key kept in this tab, else a single sign-on session whose user is an admin (auth.admin_groups).
async function start() {
  const config = await fetch("/auth/config").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  $("sso").hidden = !config.sso;
  if (key() || !config.sso) return show(Boolean(key()));
  const me = await fetch("/auth/me").then((r) => (r.ok ? r.json() : null)).catch(() => null);
  if (me && me.role === "admin" && me.csrf_token) csrf = me.csrf_token;
  show(csrf !== null);
}
