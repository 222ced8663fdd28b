// bygheartd library page: live updates over server-sent events, the form's cost estimate.
// No framework, no build step; served from /static under a strict Content-Security-Policy.
"use strict";

(function () {
  const csrf = () => (document.querySelector('meta[name="csrf-token"]') || {}).content || "";
  const page = document.body.dataset.page;

  // A restarted daemon forgets every login: say so instead of going quiet.
  function show(id, on) {
    const box = document.getElementById(id);
    if (box) box.hidden = !on;
  }
  function loginEnded() {
    show("offline", false);
    show("session-ended", true);
    if (window.bygheartdEvents) window.bygheartdEvents.close();
  }

  async function fetchHtml(url) {
    const reply = await fetch(url, { credentials: "same-origin", headers: { Accept: "text/html" } });
    if (reply.status === 401) loginEnded();
    if (!reply.ok) return null;
    const holder = document.createElement("div");
    holder.innerHTML = (await reply.text()).trim();
    return holder.firstElementChild;
  }

  function playing(root) {
    return Array.from(root.querySelectorAll("audio")).some((a) => !a.paused);
  }

  // -- live updates ----------------------------------------------------------------
  // EventSource reconnects by itself after a network error (the server sends `retry:`);
  // a refused reconnect (401 after a restart) closes it for good: then ask /session
  // whether the login ended, or whether the daemon is only not back yet.
  function listen(onJob) {
    if (!window.EventSource) return;
    const source = new EventSource("/events");
    source.addEventListener("job", (e) => onJob(JSON.parse(e.data)));
    source.addEventListener("open", () => show("offline", false));
    source.addEventListener("error", async () => {
      if (source.readyState !== EventSource.CLOSED) {
        show("offline", true);
        return;
      }
      let status = 0;
      try {
        status = (await fetch("/session", { credentials: "same-origin", headers: { Accept: "application/json" } })).status;
      } catch (_) { status = 0; }
      if (status === 401) {
        loginEnded();
      } else {
        show("offline", status !== 200);
        setTimeout(() => listen(onJob), 2000);
      }
    });
    window.bygheartdEvents = source;
  }

  if (page === "library") {
    const list = document.getElementById("jobs");
    listen(async (job) => {
      const row = document.getElementById("job-" + job.id);
      if (!row && list.dataset.live !== "yes") return;
      if (row && playing(row)) {  // never cut off a take being heard: update the badge only
        const badge = row.querySelector('[data-field="status"]');
        if (badge) badge.textContent = job.status;
        return;
      }
      const fresh = await fetchHtml("/fragments/rows/" + encodeURIComponent(job.id));
      if (!fresh) return;
      if (row) {
        row.replaceWith(fresh);
      } else {
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
        list.prepend(fresh);
      }
    });
  }

  if (page === "song") {
    const body = () => document.getElementById("song-body");
    listen(async (job) => {
      const current = body();
      if (!current || current.dataset.jobId !== job.id || playing(current)) return;
      const fresh = await fetchHtml("/songs/" + encodeURIComponent(job.id) + "/fragment");
      if (fresh) current.replaceWith(fresh);
    });
  }

  // -- the new-song form -------------------------------------------------------------
  if (page === "new") {
    const form = document.getElementById("new-song");
    const estimate = document.getElementById("estimate");
    let timer = null;
    let asked = 0;
    // Errors show for fields the user has changed (all of them after a refused submit),
    // not for a fresh form that is merely empty.
    const touched = new Set();
    let everything = form.querySelector(".error") !== null;

    function showProblems(problems) {
      document.querySelectorAll("[data-error-for]").forEach((box) => {
        const key = box.dataset.errorFor;
        const shown = everything || touched.has(key) || (key === "" && touched.size > 0);
        const texts = shown ? problems[key] || [] : [];
        box.replaceChildren(...texts.map((t) => {
          const p = document.createElement("p");
          p.className = "error";
          p.textContent = t;
          return p;
        }));
        const field = box.closest(".field");
        if (field) field.classList.toggle("has-error", texts.length > 0);
      });
    }

    async function update() {
      const body = new URLSearchParams();
      for (const el of form.elements) {
        if (!el.name) continue;
        if (el.type === "file") {
          if (el.files && el.files.length) body.append(el.name, el.files[0].name);
        } else if (el.type === "checkbox") {
          if (el.checked) body.append(el.name, "true");
        } else {
          body.append(el.name, el.value);
        }
      }
      const mine = ++asked;
      const reply = await fetch("/api/estimate", {
        method: "POST",
        credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf(), Accept: "application/json" },
        body,
      });
      if (reply.status === 401) loginEnded();
      if (mine !== asked || !reply.ok) return;
      const data = await reply.json();
      showProblems(data.problems || {});
      estimate.classList.toggle("invalid", !data.ok);
      estimate.classList.toggle("waits", !!data.waits);
      const marked = document.querySelector("#new-song .error") !== null;
      estimate.textContent = data.ok
        ? "Cost: " + data.text
        : marked ? "Fix the marked fields to see the cost." : "Fill in the song to see its cost.";
      estimate.dataset.cost = data.ok ? String(data.cost) : "";
    }

    const soon = (e) => {
      if (e && e.target && e.target.name) touched.add(e.target.name);
      clearTimeout(timer);
      timer = setTimeout(update, 250);
    };
    form.addEventListener("submit", () => { everything = true; });
    form.addEventListener("input", soon);
    form.addEventListener("change", soon);
    update();
  }
})();
