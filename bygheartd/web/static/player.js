// bygheartd listening deck: one player for a song's takes, a switch between them that keeps
// the playback position (A/B at the same bar), keys 1-8 and space, a waveform to click to
// seek, and a loop of a chosen stretch.
//
// Plain script, no build step, nothing fetched; it works on markup that follows this
// contract, so other pages (the MCP app) can reuse it:
//   root                    any element holding the parts below (the song page: #deck)
//   audio#deck-audio        the one player
//   [data-take][data-src]   one switch per take (links; their href works without script)
//   svg#deck-wave           the waveform box (viewBox 0 0 600 H), with g.wave-take[data-take]
//                           per take (the current one has class "current"), rect#deck-loop,
//                           line#deck-head
//   #deck-take, #deck-time, #loop-controls, #loop-start, #loop-end, #loop-clear, #loop-text
// Every text it writes goes through textContent: nothing from a song is ever markup.
"use strict";

(function () {
  const WIDTH = 600;

  function clock(seconds) {
    if (!isFinite(seconds) || seconds < 0) seconds = 0;
    const whole = Math.floor(seconds);
    return Math.floor(whole / 60) + ":" + String(whole % 60).padStart(2, "0");
  }

  function typing(target) {
    if (!target || !target.tagName) return false;
    const tag = target.tagName.toLowerCase();
    return tag === "input" || tag === "textarea" || tag === "select" || target.isContentEditable;
  }

  function attach(root, options) {
    const opts = options || {};
    const find = (sel) => root.querySelector(sel);
    const audio = find("#deck-audio");
    if (!audio) return null;
    const wave = find("#deck-wave");
    const head = find("#deck-head");
    const loopBox = find("#deck-loop");
    const loop = { start: null, end: null };
    let pendingSeek = null;
    let frame = 0;

    const switches = () => Array.from(root.querySelectorAll("[data-take][data-src]"));
    const current = () => Number(audio.dataset.take || "1");

    function duration() {
      if (isFinite(audio.duration) && audio.duration > 0) return audio.duration;
      const sw = switches().find((s) => Number(s.dataset.take) === current());
      return sw && sw.dataset.duration ? Number(sw.dataset.duration) : 0;
    }

    function x(seconds) {
      const total = duration();
      return total > 0 ? Math.min(WIDTH, Math.max(0, (seconds / total) * WIDTH)) : 0;
    }

    function drawLoop() {
      if (!loopBox) return;
      const on = loop.start !== null && loop.end !== null;
      const from = loop.start !== null ? x(loop.start) : 0;
      const to = on ? x(loop.end) : from;
      loopBox.setAttribute("x", String(from));
      loopBox.setAttribute("width", String(Math.max(loop.start !== null ? 2 : 0, to - from)));
      const text = find("#loop-text");
      if (text) {
        text.textContent = on
          ? "looping " + clock(loop.start) + "–" + clock(loop.end)
          : loop.start !== null ? "loop from " + clock(loop.start) + ": now set where it ends" : "";
      }
      const clear = find("#loop-clear");
      if (clear) clear.disabled = loop.start === null;
      audio.dataset.loop = on ? loop.start.toFixed(2) + "-" + loop.end.toFixed(2) : "";
    }

    function drawHead() {
      if (head) {
        const at = String(x(audio.currentTime));
        head.setAttribute("x1", at);
        head.setAttribute("x2", at);
      }
      const time = find("#deck-time");
      if (time) time.textContent = clock(audio.currentTime) + " / " + clock(duration());
    }

    function keepInLoop() {
      if (loop.start !== null && loop.end !== null && audio.currentTime >= loop.end) {
        audio.currentTime = loop.start;
      }
    }

    function tick() {
      keepInLoop();
      drawHead();
      frame = audio.paused ? 0 : requestAnimationFrame(tick);
    }

    function seek(seconds) {
      const total = duration();
      const to = Math.max(0, total > 0 ? Math.min(seconds, total - 0.05) : seconds);
      if (audio.readyState >= 1) {
        audio.currentTime = to;
      } else {
        pendingSeek = to;
      }
      drawHead();
    }

    // Switching takes: the same moment in the other take, playing on if it was playing.
    function switchTo(number) {
      const target = switches().find((s) => Number(s.dataset.take) === number);
      if (!target) return false;
      if (number === current()) return true;
      const at = audio.currentTime;
      const playing = !audio.paused;
      audio.dataset.take = String(number);
      audio.src = target.dataset.src;
      pendingSeek = at;
      audio.load();
      if (playing) {
        audio.play().catch(() => {});
      }
      switches().forEach((s) => {
        if (Number(s.dataset.take) === number) {
          s.setAttribute("aria-current", "true");
        } else {
          s.removeAttribute("aria-current");
        }
      });
      root.querySelectorAll("g.wave-take").forEach((g) => {
        g.classList.toggle("current", Number(g.dataset.take) === number);
      });
      const label = find("#deck-take");
      if (label) label.textContent = String(number);
      if (opts.remember !== false && window.history && window.history.replaceState) {
        const url = new URL(window.location.href);
        url.searchParams.set("take", String(number));
        window.history.replaceState(window.history.state, "", url.pathname + url.search + url.hash);
      }
      root.dispatchEvent(new CustomEvent("deck:take", { detail: { take: number, at: at } }));
      return true;
    }

    audio.addEventListener("loadedmetadata", () => {
      if (pendingSeek !== null) {
        const to = Math.min(pendingSeek, Math.max(0, audio.duration - 0.05));
        pendingSeek = null;
        audio.currentTime = to;
      }
      drawHead();
      drawLoop();
    });
    audio.addEventListener("timeupdate", () => { keepInLoop(); drawHead(); });
    audio.addEventListener("seeked", drawHead);
    audio.addEventListener("play", () => { if (!frame) frame = requestAnimationFrame(tick); });
    audio.addEventListener("ended", () => {
      if (loop.start !== null && loop.end !== null) {
        audio.currentTime = loop.start;
        audio.play().catch(() => {});
      }
    });

    // One listener for the switches and the take cards' "Take N" links, so parts of the
    // page read again (after a keep) need no binding of their own.
    root.addEventListener("click", (e) => {
      const link = e.target.closest ? e.target.closest("[data-take][data-src], a.listen[data-take]") : null;
      if (!link || !root.contains(link)) return;
      if (e.button !== 0 || e.metaKey || e.ctrlKey || e.shiftKey || e.altKey) return;
      e.preventDefault();
      switchTo(Number(link.dataset.take));
      if (link.classList.contains("listen")) audio.scrollIntoView({ block: "nearest" });
    });

    if (wave) {
      wave.addEventListener("click", (e) => {
        const box = wave.getBoundingClientRect();
        if (box.width <= 0) return;
        seek(((e.clientX - box.left) / box.width) * duration());
      });
    }

    function loopStart() {
      loop.start = audio.currentTime;
      if (loop.end !== null && loop.end <= loop.start) loop.end = null;
      drawLoop();
    }
    function loopEnd() {
      const at = audio.currentTime;
      if (loop.start === null || at <= loop.start + 0.05) return;
      loop.end = at;
      audio.currentTime = loop.start;
      drawLoop();
    }
    function loopClear() {
      loop.start = null;
      loop.end = null;
      drawLoop();
    }
    const controls = find("#loop-controls");
    if (controls) controls.hidden = false;
    const keys = find("#deck-keys");
    if (keys) keys.hidden = false;
    const bind = (sel, fn) => { const b = find(sel); if (b) b.addEventListener("click", fn); };
    bind("#loop-start", loopStart);
    bind("#loop-end", loopEnd);
    bind("#loop-clear", loopClear);

    function onKey(e) {
      if (!root.isConnected) {
        document.removeEventListener("keydown", onKey);
        return;
      }
      if (e.defaultPrevented || e.metaKey || e.ctrlKey || e.altKey || typing(e.target)) return;
      if (/^[1-8]$/.test(e.key)) {
        if (switchTo(Number(e.key))) e.preventDefault();
      } else if (e.key === " " || e.code === "Space") {
        const tag = e.target && e.target.tagName ? e.target.tagName.toLowerCase() : "";
        if (tag === "button" || tag === "audio" || tag === "summary") return;  // their own space
        e.preventDefault();
        if (audio.paused) { audio.play().catch(() => {}); } else { audio.pause(); }
      } else if (e.key === "[") {
        loopStart();
      } else if (e.key === "]") {
        loopEnd();
      }
    }
    document.addEventListener("keydown", onKey);

    drawHead();
    drawLoop();
    return {
      audio: audio,
      switchTo: switchTo,
      seek: seek,
      setLoop(start, end) { loop.start = start; loop.end = end; drawLoop(); },
      clearLoop: loopClear,
      current: current,
      detach() { document.removeEventListener("keydown", onKey); },
    };
  }

  window.BygheartdPlayer = { attach: attach, clock: clock };
})();
