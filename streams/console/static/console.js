// artroute curator console: keyboard review with prefetch, grid triage. Plain JavaScript, no libraries
// (museums run the console on closed networks). Everything shown comes from the server as data and is
// put into the page as text (textContent), never as HTML.
(function () {
  "use strict";

  const $ = (sel, root) => (root || document).querySelector(sel);
  const csrf = () => $('meta[name="csrf-token"]').content;
  const isTyping = (el) => !!el && (el.tagName === "INPUT" || el.tagName === "SELECT" ||
                                   el.tagName === "TEXTAREA" || el.isContentEditable);

  function uuid4() {  // crypto.randomUUID needs a secure context; museums may serve plain http inside
    const b = new Uint8Array(16);
    crypto.getRandomValues(b);
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    const h = Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");
    return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
  }

  async function api(method, url, body) {
    const r = await fetch(url, {
      method, credentials: "same-origin", keepalive: method !== "GET",  // a verdict outlives leaving the page
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf()},
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (r.status === 401) {
      location.href = "/login?next=" + encodeURIComponent(location.pathname + location.search);
      throw new Error("the session ended: log in again");
    }
    const data = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(typeof data.detail === "string" ? data.detail : `${r.status} ${r.statusText}`);
    return data;
  }

  function el(tag, props, ...children) {
    const e = document.createElement(tag);
    Object.assign(e, props || {});
    for (const c of children) e.append(c);
    return e;
  }

  // ---- review queue -------------------------------------------------------------------------------
  function review(boot) {
    const state = {
      buffer: boot.items.slice(), current: null, done: [], undo: [], pending: 0,
      images: new Map(), departments: boot.departments, refilling: false, keyAt: null, exhausted: false,
    };
    const timings = [];
    window.artroute = {timings, state};
    const box = $("#dept"), list = $("#dept-list");
    let matches = [], active = -1;

    function status(text, error) {
      const s = $("#status");
      s.textContent = text;
      s.classList.toggle("error", !!error);
    }

    function image(item) {
      let im = state.images.get(item.object_id);
      if (!im) {
        im = new Image();
        im.decoding = "async";
        im.src = item.image;
        im.decode().catch(() => {});
        state.images.set(item.object_id, im);
      }
      return im;
    }

    function forget(objectId) {
      if (!state.buffer.some((i) => i.object_id === objectId)) state.images.delete(objectId);
    }

    function text(sel, value) { $(sel).textContent = value == null ? "" : String(value); }

    function renderTop3(item) {
      const ol = $("#top3");
      ol.replaceChildren();
      item.top3.forEach((t, i) => {
        const bar = el("progress", {max: 1, value: t.score});
        const btn = el("button", {type: "button", className: "choice"},
          el("kbd", {textContent: String(i + 1)}), " ", el("span", {className: "label", textContent: t.label}), " ",
          bar, " ", el("span", {className: "score", textContent: `${Math.round(t.score * 100)} %`}));
        btn.dataset.rank = String(i + 1);
        btn.addEventListener("click", () => pick(i + 1));
        ol.append(el("li", {}, btn));
      });
    }

    function show(item) {
      state.current = item || null;
      const t0 = state.keyAt;
      state.keyAt = null;
      $("#review").hidden = !item;
      $("#empty").hidden = !!item;
      if (!item) { delete document.body.dataset.item; return; }
      const im = image(item), old = $("#photo");
      if (old !== im) {
        im.id = "photo";
        old.replaceWith(im);
      }
      im.alt = "photo of " + item.key;
      $("#photo-error").hidden = true;
      text("#key", item.key);
      text("#reason", item.reason);
      text("#reason-text", item.reason_text === item.reason ? "" : item.reason_text);
      text("#prediction-set", item.prediction_set ? item.prediction_set.join(", ") : "");
      $("#prediction-set").hidden = $("#prediction-set-label").hidden = !item.prediction_set;
      text("#model", `${item.model} version ${item.version}`);
      text("#uploaded", item.event_time);
      text("#bucket", item.bucket);
      $("#history").href = item.history;
      renderTop3(item);
      document.body.dataset.item = String(item.object_id);
      const shown = () => requestAnimationFrame(() => {
        if (state.current !== item) return;
        document.body.dataset.shown = String(item.object_id);
        if (t0 !== null) timings.push(performance.now() - t0);
      });
      const failed = () => {
        const cap = $("#photo-error");
        cap.textContent = "The photo cannot be shown (changed or removed since it was decided).";
        cap.hidden = false;
        shown();
      };
      if (im.complete) (im.naturalWidth ? shown : failed)();
      else im.decode().then(shown, failed);
      if (!(item.model in state.departments)) {
        api("GET", "/api/departments?model_name=" + encodeURIComponent(item.model))
          .then((d) => Object.assign(state.departments, d)).catch(() => {});
      }
    }

    function advance() {
      show(state.buffer.shift());
      refill();
    }

    async function refill() {
      if (state.refilling || state.buffer.length >= 3 || state.exhausted) return;
      state.refilling = true;
      try {
        const q = new URLSearchParams({limit: String(boot.prefetch)});
        for (const [k, v] of Object.entries(boot.filters)) if (v) q.set(k, v);
        const known = new Set([...state.done.slice(-400), ...state.buffer.map((i) => i.object_id)]);
        if (state.current) known.add(state.current.object_id);
        for (const id of known) q.append("exclude", String(id));
        const data = await api("GET", "/api/queue?" + q.toString());
        const fresh = data.items.filter((i) => !known.has(i.object_id));
        state.exhausted = fresh.length === 0;
        for (const item of fresh) { state.buffer.push(item); image(item); }
        if (!state.current && state.buffer.length) show(state.buffer.shift());
      } catch (e) {
        status("Could not load more items: " + e.message, true);
      } finally {
        state.refilling = false;
      }
    }

    // Verdicts are posted at once (each about another object; keepalive, so leaving the page loses none);
    // an undo waits for the verdict it retracts.
    function send(what, request, onError) {
      state.pending += 1;
      const p = request();
      p.then(() => status(what), (e) => { status(`Not saved: ${what}: ${e.message}`, true); if (onError) onError(); })
        .finally(() => { state.pending -= 1; });
      return p;
    }

    function verdict(kind, department) {
      const item = state.current;
      if (!item) return;
      const entry = {item, verdictId: uuid4()};
      const body = {decision_id: item.decision_id, kind, verdict_id: entry.verdictId};
      if (department) body.department = department;
      state.undo.push(entry);
      state.done.push(item.object_id);
      const label = kind === "not_routable" ? "not routable" : `${kind} ${department || item.department}`;
      entry.saved = send(`${label} — ${item.key}`, () => api("POST", "/api/verdicts", body), () => {
        state.undo = state.undo.filter((u) => u !== entry);      // it was never recorded: back in the queue
        state.done = state.done.filter((id) => id !== item.object_id);
        state.buffer.unshift(item);
      });
      advance();
      forget(item.object_id);
    }

    function pick(rank) {
      const item = state.current;
      if (!item || rank > item.top3.length) return;
      if (rank === 1) verdict("confirm");
      else verdict("correct", item.top3[rank - 1].label);
    }

    function choose(label) {
      const item = state.current;
      if (!item || !label) return;
      state.keyAt = performance.now();
      closeBox();
      if (label === item.department) verdict("confirm");
      else verdict("correct", label);
    }

    function skip() {
      const item = state.current;
      if (!item) return;
      state.undo.push({item, verdictId: null});
      state.done.push(item.object_id);
      status("Skipped " + item.key);
      advance();
    }

    function undo() {
      const last = state.undo.pop();
      if (!last) { status("Nothing to undo."); return; }
      if (state.current) state.buffer.unshift(state.current);
      state.done = state.done.filter((id) => id !== last.item.object_id);
      state.exhausted = false;
      if (last.verdictId) {
        send("Undone: " + last.item.key,
             () => last.saved.then(() => api("POST", `/api/verdicts/${last.verdictId}/retract`, {})));
      } else {
        status("Back: " + last.item.key);
      }
      show(last.item);
    }

    // -- department search box (combobox with completion over the model's taxonomy) --
    function candidates() {
      const item = state.current;
      const own = item && state.departments[item.model];
      return own && own.length ? own : Object.values(state.departments).flat();
    }

    function renderMatches() {
      list.replaceChildren();
      matches.forEach((label, i) => {
        const li = el("li", {id: `dept-opt-${i}`, textContent: label});
        li.setAttribute("role", "option");
        li.setAttribute("aria-selected", String(i === active));
        li.addEventListener("mousedown", (e) => { e.preventDefault(); choose(label); });
        list.append(li);
      });
      list.hidden = matches.length === 0;
      box.setAttribute("aria-expanded", String(!list.hidden));
      if (active >= 0) box.setAttribute("aria-activedescendant", `dept-opt-${active}`);
      else box.removeAttribute("aria-activedescendant");
    }

    function filterBox() {
      const q = box.value.trim().toLowerCase();
      if (!q) { matches = []; active = -1; renderMatches(); return; }
      const rank = (label) => {
        const l = label.toLowerCase();
        if (l.startsWith(q)) return 0;
        if (l.split(/[\s,/-]+/).some((w) => w.startsWith(q))) return 1;
        return l.includes(q) ? 2 : 3;
      };
      matches = [...new Set(candidates())].filter((l) => rank(l) < 3)
        .sort((a, b) => rank(a) - rank(b) || a.localeCompare(b)).slice(0, 10);
      active = matches.length ? 0 : -1;
      renderMatches();
    }

    function closeBox() {
      box.value = "";
      matches = [];
      active = -1;
      renderMatches();
      box.blur();
    }

    box.addEventListener("input", filterBox);
    box.addEventListener("keydown", (e) => {
      if (e.key === "ArrowDown" || e.key === "ArrowUp") {
        if (matches.length) {
          active = (active + (e.key === "ArrowDown" ? 1 : matches.length - 1)) % matches.length;
          renderMatches();
        }
      } else if (e.key === "Enter") {
        if (active >= 0) choose(matches[active]);
        else status("No department matches " + JSON.stringify(box.value), true);
      } else if (e.key === "Escape") {
        closeBox();
      } else {
        return;
      }
      e.preventDefault();
      e.stopPropagation();
    });
    box.addEventListener("blur", () => setTimeout(() => { if (document.activeElement !== box) list.hidden = true; }, 0));

    $("#not-routable").addEventListener("click", () => verdict("not_routable"));
    $("#skip").addEventListener("click", skip);
    $("#undo").addEventListener("click", undo);

    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey || isTyping(e.target)) return;
      const onControl = e.target && (e.target.tagName === "BUTTON" || e.target.tagName === "A");
      const k = e.key;
      if ((k === "Enter" && !onControl) || k === "1" || k === "2" || k === "3") {
        state.keyAt = e.timeStamp;   // when the key went down (same clock as performance.now())
        pick(k === "Enter" ? 1 : Number(k));
      } else if (k === "n" || k === "N") {
        state.keyAt = e.timeStamp;
        verdict("not_routable");
      } else if (k === "s" || k === "S") {
        state.keyAt = e.timeStamp;
        skip();
      } else if (k === "u" || k === "U") {
        undo();
      } else if (k === "/") {
        box.focus();
      } else {
        return;
      }
      e.preventDefault();
    });

    const first = state.buffer.shift();
    if (first) state.images.set(first.object_id, $("#photo"));
    state.buffer.forEach(image);
    show(first);
    refill();
  }

  // ---- grid triage ----------------------------------------------------------------------------------
  function grid() {
    const form = $("#grid-form");
    if (!form) return;
    const boxes = Array.from(form.querySelectorAll('input[type="checkbox"][name="wrong"]'));
    const update = () => {
      const marked = boxes.filter((b) => b.checked).length;
      boxes.forEach((b) => b.closest(".tile").classList.toggle("marked", b.checked));
      $("#grid-count").textContent = String(boxes.length - marked);
      $("#grid-marked").textContent = `${marked} marked wrong`;
    };
    const columns = () => {
      const top = boxes[0].closest("li").offsetTop;
      const n = boxes.filter((b) => b.closest("li").offsetTop === top).length;
      return Math.max(1, n);
    };
    boxes.forEach((b, i) => {
      b.addEventListener("change", update);
      b.addEventListener("keydown", (e) => {
        const step = {ArrowLeft: -1, ArrowRight: 1, ArrowUp: -columns(), ArrowDown: columns()}[e.key];
        if (step === undefined) return;
        const next = boxes[i + step];
        if (next) next.focus();
        e.preventDefault();
      });
    });
    document.addEventListener("keydown", (e) => {
      if (e.ctrlKey || e.metaKey || e.altKey) return;
      if ((e.key === "c" || e.key === "C") && !(isTyping(e.target) && e.target.type !== "checkbox")) {
        e.preventDefault();
        form.requestSubmit();
      }
    });
    update();
    if (boxes.length) boxes[0].focus();
  }

  document.addEventListener("DOMContentLoaded", () => {
    const page = document.body.dataset.page;
    if (page === "review") review(JSON.parse($("#boot").textContent));
    else if (page === "grid") grid();
  });
})();
