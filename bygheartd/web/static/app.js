// bygheartd library page: live updates over server-sent events (the library, a song and its
// stems, an album), progress that never moves back, playing the library on, the listening
// deck on a song page (player.js), keeping a take without a reload, the form's cost estimate.
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
    // The server's own template (every value escaped there), parsed in an inert document
    // (nothing in it loads or runs) and only then taken into the page.
    const doc = new DOMParser().parseFromString((await reply.text()).trim(), "text/html");
    const first = doc.body.firstElementChild;
    return first ? document.importNode(first, true) : null;
  }

  function playing(root) {
    return Array.from(root.querySelectorAll("audio")).some((a) => !a.paused);
  }

  // -- live updates ----------------------------------------------------------------
  // EventSource reconnects by itself after a network error (the server sends `retry:`);
  // a refused reconnect (401 after a restart) closes it for good: then ask /session
  // whether the login ended, or whether the daemon is only not back yet.
  // -- progress ----------------------------------------------------------------------
  // The figure is the server's shared estimate (`show` prints the same); a bar that has
  // shown more of the same making keeps it: a progress bar never moves backwards.
  function showProgress(box, data) {
    if (!box) return;
    const bar = box.querySelector("progress");
    const text = box.querySelector("[data-field=progress-text], #song-progress-text");
    const same = box.dataset.making === data.making;
    const before = bar ? Number(bar.value) : 0;
    if (same && before > data.percent) {
      if (text) text.textContent = before + " %" + (data.left ? ", " + data.left : "");
      return;
    }
    box.dataset.making = data.making;
    if (bar) bar.value = data.percent;
    if (text) text.textContent = data.text;
  }

  // A row read again replaces the one shown; within the same making its bar keeps the
  // higher figure it showed (the fresh row was worked out from a snapshot).
  function keepBar(row, fresh) {
    const box = row.querySelector("[data-field=making]");
    const freshBox = fresh.querySelector("[data-field=making]");
    if (!box || !freshBox || freshBox.dataset.making !== box.dataset.making) return;
    const old = box.querySelector("progress");
    const bar = freshBox.querySelector("progress");
    if (old && bar && Number(bar.value) < Number(old.value)) bar.value = old.value;
  }

  const rowOf = (root, id) =>
    Array.from(root.querySelectorAll("article.job")).find((r) => r.dataset.jobId === id) || null;

  // Bring the rows (`article.job`) in `list` up to those of `fresh` (the same list read
  // again), in its order: a row being heard keeps playing and only its badge changes.
  function mergeRows(list, fresh) {
    let before = null;
    Array.from(fresh.querySelectorAll("article.job")).forEach((row) => {
      const old = rowOf(list, row.dataset.jobId);
      if (old && playing(old)) {
        const badge = old.querySelector('[data-field="status"]');
        const now = row.querySelector('[data-field="status"]');
        if (badge && now) badge.textContent = now.textContent;
        before = old;
        return;
      }
      if (old) {
        keepBar(old, row);
        old.replaceWith(row);
      } else if (before) {
        before.after(row);
      } else {
        list.prepend(row);
      }
      before = row;
    });
  }

  function listen(onJob, onProgress) {
    if (!window.EventSource) return;
    const source = new EventSource("/events");
    source.addEventListener("job", (e) => onJob(JSON.parse(e.data)));
    if (onProgress) source.addEventListener("progress", (e) => onProgress(JSON.parse(e.data)));
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
        setTimeout(() => listen(onJob, onProgress), 2000);
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
        keepBar(row, fresh);
        row.replaceWith(fresh);
      } else {
        const empty = document.getElementById("empty");
        if (empty) empty.remove();
        list.prepend(fresh);
      }
    }, (data) => {
      const row = document.getElementById("job-" + data.id);
      if (row) showProgress(row.querySelector("[data-field=making]"), data);
    });
    playOn(list);
  }

  // -- playing the library on ----------------------------------------------------------
  // "Play these in order": each song's first player (its keeper) in the order shown, the
  // next page's songs fetched and added when the last one ends. Starting any player makes
  // it the current one (and pauses the others). `list` is any container of `article.job`
  // rows in playing order with a `#play-all` button and a `#now-playing` bar beside it: an
  // album page's tracks can use it as they are.
  // With `always` (the album page), starting any track plays on from it too. Its `refresh`
  // shows the button once a row has a player (rows read again while the page is open).
  function playOn(list, always) {
    const button = document.getElementById("play-all");
    const bar = document.getElementById("now-playing");
    if (!button || !bar) return null;
    let on = false;
    let currentId = null;
    const firstPlayer = (row) => row.querySelector("audio[data-testid=player]");
    const rows = () => Array.from(list.querySelectorAll("article.job")).filter(firstPlayer);
    button.hidden = rows().length === 0;

    function announce(row, audio) {
      bar.hidden = false;
      const title = document.getElementById("now-title");
      title.textContent = audio.dataset.title || "";
      title.href = "/songs/" + encodeURIComponent(row.dataset.jobId);
      document.getElementById("now-take").textContent = "take " + (audio.dataset.take || "1");
      bar.dataset.jobId = row.dataset.jobId;
      list.querySelectorAll("article.job.now").forEach((r) => r.classList.remove("now"));
      row.classList.add("now");
    }

    function start(row) {
      const audio = firstPlayer(row);
      currentId = row.dataset.jobId;
      announce(row, audio);
      audio.currentTime = 0;
      audio.play().catch(() => {});
      row.scrollIntoView({ block: "nearest" });
    }

    async function more() {
      const link = document.getElementById("next-page");
      if (!link) return false;
      const reply = await fetch(link.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
      if (!reply.ok) return false;
      const doc = new DOMParser().parseFromString(await reply.text(), "text/html");
      const added = Array.from(doc.querySelectorAll("#jobs > article.job"));
      added.forEach((row) => list.appendChild(document.importNode(row, true)));
      const pages = doc.getElementById("pagination");
      const here = document.getElementById("pagination");
      if (pages && here) here.replaceWith(document.importNode(pages, true));
      return added.length > 0;
    }

    async function next() {
      const all = rows();
      const index = all.findIndex((r) => r.dataset.jobId === currentId);
      if (index + 1 < all.length) {
        start(all[index + 1]);
      } else if (await more()) {
        next();
      } else {
        on = false;
        bar.dataset.ended = "yes";
        document.getElementById("now-take").textContent = "the end of the list";
      }
    }

    button.addEventListener("click", () => {
      on = true;
      bar.dataset.ended = "";
      const all = rows();
      if (all.length) start(all[0]);
    });
    document.getElementById("play-next").addEventListener("click", () => { on = true; next(); });
    document.getElementById("play-stop").addEventListener("click", () => {
      on = false;
      list.querySelectorAll("audio").forEach((a) => a.pause());
      bar.hidden = true;
    });
    // Media events do not bubble: listen in the capture phase on the list.
    list.addEventListener("play", (e) => {
      const audio = e.target;
      list.querySelectorAll("audio").forEach((a) => { if (a !== audio) a.pause(); });
      const row = audio.closest("article.job");
      if (row) {
        if (always) { on = true; bar.dataset.ended = ""; }
        currentId = row.dataset.jobId;
        announce(row, audio);
      }
    }, true);
    list.addEventListener("ended", (e) => {
      const row = e.target.closest("article.job");
      if (on && row && row.dataset.jobId === currentId) next();
    }, true);
    return { refresh() { button.hidden = rows().length === 0; } };
  }

  // Read a part of the page again from `url` and bring it up to date with `apply`; events
  // that come while a read is under way make one more read after it, not one each.
  function reader(url, apply) {
    let busy = false;
    let again = false;
    return async function read() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const fresh = await fetchHtml(url());
        if (fresh) apply(fresh);
      } finally {
        busy = false;
        if (again) { again = false; read(); }
      }
    };
  }

  // The album page: its tracks play on in order, with the library's own code, and follow
  // their making live: a track's row, the totals and the downloads are read again when a
  // track changes; its bar moves with the progress events.
  if (page === "album") {
    const body = document.getElementById("album-body");
    const tracks = document.getElementById("tracks");
    const player = tracks ? playOn(tracks, true) : null;
    const read = reader(
      () => "/albums/" + encodeURIComponent(body.dataset.albumId) + "/fragment",
      (fresh) => {
        const freshTracks = fresh.querySelector("#tracks");
        if (tracks && freshTracks) mergeRows(tracks, freshTracks);
        ["#album-status", "#album-done", "#album-length", "#album-cost", "#album-downloads"].forEach((sel) => {
          const old = body.querySelector(sel);
          const now = fresh.querySelector(sel);
          if (old && now) old.replaceWith(now);
        });
        body.dataset.status = fresh.dataset.status || "";
        if (player) player.refresh();
      },
    );
    if (body && tracks) {
      listen((job) => {
        if (rowOf(tracks, job.id)) read();
      }, (data) => {
        const row = rowOf(tracks, data.id);
        if (row) showProgress(row.querySelector("[data-field=making]"), data);
      });
    }
  }

  if (page === "song") {
    // The stems form's cost follows the tracks ticked (one generation per stem).
    document.addEventListener("change", (e) => {
      const form = e.target.closest ? e.target.closest("#stems-form") : null;
      const cost = form ? form.querySelector("#stems-cost") : null;
      if (!cost || e.target.name !== "tracks" || !cost.dataset.perStem) return;
      const count = form.querySelectorAll("input[name=tracks]:checked").length;
      const per = Number(cost.dataset.perStem);
      const stems = count + " stem" + (count === 1 ? "" : "s");
      cost.textContent = cost.dataset.free === "yes"
        ? "Cost: free (a self-hosted server), " + stems
        : "Cost: " + per * count + " credit" + (per * count === 1 ? "" : "s") + " for " + stems + " (" + per + " per stem)";
    });
    const body = () => document.getElementById("song-body");
    const deck = () => {
      const root = body();  // the deck and the take cards' "Take N" links
      if (root && window.BygheartdPlayer) window.BygheartdPlayer.attach(root);
    };
    deck();
    keepInPlace();
    // The song's stems (made here or elsewhere) follow their making: the list is read
    // again when one of them changes or a new stem of this song appears.
    const stems = () => document.getElementById("stems");
    const readStems = reader(
      () => "/songs/" + encodeURIComponent(stems().dataset.jobId) + "/stems/fragment",
      (fresh) => {
        const list = stems();
        if (!list) return;
        const rows = list.querySelector("#stem-rows");
        const freshRows = fresh.querySelector("#stem-rows");
        if (rows && freshRows) mergeRows(rows, freshRows);
        const count = list.querySelector("#stems-count");
        const freshCount = fresh.querySelector("#stems-count");
        if (count && freshCount) count.textContent = freshCount.textContent;
        list.hidden = fresh.hidden;
      },
    );
    listen(async (job) => {
      const list = stems();
      if (list && list.dataset.jobId !== job.id &&
          (rowOf(list, job.id) || (job.stem_group && job.stem_group === list.dataset.stemGroup))) {
        readStems();
        return;
      }
      const current = body();
      if (!current || current.dataset.jobId !== job.id || playing(current)) return;
      const fresh = await fetchHtml("/songs/" + encodeURIComponent(job.id) + "/fragment" + window.location.search);
      if (fresh) {
        current.replaceWith(fresh);
        deck();
        keepInPlace();
      }
    }, (data) => {
      const current = body();
      if (current && current.dataset.jobId === data.id) showProgress(document.getElementById("song-making"), data);
      const stem = stems() ? rowOf(stems(), data.id) : null;
      if (stem) showProgress(stem.querySelector("[data-field=making]"), data);
    });
  }

  // Keep a take without leaving the page (the music plays on): the same POST the form
  // makes, then the takes' badges and buttons are read again. Without script, the form.
  function keepInPlace() {
    document.querySelectorAll("form.keep-take").forEach((form) => {
      form.addEventListener("submit", async (e) => {
        e.preventDefault();
        const button = form.querySelector("button");
        if (button) button.disabled = true;
        const reply = await fetch(form.action, {
          method: "POST",
          credentials: "same-origin",
          headers: { "X-CSRF-Token": csrf(), Accept: "application/json" },
        });
        if (reply.status === 401) { loginEnded(); return; }
        if (!reply.ok) { form.submit(); return; }  // let the page say why
        const current = body();
        const fresh = await fetchHtml("/songs/" + encodeURIComponent(current.dataset.jobId) + "/fragment" + window.location.search);
        if (!fresh) return;
        const swap = (sel) => {
          const old = current.querySelector(sel);
          const now = fresh.querySelector(sel);
          if (old && now) old.replaceWith(now);
        };
        swap("#takes");
        // The switch badges (the keeper's star), keeping which take is playing.
        const switches = current.querySelectorAll("#take-switch [data-take]");
        switches.forEach((s) => {
          const now = fresh.querySelector('#take-switch [data-take="' + s.dataset.take + '"]');
          if (!now) return;
          s.className = now.className;
          s.replaceChildren(...Array.from(now.childNodes).map((n) => n.cloneNode(true)));
        });
        keepInPlace();
      });
    });
    function body() { return document.getElementById("song-body"); }
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
