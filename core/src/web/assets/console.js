// The console's behaviour: a live host count for the node set, a run posted with the CSRF token,
// results read line by line from the streamed answer and grouped by identical output as they
// arrive, a cancel button, and a per-host detail view. Every piece of output, host name and
// message is set as text (textContent), never as markup: command output is hostile input.
"use strict";

(function () {
  const csrfMeta = document.querySelector('meta[name="cohort-csrf"]');
  const csrf = csrfMeta ? csrfMeta.content : "";
  const form = document.getElementById("run");
  if (!form) return;
  const nodes = document.getElementById("nodes");
  const count = document.getElementById("count");
  const start = document.getElementById("start");
  const cancel = document.getElementById("cancel");
  const status = document.getElementById("status");
  const notes = document.getElementById("notes");
  const groupsBox = document.getElementById("groups");
  const detail = document.getElementById("detail");

  function el(tag, cls, text) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }

  let countTimer = null;
  nodes.addEventListener("input", function () {
    clearTimeout(countTimer);
    countTimer = setTimeout(async function () {
      if (!nodes.value.trim()) { count.textContent = ""; return; }
      const r = await fetch("/api/expand?nodes=" + encodeURIComponent(nodes.value), { credentials: "same-origin" });
      const body = await r.json();
      count.classList.toggle("bad", !r.ok);
      count.textContent = r.ok ? body.count + (body.count === 1 ? " host" : " hosts") : body.error;
    }, 250);
  });

  let run = null;
  let results = new Map();

  function key(h) {
    return JSON.stringify([h.outcome, h.stdout, h.stderr, h.output_cut_bytes]);
  }

  function showDetail(host) {
    const h = results.get(host);
    detail.replaceChildren();
    if (!h) return;
    const box = el("div", "host");
    box.appendChild(el("h3", null, host + " — " + h.outcome));
    const times = h.start_ms === null ? "never started" : "started " + h.start_ms + " ms, ended " + h.end_ms + " ms into the run";
    box.appendChild(el("p", null, times));
    box.appendChild(el("pre", "stdout", h.stdout));
    if (h.stderr) box.appendChild(el("pre", "stderr", h.stderr));
    if (h.output_cut_bytes) box.appendChild(el("p", "error", "[output cut: " + h.output_cut_bytes + " more bytes not kept]"));
    detail.appendChild(box);
  }

  // groups: [{hosts: label, names: [host...], example: host}]
  function render(groups) {
    groupsBox.replaceChildren();
    for (const g of groups) {
      const h = results.get(g.example);
      const box = el("div", "group");
      const head = el("h3", null);
      head.appendChild(el("span", "label", g.hosts + " (" + g.names.length + ")"));
      head.appendChild(el("span", "outcome" + (h.outcome === "ok" ? "" : " failed"), h.outcome));
      box.appendChild(head);
      box.appendChild(el("pre", "stdout", h.stdout));
      if (h.stderr) box.appendChild(el("pre", "stderr", h.stderr));
      if (h.output_cut_bytes) box.appendChild(el("p", "error", "[output cut: " + h.output_cut_bytes + " more bytes not kept]"));
      const hosts = el("div", "hosts");
      for (const name of g.names) {
        const b = el("button", null, name);
        b.type = "button";
        b.addEventListener("click", function () { showDetail(name); });
        hosts.appendChild(b);
      }
      box.appendChild(hosts);
      groupsBox.appendChild(box);
    }
  }

  function liveGroups() {
    const byKey = new Map();
    for (const [host, h] of results) {
      const k = key(h);
      if (!byKey.has(k)) byKey.set(k, { names: [], example: host });
      byKey.get(k).names.push(host);
    }
    const groups = [...byKey.values()].map(function (g) { return { hosts: g.names.join(","), names: g.names, example: g.example }; });
    groups.sort(function (a, b) { return b.names.length - a.names.length; });
    return groups;
  }

  function finished(ev) {
    status.textContent = ev.summary;
    const groups = ev.groups.map(function (g) { return { hosts: g.hosts, names: g.names, example: g.example }; });
    render(groups);
  }

  function handle(ev) {
    switch (ev.event) {
      case "accepted":
        run = ev.run;
        cancel.disabled = false;
        status.textContent = "running on " + ev.hosts + (ev.hosts === 1 ? " host" : " hosts") + "…";
        break;
      case "lowered":
        notes.textContent = ev.note;
        break;
      case "host":
        results.set(ev.result.host, ev.result);
        render(liveGroups());
        status.textContent = results.size + " done…";
        break;
      case "finished":
        finished(ev);
        break;
      case "cancelled":
        status.textContent = "cancelled: " + ev.summary;
        break;
      case "refused":
        status.textContent = "refused: " + ev.reason;
        break;
    }
  }

  form.addEventListener("submit", async function (e) {
    e.preventDefault();
    results = new Map();
    run = null;
    groupsBox.replaceChildren();
    detail.replaceChildren();
    notes.textContent = "";
    status.classList.remove("error");
    status.textContent = "starting…";
    start.disabled = true;
    try {
      const r = await fetch("/api/exec", {
        method: "POST",
        credentials: "same-origin",
        headers: { "content-type": "application/x-www-form-urlencoded", "x-cohort-csrf": csrf },
        body: new URLSearchParams(new FormData(form)),
      });
      if (!r.ok) {
        const body = await r.json().catch(function () { return { error: r.statusText }; });
        status.classList.add("error");
        status.textContent = body.error;
        if (r.status === 401) window.location.assign("/login?why=" + encodeURIComponent(body.why || "expired"));
        return;
      }
      const reader = r.body.getReader();
      const decoder = new TextDecoder();
      let buffered = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffered += decoder.decode(value, { stream: true });
        let nl;
        while ((nl = buffered.indexOf("\n")) >= 0) {
          const line = buffered.slice(0, nl);
          buffered = buffered.slice(nl + 1);
          if (line.trim()) handle(JSON.parse(line));
        }
      }
    } catch (err) {
      status.classList.add("error");
      status.textContent = "the run's stream broke: " + err;
    } finally {
      start.disabled = false;
      cancel.disabled = true;
    }
  });

  cancel.addEventListener("click", async function () {
    if (run === null) return;
    cancel.disabled = true;
    await fetch("/api/runs/" + run + "/cancel", {
      method: "POST",
      credentials: "same-origin",
      headers: { "x-cohort-csrf": csrf },
    });
  });
})();
