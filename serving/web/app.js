// The chat page. Everything the model or a document says is put on the page as text (textContent), never as
// HTML: no markup, link or image from an answer is ever rendered or loaded.
"use strict";

const KEY = "rag-api-key";
const HISTORY = "rag-chat";
const $ = (id) => document.getElementById(id);

// How the page proves who it is: an API key typed in (kept in this tab's session storage), or the server-side
// session that single sign-on set (an HttpOnly cookie the page never sees; state-changing requests carry the
// session's CSRF token in a header).
let auth = null;

function savedTurns() { return JSON.parse(sessionStorage.getItem(HISTORY) || "[]"); }
function saveHistory(turns) { sessionStorage.setItem(HISTORY, JSON.stringify(turns)); }
function headers() {
  const sent = { "Content-Type": "application/json" };
  if (auth && auth.mode === "key") sent["Authorization"] = "Bearer " + auth.key;
  if (auth && auth.mode === "session") sent["X-CSRF-Token"] = auth.csrf;
  return sent;
}

function show(signedIn) {
  $("sign-in").hidden = signedIn;
  $("chat").hidden = !signedIn;
  $("sign-out").hidden = !signedIn;
  $("who").hidden = !signedIn;
  if (!signedIn) $("conversations").hidden = true;
  if (signedIn) {
    renderHistory();
    Conversations.refresh();
    $("question").focus();
  } else {
    $("api-key").focus();
  }
}

function showWho(me) {
  const groups = me.groups && me.groups.length ? " (" + me.groups.join(", ") + ")" : "";
  $("who").textContent = "Signed in as " + (me.user || me.name || "anonymous") + groups;
}

function problemText(body, status) {
  return (body && (body.detail || (body.error && body.error.message))) || ("request failed with status " + status);
}

// A JSON request as the signed-in caller; the problem's text as an Error when it fails (a 401 signs the page out).
async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (response.status === 204) return null;
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    if (response.status === 401) signedOut();
    const error = new Error(problemText(body, response.status));
    error.status = response.status;
    throw error;
  }
  return body;
}

async function signIn(event) {
  event.preventDefault();
  const candidate = $("api-key").value.trim();
  const error = $("sign-in-error");
  error.hidden = true;
  const response = await fetch("/v1/models", { headers: { "Authorization": "Bearer " + candidate } });
  if (!response.ok) {
    const body = await response.json().catch(() => null);
    error.textContent = "Sign-in refused: " + problemText(body, response.status);
    error.hidden = false;
    return;
  }
  sessionStorage.setItem(KEY, candidate);
  auth = { mode: "key", key: candidate };
  $("api-key").value = "";
  const me = await call("/auth/me").catch(() => null);
  showWho(me || {});
  show(true);
}

function signedOut() {
  auth = null;
  sessionStorage.removeItem(KEY);
  sessionStorage.removeItem(HISTORY);
  Conversations.forget();
  $("turns").replaceChildren();
  $("passage").hidden = true;
  show(false);
}

async function signOut() {
  let ended = null;
  if (auth && auth.mode === "session") {
    // The server deletes the session; the cookie it set is cleared in the same response.
    ended = await call("/auth/logout", { method: "POST" }).catch(() => null);
  }
  signedOut();
  // Signed out here; the provider may still remember the browser: offer its own sign-out page too.
  const provider = ended && ended.end_session_url;
  $("sso-sign-out").hidden = !provider;
  if (provider) $("sso-sign-out-link").href = provider;
}

// At load: a key kept in this tab, or a single sign-on session (the cookie goes with same-origin requests).
async function start() {
  const config = await fetch("/auth/config").then((r) => (r.ok ? r.json() : {})).catch(() => ({}));
  $("sso").hidden = !config.sso;
  const failed = new URLSearchParams(location.search).get("sign_in_error");
  if (failed) {
    $("sign-in-error").textContent = "Single sign-on failed: " + failed;
    $("sign-in-error").hidden = false;
    history.replaceState(null, "", "/");
  }
  const kept = sessionStorage.getItem(KEY);
  if (kept) auth = { mode: "key", key: kept };
  else if (config.sso) auth = { mode: "session", csrf: "" };
  if (!auth) return show(false);
  const response = await fetch("/auth/me", { headers: headers() }).catch(() => null);
  const me = response && response.ok ? await response.json() : null;
  if (!me && auth.mode === "session") { auth = null; return show(false); }
  if (me && me.csrf_token) auth.csrf = me.csrf_token;
  showWho(me || {});
  show(true);
}

function turnElement(role, text) {
  const item = document.createElement("li");
  item.className = role;
  const who = document.createElement("span");
  who.className = "visually-hidden";
  who.textContent = role === "user" ? "You asked: " : "Answer: ";
  const body = document.createElement("div");
  body.className = "text";
  body.textContent = text;
  item.append(who, body);
  $("turns").append(item);
  return item;
}

function addCitations(item, citations) {
  if (!citations || !citations.length) return;
  const list = document.createElement("ul");
  list.className = "chips";
  list.setAttribute("aria-label", "Sources");
  for (const citation of citations) {
    const entry = document.createElement("li");
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "citation";
    if (citation.available === false) {
      // Reopened after the caller lost access to the document (or it was deleted): its text never comes back.
      chip.textContent = "[" + citation.index + "] no longer available";
      chip.disabled = true;
      chip.classList.add("unavailable");
    } else {
      chip.textContent = "[" + citation.index + "] " + citation.title;
      chip.addEventListener("click", () => openPassage(citation));
    }
    entry.append(chip);
    list.append(entry);
  }
  item.append(list);
}

