// Saved conversations (the list beside the chat: open, rename, delete) and thumbs up/down on answers. Loaded after
// app.js and uses its call(), saveHistory() and renderHistory(). Titles and texts go on the page as text only.
"use strict";

const CURRENT = "rag-conversation";

function button(label, text, onClick) {
  const made = document.createElement("button");
  made.type = "button";
  made.textContent = text;
  if (label) made.setAttribute("aria-label", label);
  made.addEventListener("click", onClick);
  return made;
}

const Conversations = {
  // False when the server keeps no conversations for this caller (switched off, or an anonymous demo caller):
  // the chat then lives in this tab only, as before.
  enabled: true,

  current() { return sessionStorage.getItem(CURRENT); },
  forget() { sessionStorage.removeItem(CURRENT); this.mark(); },

  off(error) {
    if (![401, 403, 404, 409].includes(error.status)) throw error;
    this.enabled = false;
    $("conversations").hidden = true;
    return null;
  },

  // The conversation a new question goes to: the open one, or a new one titled after the question.
  async ensure(question) {
    if (!this.enabled) return null;
    if (this.current()) return this.current();
    try {
      const made = await call("/v1/conversations", { method: "POST", body: JSON.stringify({ title: question.slice(0, 80) }) });
      sessionStorage.setItem(CURRENT, made.id);
      return made.id;
    } catch (error) {
      return this.off(error);
    }
  },

  async refresh() {
    if (!this.enabled) return;
    let listed;
    try {
      listed = await call("/v1/conversations");
    } catch (error) {
      return this.off(error);
    }
    const list = $("conversation-list");
    list.replaceChildren(...(listed.data || []).map((c) => this.entry(c)));
    $("conversations-empty").hidden = list.children.length > 0;
    $("conversations").hidden = false;
    this.mark();
  },

  entry(conversation) {
    const item = document.createElement("li");
    item.dataset.id = conversation.id;
    const title = conversation.title || "Untitled";
    const open = button(null, title, () => this.open(conversation.id));
    open.className = "open";
    const rename = button("Rename " + title, "Rename", () => this.renameForm(item, conversation.id, title));
    const remove = button("Delete " + title, "Delete", () => {
      if (remove.dataset.armed) return this.remove(conversation.id);
      remove.dataset.armed = "1";  // two steps: a stray click deletes nothing
      remove.textContent = "Confirm delete";
    });
    item.append(open, rename, remove);
    return item;
  },

  mark() {
    for (const item of $("conversation-list").children) {
      const open = item.querySelector(".open");
      if (item.dataset.id === this.current()) open.setAttribute("aria-current", "true");
      else open.removeAttribute("aria-current");
    }
  },

  // Reopened from the server, which checks every citation against the caller's access as it is now.
  async open(id) {
    const conversation = await call("/v1/conversations/" + encodeURIComponent(id));
    sessionStorage.setItem(CURRENT, id);
    saveHistory((conversation.messages || []).map((m) => ({
      role: m.role, content: m.content, citations: m.citations || [], found: m.found, withheld: m.withheld,
      id: m.role === "assistant" ? m.id : undefined, rating: m.rating,
    })));
    $("passage").hidden = true;
    renderHistory();
    this.mark();
    $("question").focus();
  },

  renameForm(item, id, title) {
    const form = document.createElement("form");
    const label = document.createElement("label");
    label.textContent = "New title";
    const input = document.createElement("input");
    input.value = title;
    input.required = true;
    input.maxLength = 200;
    label.append(input);
    form.append(label, button(null, "Cancel", () => this.refresh()));
    const save = document.createElement("button");
    save.type = "submit";
    save.textContent = "Save";
    form.append(save);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      await call("/v1/conversations/" + encodeURIComponent(id), {
        method: "PATCH", body: JSON.stringify({ title: input.value.trim() }),
      }).catch((error) => { $("chat-error").textContent = error.message; $("chat-error").hidden = false; });
      this.refresh();
    });
    item.replaceChildren(form);
    input.focus();
  },

  async remove(id) {
    await call("/v1/conversations/" + encodeURIComponent(id), { method: "DELETE" });
    if (this.current() === id) {
      this.forget();
      saveHistory([]);
      renderHistory();
    }
    this.refresh();
  },

  // Thumbs up / down under an answer, then an optional comment; sent again, a rating replaces the earlier one.
  addFeedback(item, messageId, rating) {
    const box = document.createElement("div");
    box.className = "feedback";
    const status = document.createElement("span");
    status.setAttribute("role", "status");
    const send = async (value, comment) => {
      const body = { message_id: messageId, rating: value };
      if (comment) body.comment = comment;
      try {
        await call("/v1/feedback", { method: "POST", body: JSON.stringify(body) });
      } catch (error) {
        status.textContent = "Feedback not saved: " + error.message;
        return false;
      }
      up.setAttribute("aria-pressed", String(value === "up"));
      down.setAttribute("aria-pressed", String(value === "down"));
      status.textContent = comment ? "Thank you for the comment." : "Thank you.";
      return true;
    };
    const up = button(null, "Helpful", async () => { if (await send("up")) this.commentForm(box, send, "up"); });
    const down = button(null, "Not helpful", async () => { if (await send("down")) this.commentForm(box, send, "down"); });
    up.setAttribute("aria-pressed", String(rating === "up"));
    down.setAttribute("aria-pressed", String(rating === "down"));
    box.append(up, down, status);
    item.append(box);
  },

  commentForm(box, send, rating) {
    box.querySelector("form")?.remove();
    const form = document.createElement("form");
    const label = document.createElement("label");
    label.textContent = "Comment (optional)";
    const input = document.createElement("input");
    input.maxLength = 2000;
    label.append(input);
    const submit = document.createElement("button");
    submit.type = "submit";
    submit.textContent = "Send comment";
    form.append(label, submit);
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (input.value.trim() && await send(rating, input.value.trim())) form.remove();
    });
    box.append(form);
  },
};
