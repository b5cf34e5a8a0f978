// Peon's web page: the servers a key reaches, live. Every value from the API goes in as text
// (textContent, never HTML), and the Content-Security-Policy allows only this file's script.
// Live updates: GET /page/servers every 3 s with If-None-Match (an unchanged board is a 304
// without a body); paused while the tab is hidden.
"use strict";
(function () {
  const POLL_MS = 3000;
  const $ = (id) => document.getElementById(id);
  const store = () => (localStorage.getItem("peon-key") ? localStorage : sessionStorage);
  let key = localStorage.getItem("peon-key") || sessionStorage.getItem("peon-key") || "";
  let etag = "", skew = 0, timer = 0, board = null;
  const cards = new Map();

  function say(text) { $("status").textContent = text; }

  async function api(method, path, body, extra) {
    const headers = Object.assign({ "X-Api-Key": key }, extra || {});
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const resp = await fetch(path, { method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body) });
    let data = null;
    if (resp.status !== 304 && (resp.headers.get("Content-Type") || "").startsWith("application/json")) {
      try { data = await resp.json(); } catch (e) { data = null; }
    } else {
      await resp.arrayBuffer();  // read to its end (a 304's nothing), so the request completes
    }
    return { status: resp.status, data, resp };
  }

  function message(r) {
    if (r.data && typeof r.data.info === "string") return r.data.info;
    if (r.data && typeof r.data.error === "string") return r.data.error;
    return "The API answered " + r.status + ".";
  }

  // --- the key -------------------------------------------------------------------------------
  function showLogin(text) {
    stopPolling();
    board = null; etag = ""; cards.clear();
    $("servers").replaceChildren();
    $("board").hidden = true; $("who").hidden = true; $("login").hidden = false;
    $("login-error").textContent = text || "";
    $("key").focus();
  }

  function forget(text) {
    localStorage.removeItem("peon-key"); sessionStorage.removeItem("peon-key");
    key = ""; $("key").value = "";
    showLogin(text);
  }

  $("login").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    key = $("key").value.trim();
    $("login-error").textContent = "";
    const r = await api("GET", "/page/servers");
    if (r.status === 200 && r.data) {
      localStorage.removeItem("peon-key"); sessionStorage.removeItem("peon-key");
      ($("remember").checked ? localStorage : sessionStorage).setItem("peon-key", key);
      $("key").value = "";
      opened(r);
    } else {
      key = "";
      $("login-error").textContent = r.status === 401
        ? "That key is not known here. Check it with whoever runs the servers."
        : r.status === 429 ? "Too many wrong keys from here. " + message(r) : message(r);
      $("key").select();
    }
  });
  $("forget").addEventListener("click", () => forget("The key is forgotten on this device."));

  function opened(r) {
    $("login").hidden = true; $("board").hidden = false; $("who").hidden = false;
    take(r);
    schedule();
  }

  // --- polling -------------------------------------------------------------------------------
  function stopPolling() { clearTimeout(timer); timer = 0; }
  function schedule() { stopPolling(); timer = setTimeout(poll, POLL_MS); }

  async function poll() {
    if (!key) return;
    if (document.hidden) { schedule(); return; }
    try {
      const r = await api("GET", "/page/servers", undefined, etag ? { "If-None-Match": etag } : {});
      if (r.status === 401) { forget("This key is no longer accepted."); return; }
      if (r.status === 200) take(r);
      else if (r.status !== 304) say(message(r));
      $("updated").textContent = "Up to date as of " + new Date().toLocaleTimeString();
    } catch (e) {
      $("updated").textContent = "Cannot reach Peon; trying again.";
    }
    schedule();
  }
  document.addEventListener("visibilitychange", () => { if (!document.hidden && key && board) poll(); });

  function take(r) {
    etag = r.resp.headers.get("ETag") || "";
    const now = Date.parse(r.resp.headers.get("X-Peon-Now") || "");
    if (!isNaN(now)) skew = now - Date.now();
    board = r.data;
    render();
  }

  // --- the board -----------------------------------------------------------------------------
  function render() {
    $("who-text").textContent = board.friend.name + " (" + board.friend.role + ")";
    const seen = new Set();
    const list = $("servers");
    board.servers.forEach((s, i) => {
      seen.add(s.uid);
      let c = cards.get(s.uid);
      if (!c) { c = makeCard(s.uid); cards.set(s.uid, c); }
      if (list.children[i] !== c.li) list.insertBefore(c.li, list.children[i] || null);
      fill(c, s);
    });
    for (const [uid, c] of cards) if (!seen.has(uid)) { c.li.remove(); cards.delete(uid); }
    $("empty").hidden = board.servers.length > 0;
    tick();
  }

  function makeCard(uid) {
    const li = document.getElementById("card").content.firstElementChild.cloneNode(true);
    const q = (sel) => li.querySelector(sel);
    const c = { li, uid, q, s: null };
    q(".copy").addEventListener("click", () => copy(c));
    q(".start").addEventListener("click", () => act(c, "start", { hours: hours(c) }));
    q(".extend").addEventListener("click", () => act(c, "extend", { hours: hours(c) }));
    q(".stop").addEventListener("click", () => act(c, "stop", {}));
    q(".backup").addEventListener("click", () => act(c, "backup", {}));
    q(".backups").addEventListener("toggle", () => { if (q(".backups").open) loadBackups(c); });
    q(".logs").addEventListener("toggle", () => { if (q(".logs").open) loadLog(c); });
    return c;
  }

  function hours(c) { return Number(c.q(".hours").value) || 2; }

  function fill(c, s) {
    c.s = s;
    const q = c.q, name = s.title || s.name;
    q(".title").textContent = name;
    q(".uid").textContent = s.title && s.title !== s.name ? s.uid : "";
    q(".desc").textContent = s.description || "";
    q(".desc").hidden = !s.description;
    q(".game").textContent = s.game;
    q(".state").textContent = s.phase;
    q(".state").dataset.phase = s.phase;
    q(".why").textContent = s.why ? "(" + s.why + ")" : "";
    q(".address").textContent = s.address || "none yet";
    q(".copy").hidden = !s.address;
    q(".copy").setAttribute("aria-label", "Copy the address of " + name);
    q(".players").textContent = s.players == null ? "unknown"
      : s.players + (s.max_players == null ? "" : " of " + s.max_players);
    for (const a of ["start", "extend", "stop", "backup"]) {
      q("." + a).hidden = !s.can[a];
      q("." + a).setAttribute("aria-label", q("." + a).textContent + " " + name);
    }
    q(".start-box").hidden = !(s.can.start || s.can.extend);
    q(".hours").setAttribute("aria-label", "Hours to run " + name);
    q(".backups").hidden = !s.can.backup;
    q(".logs").hidden = !s.can.logs;
    if (q(".logs").open) loadLog(c);
  }

  function span(seconds) {
    if (seconds < 90) return Math.max(0, Math.round(seconds)) + " s";
    if (seconds < 5400) return Math.round(seconds / 60) + " min";
    if (seconds < 172800) return (seconds / 3600).toFixed(1) + " h";
    return Math.round(seconds / 86400) + " days";
  }

  function tick() {
    const now = Date.now() + skew;
    for (const c of cards.values()) {
      const s = c.s;
      const stop = s.stop_at ? Date.parse(s.stop_at) : NaN;
      c.q(".left").textContent = isNaN(stop) ? (s.phase === "Running" ? "no end set" : "not running")
        : span((stop - now) / 1000);
      const b = s.last_backup ? Date.parse(s.last_backup) : NaN;
      c.q(".backup-age").textContent = isNaN(b) ? "none yet" : span((now - b) / 1000) + " ago";
    }
  }
  setInterval(() => { if (board) tick(); }, 1000);

  // --- actions ---------------------------------------------------------------------------------
  const DONE = { start: "Start asked for", extend: "Session extended for", stop: "Stop asked for",
                 backup: "Backup started for", restore: "Restore started for" };

  async function act(c, action, body) {
    const btn = c.q("." + action) || c.q(".backups");
    const name = c.s.title || c.s.name;
    if (btn) btn.disabled = true;
    try {
      const r = await api("POST", "/page/" + action + "/" + encodeURIComponent(c.uid), body);
      if (r.status === 200) {
        say(DONE[action] + " " + name + ".");
        if (r.data && r.data.server) fill(c, r.data.server);
        etag = "";
        if (action === "backup" || action === "restore") loadBackups(c);
        poll();
      } else if (r.status === 401) {
        forget("This key is no longer accepted.");
      } else {
        say(name + ": " + message(r));
      }
    } catch (e) {
      say("Cannot reach Peon: " + name + " was not changed.");
    } finally {
      if (btn) btn.disabled = false;
    }
  }

  async function copy(c) {
    const text = c.s.address;
    try { await navigator.clipboard.writeText(text); say("Copied " + text + "."); }
    catch (e) {
      const range = document.createRange();
      range.selectNodeContents(c.q(".address"));
      const sel = getSelection(); sel.removeAllRanges(); sel.addRange(range);
      say("Selected the address: copy it with your device's copy.");
    }
  }

  async function loadBackups(c) {
    const ul = c.q(".backup-list");
    const r = await api("GET", "/page/backups/" + encodeURIComponent(c.uid));
    if (r.status !== 200) { ul.replaceChildren(item(message(r))); return; }
    if (!r.data.backups.length) { ul.replaceChildren(item("No backups yet.")); return; }
    ul.replaceChildren(...r.data.backups.map((b) => {
      const when = b.finished ? new Date(b.finished).toLocaleString() : "not finished";
      const size = b.size ? " · " + (b.size / 1048576).toFixed(1) + " MB" : "";
      const li = item(b.phase + " · " + when + size + (b.offsite ? " · off-site" : ""));
      li.title = b.name;
      if (b.phase === "Succeeded") {
        li.append(button("Download", "Download backup " + b.name, () => download(c, b.name)));
        li.append(button("Restore", "Restore backup " + b.name, () => {
          if (confirm("Restore " + b.name + "? The server stops while its world is swapped."))
            act(c, "restore", { backup: b.name });
        }));
      }
      return li;
    }));
  }

  function item(text) { const li = document.createElement("li"); li.append(document.createTextNode(text)); return li; }
  function button(text, label, fn) {
    const b = document.createElement("button");
    b.type = "button"; b.textContent = text; b.setAttribute("aria-label", label);
    b.addEventListener("click", fn);
    return b;
  }

  async function download(c, name) {
    say("Downloading " + name + "…");
    const resp = await fetch("/page/download/" + encodeURIComponent(c.uid) + "/" + encodeURIComponent(name),
                             { headers: { "X-Api-Key": key } });
    if (!resp.ok) {
      let info = "the API answered " + resp.status;
      try { info = (await resp.json()).info || info; } catch (e) { /* not JSON */ }
      say("Download of " + name + " failed: " + info);
      return;
    }
    const url = URL.createObjectURL(await resp.blob());
    const a = document.createElement("a");
    a.href = url; a.download = name + ".tar.gz";
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    say("Downloaded " + name + ".");
  }

  async function loadLog(c) {
    const r = await api("GET", "/page/logs/" + encodeURIComponent(c.uid) + "?lines=200");
    c.q(".log").textContent = r.status === 200 ? (r.data.log || "(empty)") : message(r);
  }

  // --- start ---------------------------------------------------------------------------------
  if (key) {
    api("GET", "/page/servers").then((r) => {
      if (r.status === 200) opened(r); else forget(r.status === 401 ? "This key is no longer accepted." : message(r));
    }, () => showLogin("Cannot reach Peon."));
  } else {
    showLogin("");
  }
})();