function renderHistory() {
  $("turns").replaceChildren();
  for (const turn of savedTurns()) {
    const item = turnElement(turn.role, turn.content);
    if (turn.found === false) item.classList.add("not-found");
    if (turn.withheld) item.classList.add("withheld");
    addCitations(item, turn.citations);
    if (turn.role === "assistant" && turn.id) Conversations.addFeedback(item, turn.id, turn.rating);
  }
}

let current = null;

// The cited passage, with the supporting quote highlighted. Text only (textContent), never parsed as HTML; the
// offsets come from the server and are checked against the text before use.
function showPassage(box, citation) {
  box.replaceChildren();
  const text = citation.text || citation.snippet || "";
  const start = citation.quote_start, end = citation.quote_end;
  const usable = citation.quote && Number.isInteger(start) && Number.isInteger(end) && start >= 0 && end <= text.length
    && start < end && text.slice(start, end) === citation.quote;
  if (!usable) {
    box.textContent = text;
    return;
  }
  const mark = document.createElement("mark");
  mark.className = "quote";
  mark.textContent = text.slice(start, end);
  box.append(text.slice(0, start), mark, text.slice(end));
}

function openPassage(citation) {
  current = citation;
  $("passage-title").textContent = citation.title;
  const where = citation.page ? "page " + citation.page : citation.heading;
  $("passage-where").textContent = [where, citation.source].filter(Boolean).join(" · ");
  showPassage($("passage-text"), citation);
  $("passage").hidden = false;
  $("passage").focus();
}

async function openOriginal() {
  if (!current) return;
  const response = await fetch("/v1/documents/" + encodeURIComponent(current.document_id) + "/file", { headers: headers() });
  if (!response.ok) {
    $("passage-where").textContent = "The original file is not available (" + response.status + ").";
    return;
  }
  const blob = await response.blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  link.download = current.source.split("/").pop() || "document";
  link.click();
  setTimeout(() => URL.revokeObjectURL(link.href), 10000);
}

async function ask(event) {
  event.preventDefault();
  const question = $("question").value.trim();
  if (!question) return;
  $("question").value = "";
  $("chat-error").hidden = true;
  const turns = savedTurns();
  turns.push({ role: "user", content: question });
  turnElement("user", question);
  const item = turnElement("assistant", "");
  const text = item.querySelector(".text");
  item.setAttribute("aria-busy", "true");
  $("ask").disabled = true;
  let answer = "";
  let final = null;
  try {
    const conversation = await Conversations.ensure(question);
    const request = { model: "local", stream: true, messages: turns.map((t) => ({ role: t.role, content: t.content })) };
    if (conversation) request.conversation_id = conversation;
    const response = await fetch("/v1/chat/completions", {
      method: "POST",
      headers: headers(),
      body: JSON.stringify(request),
    });
    if (!response.ok) {
      const body = await response.json().catch(() => null);
      if (response.status === 401) { signedOut(); }
      throw new Error(problemText(body, response.status));
    }
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      let cut;
      while ((cut = buffer.indexOf("\n\n")) >= 0) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut + 2);
        const data = event.replace(/^data: /, "");
        if (!data || data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(problemText(chunk, chunk.status || 500));  // the model failed mid-answer
        const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
        if (delta && delta.content) { answer += delta.content; text.textContent = answer; }
        if (chunk.choices && chunk.choices[0] && chunk.choices[0].finish_reason) final = chunk;
      }
    }
  } catch (error) {
    item.remove();
    turns.pop();
    $("chat-error").textContent = "The question could not be answered: " + error.message;
    $("chat-error").hidden = false;
    $("ask").disabled = false;
    return;
  }
  item.removeAttribute("aria-busy");
  $("ask").disabled = false;
  const found = final ? final.found !== false : true;
  if (!found) item.classList.add("not-found");
  const citations = final ? final.citations || [] : [];
  addCitations(item, citations);
  const id = final ? final.message_id : undefined;
  if (id) Conversations.addFeedback(item, id);
  turns.push({ role: "assistant", content: answer, found, citations, id });
  saveHistory(turns);
  Conversations.refresh();
  call("/auth/me").then(showWho).catch(() => null);  // groups as the directory gives them now
  $("question").focus();
}

function newChat() {
  sessionStorage.removeItem(HISTORY);
  Conversations.forget();
  $("turns").replaceChildren();
  $("passage").hidden = true;
  $("question").focus();
}

document.addEventListener("DOMContentLoaded", () => {
  $("sign-in-form").addEventListener("submit", signIn);
  $("ask-form").addEventListener("submit", ask);
  $("sign-out").addEventListener("click", signOut);
  $("new-chat").addEventListener("click", newChat);
  $("passage-close").addEventListener("click", () => { $("passage").hidden = true; $("question").focus(); });
  $("passage-open").addEventListener("click", openOriginal);
  $("question").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); $("ask-form").requestSubmit(); }
  });
  start();
});
