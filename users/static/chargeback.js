// The Chargeback tab's panel and the start form's scenario picker, added to Locust's React UI (users/webui.py
// injects this file into index.html, after window.templateArgs and before Locust's own module script runs).
// The React form sends every named input, select and textarea inside the <form> element, read from the DOM at
// submit: our <select name="scenario"> placed in it reaches POST /swarm like Locust's own fields.
"use strict";
(() => {
  const args = window.templateArgs || {};
  const extra = args.extra_options || {};
  const PROMETHEUS = "chargeback.prometheus_url";
  const LOCKED = ["userCount", "spawnRate", "runTime"];
  const OUTCOMES = { passed: "passed", failed: "failed", skipped: "cannot decide", error: "error" };

  // Before React draws the page: the scenario is our picker's field (not a text input among the custom
  // parameters), the common options are ours to lock, and the Prometheus URL is the last one typed here.
  delete extra.scenario;
  args.hide_common_options = false;
  if (extra.prometheus_url && localStorage.getItem(PROMETHEUS)) {
    extra.prometheus_url.default_value = localStorage.getItem(PROMETHEUS);
  }
  document.addEventListener("input", (event) => {
    if (event.target.name === "prometheusUrl") localStorage.setItem(PROMETHEUS, event.target.value);
  });

  const esc = (value) => String(value ?? "").replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
  const getJson = (path, options) => fetch(path, options).then((response) => response.json());
  const setHtml = (element, html) => {  // only on change: no flicker, no needless mutations
    if (element.cbHtml !== html) { element.cbHtml = html; element.innerHTML = html; }
  };
  let choices = null;  // chargeback/scenarios: {selected, scenarios: [{name, description, users, ends, error}]}

  // --- The start form: the picker on top, the fields a scenario decides locked ---------------------------------
  function addPicker(form) {
    const picker = document.createElement("div");
    picker.id = "cb-picker";
    picker.innerHTML = `<label for="cb-scenario">Scenario</label>
      <select id="cb-scenario" name="scenario">${choices.scenarios.map((s) =>
        `<option value="${esc(s.name)}"${s.error ? " disabled" : ""}>${esc(s.name || "(none: Locust's controls)")}`
        + "</option>").join("")}</select>
      <p id="cb-description"></p><p id="cb-lock"></p>`;
    const select = picker.querySelector("select");
    select.value = choices.selected;
    select.addEventListener("change", () => lockFields(form));
    form.firstElementChild.prepend(picker);
  }

  function lockFields(form) {
    const name = form.querySelector("#cb-scenario").value;
    const chosen = choices.scenarios.find((s) => s.name === name) || choices.scenarios[0];
    const locked = chosen.name !== "";
    setHtml(form.querySelector("#cb-description"), esc(chosen.error || chosen.description));
    setHtml(form.querySelector("#cb-lock"), locked ? esc(`Scenario ${chosen.name} decides the simulated users `
      + `(${chosen.users}) and when the run ends (${chosen.ends}): number of users, ramp up and run time do not apply.`)
      : "");
    for (const field of LOCKED) {
      const input = form.querySelector(`input[name="${field}"]`);
      if (input && input.disabled !== locked) {
        input.disabled = locked;
        input.closest(".MuiFormControl-root")?.classList.toggle("cb-locked", locked);
      }
    }
  }

  // --- The Chargeback tab: our panel in place of Locust's table of it -------------------------------------------
  // The server sends the per-tier totals, the top users by calls and by limited, and the users a search matches:
  // never a row per user (with 10,000 identities the CSV is the table of everyone).
  const TOP = 10;  // users per top list
  const SEARCH_DELAY = 300;  // ms after the last keystroke before a search is sent
  const TOTALS = [["tier", "Tier"], ["users", "Users"], ["sent", "Sent"], ["authorized", "Authorized"],
    ["limited", "Limited (429)"], ["rejected", "Rejected (401/403)"], ["errors", "Errors"],
    ["prompt_tokens", "Prompt tokens"], ["completion_tokens", "Completion tokens"], ["total_tokens", "Total tokens"],
    ["cost", "Cost"]];
  const MODELS = [["tier", "Tier"], ["model", "Model"], ["users", "Users"], ["calls", "Calls"],
    ["prompt_tokens", "Input tokens"], ["completion_tokens", "Output tokens"], ["total_tokens", "Total tokens"],
    ["cost", "Cost"]];
  const UNITS = [["per_call", "call"], ["per_1k_tokens", "1k tokens"], ["per_1k_input_tokens", "1k input tokens"],
    ["per_1k_output_tokens", "1k output tokens"]];

  function priceText(price) {  // the units that are set, e.g. "0.002 / call, 0.001 / 1k input tokens"
    const units = UNITS.filter(([key]) => price[key]).map(([key, unit]) => `${price[key]} / ${unit}`);
    return units.length ? units.join(", ") : "0";
  }

  function prices(price) {  // the tier's price, then each model's own
    return esc(priceText(price)) + Object.entries(price.models || {}).map(([model, p]) =>
      `<br><span class="cb-model-price" data-model="${esc(model)}">${esc(model)}: ${esc(priceText(p))}</span>`)
      .join("");
  }

  function markers(row) {
    if (!row.limits.length) return esc(row.authorized);
    return row.limits.map((m) => `<span class="cb-limit${m.over ? " cb-over" : ""}" data-over="${m.over}" `
      + `title="${esc(m.limit_name)}: at most ${m.allowed} in ${m.windows} window(s)">${esc(m.text)}`
      + `${m.over ? " ⚠ over the limit" : ""}</span>`).join("<br>");
  }

  function userTable(id, rows, empty) {  // user rows with Locust's columns of the tab, limit markers on authorized
    const columns = args.extended_tables[0].structure;
    if (!rows.length) return `<p class="cb-empty" id="${id}-empty">${esc(empty)}</p>`;
    const body = rows.map((row) => `<tr data-user="${esc(row.user)}" data-tier="${esc(row.tier)}">`
      + columns.map((c) => `<td data-key="${c.key}">${c.key === "authorized" ? markers(row) : esc(row[c.key])}</td>`)
        .join("") + "</tr>").join("");
    return `<table class="cb-table cb-users" id="${id}"><thead><tr>`
      + `${columns.map((c) => `<th>${esc(c.title)}</th>`).join("")}</tr></thead><tbody>${body}</tbody></table>`;
  }

  function tierUsers(tier) {
    const more = tier.user_count - tier.users.length;
    return tier.users.join(", ") + (more > 0 ? `, … (${tier.user_count.toLocaleString("en")} users)` : "");
  }

  function renderTable(table) {
    const run = table.run;
    const reason = run && run.state !== "running" && run.reason ? `, ${esc(run.reason)}` : "";
    const head = run ? `Run <b id="cb-run-id">${esc(run.id)}</b> (scenario ${esc(run.scenario)}): `
      + `<span id="cb-run-state">${esc(run.state)}</span>${reason}` : "No run yet.";
    const tiers = table.tiers.map((t) => `<tr data-tier="${esc(t.name)}"><td>${esc(t.name)}</td>`
      + `<td>${esc(tierUsers(t))}</td>`
      + `<td>${esc(t.limits.map((l) => `${l.name}: ${l.rates.join(", ")} (${l.kind})`).join("; "))}</td>`
      + `<td>${prices(t.price)}</td></tr>`).join("");
    const totals = table.totals.map((row) => `<tr data-tier="${esc(row.tier)}">`
      + TOTALS.map(([key]) => `<td data-key="${key}">${esc(row[key])}</td>`).join("") + "</tr>").join("");
    const models = table.models.map((row) => `<tr data-tier="${esc(row.tier)}" data-model="${esc(row.model)}">`
      + MODELS.map(([key]) => `<td data-key="${key}">${esc(key === "model" ? row.model || "(none)" : row[key])}`
        + "</td>").join("") + "</tr>").join("");
    return `<p>${head} · currency <span id="cb-currency">${esc(table.currency)}</span> · `
      + `<a href="chargeback/csv" download>Download the table of every user (CSV)</a></p>
      <table class="cb-table" id="cb-tiers"><thead><tr><th>Tier</th><th>Users</th><th>Limits</th>
        <th>Prices (${esc(table.currency)})</th></tr></thead>
        <tbody>${tiers}</tbody></table>
      <h4>Per tier <span class="cb-note">(<span id="cb-user-count">${esc(table.users)}</span> users with requests)`
      + `</span></h4>
      <table class="cb-table" id="cb-totals"><thead><tr>${TOTALS.map(([, title]) => `<th>${esc(title)}</th>`).join("")}
        </tr></thead><tbody>${totals}</tbody></table>
      <h4>Per tier and model</h4>
      ${models ? `<table class="cb-table" id="cb-models"><thead><tr>`
        + `${MODELS.map(([, title]) => `<th>${esc(title)}</th>`).join("")}</tr></thead><tbody>${models}</tbody></table>`
        : `<p class="cb-empty" id="cb-models-empty">No authorized calls yet.</p>`}
      <div class="cb-tops"><div><h4>Top users by calls</h4>
        ${userTable("cb-top-sent", table.top_sent, "No requests yet.")}</div>
      <div><h4>Top users by limited</h4>${userTable("cb-top-limited", table.top_limited, "No user was limited.")}
      </div></div>`;
  }

  function renderSearch(search) {
    if (!search) return "";
    const shown = search.rows.length;
    const count = search.matched === 0 ? `No user with requests matches “${esc(search.text)}”.`
      : `${search.matched} user${search.matched === 1 ? "" : "s"} match “${esc(search.text)}”`
        + (search.matched > shown ? `: the first ${shown} by name (the CSV has every user).` : ".");
    return `<p id="cb-search-count" data-matched="${search.matched}">${count}</p>`
      + (shown ? userTable("cb-matches", search.rows, "") : "");
  }

  function renderChecks(checks) {
    if (checks.state === "running") return `<p>Running the checks on ${esc(checks.run_id)}…</p>`;
    if (checks.state === "error") return `<p class="cb-error" id="cb-checks-error">${esc(checks.message)}</p>`;
    if (checks.state !== "done") return checks.refused ? `<p class="cb-error">${esc(checks.refused)}</p>` : "";
    const n = checks.counts;
    const results = checks.results.map((r) => `<tr data-name="${esc(r.name)}" data-outcome="${r.outcome}">`
      + `<td>${esc(r.name)}</td><td class="cb-${r.outcome}">${OUTCOMES[r.outcome]}</td></tr>`).join("");
    const failures = checks.results.filter((r) => r.outcome === "failed" || r.outcome === "error")
      .map((r) => `<h4>${esc(r.name)}</h4><pre class="cb-failure" data-name="${esc(r.name)}">${esc(r.message)}</pre>`);
    return `<p id="cb-checks-summary">Checks on ${esc(checks.run_id)}${checks.partial ? " (partial: the run is "
      + "incomplete)" : ""}: ${n.passed} passed, ${n.failed + n.error} failed, ${n.skipped} cannot decide</p>
      <table class="cb-table" id="cb-results" data-run="${esc(checks.run_id)}"><tbody>${results}</tbody></table>
      ${failures.join("")}`;
  }

  let lastRefusal = "";
  let asked = 0;  // refreshes sent, and the newest one drawn: an older answer (a search since changed) is dropped
  let drawn = 0;
  async function refresh() {
    const panel = document.getElementById("cb-panel");
    if (!panel) return;
    const mine = ++asked;
    const search = panel.querySelector("#cb-search").value.trim();
    const query = `chargeback/table?top=${TOP}${search ? `&user=${encodeURIComponent(search)}` : ""}`;
    const [table, checks] = await Promise.all([getJson(query), getJson("chargeback/verify")]);
    if (mine < drawn || !panel.isConnected) return;
    drawn = mine;
    setHtml(panel.querySelector("#cb-table"), renderTable(table));
    setHtml(panel.querySelector("#cb-search-results"), renderSearch(table.search));
    setHtml(panel.querySelector("#cb-checks"), renderChecks({ ...checks, refused: lastRefusal }));
    const button = panel.querySelector("#cb-verify");
    const busy = !table.run || table.run.state === "running" || checks.state === "running";
    if (button.disabled !== busy) button.disabled = busy;
    setHtml(button, checks.state === "running" ? "Verifying…" : "Verify");
  }

  async function verify() {
    lastRefusal = (await getJson("chargeback/verify", { method: "POST" })).refused;
    refresh();
  }

  function syncPanel() {
    const anchor = document.querySelector('th[data-sortkey="rejected"]')?.closest(".MuiTableContainer-root");
    let panel = document.getElementById("cb-panel");
    if (panel && (!anchor || panel.nextElementSibling !== anchor)) { panel.remove(); panel = null; }
    if (!anchor || panel) return;
    panel = document.createElement("div");
    panel.id = "cb-panel";
    panel.innerHTML = `<div id="cb-table"></div>
      <p id="cb-search-box"><label for="cb-search">Search users by name</label>
        <input id="cb-search" type="search" autocomplete="off" placeholder="part of a user name"></p>
      <div id="cb-search-results"></div>
      <p><button id="cb-verify" type="button" disabled>Verify</button> the last run record with the checks</p>
      <div id="cb-checks"></div>`;
    panel.querySelector("#cb-verify").addEventListener("click", verify);
    let typing = null;  // debounced: one search once the typing pauses
    panel.querySelector("#cb-search").addEventListener("input", () => {
      clearTimeout(typing);
      typing = setTimeout(refresh, SEARCH_DELAY);
    });
    anchor.before(panel);
    anchor.style.display = "none";
    refresh();
  }

  function sync() {
    syncPanel();
    if (!choices) return;
    for (const form of document.querySelectorAll("form")) {
      if (!form.querySelector('input[name="host"]')) continue;  // the new-test form, not "edit running test"
      if (!form.querySelector("#cb-picker")) addPicker(form);
      lockFields(form);
    }
  }

  new MutationObserver(sync).observe(document.documentElement, { childList: true, subtree: true });
  getJson("chargeback/scenarios").then((result) => { choices = result; sync(); });
  setInterval(refresh, 1000);
})();
