"""The dashboard's stylesheet and script, served by the app itself (no build step, nothing from the internet)."""

CSS = """
:root { --fg: #1b1f24; --muted: #5b6470; --line: #d0d7de; --ok: #1a7f37; --bad: #cf222e; --run: #0969da;
  --bg2: #f6f8fa; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: var(--fg); }
body { margin: 0; line-height: 1.45; font-size: 15px; }
header { display: flex; gap: 1.5rem; align-items: center; padding: .6rem 1.2rem; background: #24292f; color: #fff; }
header a { color: #fff; }
header .root { color: #c9d1d9; font-size: .85rem; margin-left: auto; }
main { max-width: 1240px; margin: 0 auto; padding: .6rem 1.2rem 3rem; }
h1 { font-size: 1.4rem; margin: .8rem 0 .4rem; } h2 { font-size: 1.15rem; margin: 1.2rem 0 .4rem; }
h3 { font-size: 1rem; margin: 0 0 .4rem; } h4 { margin: .6rem 0 .2rem; }
a { color: #0550ae; } a:focus, button:focus, input:focus, select:focus, summary:focus {
  outline: 3px solid #fb8500; outline-offset: 2px; }
.skip { position: absolute; left: -999px; }
.skip:focus { left: .5rem; top: .5rem; background: #fff; color: #000; padding: .3rem; }
table { border-collapse: collapse; margin: .3rem 0 .8rem; width: 100%; font-size: .9rem; }
caption { text-align: left; font-weight: 600; padding: .2rem 0; }
th, td { border-bottom: 1px solid var(--line); padding: .3rem .5rem; text-align: left; vertical-align: top; }
th { background: var(--bg2); }
.badge { display: inline-block; padding: 0 .45rem; border-radius: 1rem; font-size: .8rem; font-weight: 600;
  border: 1px solid; }
.badge.ok { color: var(--ok); } .badge.bad { color: var(--bad); } .badge.run { color: var(--run); }
.badge.muted { color: var(--muted); }
.grid { display: grid; grid-template-columns: repeat(auto-fit, minmax(280px, 1fr)); gap: .8rem; }
form.card, .card { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; background: #fff; }
fieldset { border: 0; padding: 0; margin: 0 0 .4rem; } legend { font-weight: 600; padding: 0; }
label { display: block; margin: .25rem 0; } label.check { display: inline-block; margin-right: .8rem; }
input[type=text], input[type=number], select {
  font: inherit; padding: .2rem .3rem; width: 100%; box-sizing: border-box; }
button { font: inherit; padding: .25rem .8rem; cursor: pointer; border-radius: 4px; border: 1px solid #8c959f;
  background: var(--bg2); }
button[type=submit] { background: #1f883d; color: #fff; border-color: #1a7f37; }
form.inline { display: inline; } form.inline button { padding: 0 .5rem; font-size: .85rem; }
.form-error, .error { color: var(--bad); }
.error { border: 1px solid var(--bad); padding: .4rem .6rem; border-radius: 4px; margin: .4rem 0; }
.job { border: 1px solid var(--line); border-left: 4px solid var(--run); border-radius: 4px; padding: .5rem .8rem;
  margin: .5rem 0; }
.job.done { border-left-color: var(--ok); }
.job.failed { border-left-color: var(--bad); }
.job.cancelled { border-left-color: var(--muted); }
.job.interrupted { border-left-color: var(--bad); }
.progress { font-family: ui-monospace, monospace; font-size: .85rem; color: var(--muted); }
pre { background: var(--bg2); padding: .5rem; overflow: auto; max-height: 18rem; font-size: .8rem; }
img.plot { max-width: 100%; height: auto; border: 1px solid var(--line); }
.empty, small { color: var(--muted); } .warn { color: #9a6700; }
ul.guide li { margin: .2rem 0; }
"""

JS = r"""
'use strict';
const TOKEN = document.querySelector('meta[name="modelport-token"]').content;
const jobsBox = document.getElementById('jobs');
const seen = new Map();

async function post(url, body) {
  const response = await fetch(url, {method: 'POST', headers: {'Content-Type': 'application/json',
    'X-Modelport-Token': TOKEN}, body: JSON.stringify(body || {}), credentials: 'same-origin'});
  const data = await response.json().catch(() => ({error: 'HTTP ' + response.status}));
  if (!response.ok) {
    const err = new Error(data.error || ('HTTP ' + response.status));
    err.hint = data.hint;
    throw err;
  }
  return data;
}

function formParams(form) {
  const params = {};
  for (const el of form.elements) {
    if (!el.name) continue;
    if (el.type === 'checkbox') {
      if (el.dataset.multi !== undefined) {
        params[el.name] = params[el.name] || [];
        if (el.checked) params[el.name].push(el.value);
      }
      else params[el.name] = el.checked;
    } else params[el.name] = el.value;
  }
  return params;
}

document.addEventListener('submit', async (event) => {
  const form = event.target.closest('form.job-form');
  if (!form) return;
  event.preventDefault();
  const box = form.querySelector('.form-error');
  box.textContent = '';
  try {
    const job = await post('/api/jobs', {kind: form.dataset.kind, params: formParams(form)});
    box.textContent = '';
    if (!jobsBox) { location.href = '/jobs#job-' + job.id; return; }
    await refresh();
    const panel = document.getElementById('job-' + job.id);
    if (panel) panel.scrollIntoView({block: 'nearest'});
  } catch (err) {
    box.textContent = 'error: ' + err.message + (err.hint ? ' — hint: ' + err.hint : '');
  }
});

document.addEventListener('click', async (event) => {
  const button = event.target.closest('button[data-cancel]');
  if (!button) return;
  button.disabled = true;
  try {
    await post('/api/jobs/' + encodeURIComponent(button.dataset.cancel) + '/cancel');
  } catch (err) { alert(err.message); }
  refresh();
});

async function reloadLive() {
  // A finished job changed files: refresh the page's tables and choices, keeping what the user picked.
  try {
    const fresh = new DOMParser().parseFromString(await (await fetch(location.href)).text(), 'text/html');
    for (const el of document.querySelectorAll('[data-live][id]')) {
      const next = fresh.getElementById(el.id);
      if (!next) continue;
      const value = el.tagName === 'SELECT' ? el.value : null;
      // A message under a form in this table (a refused Verify) outlives the refresh.
      const said = new Map(Array.from(el.querySelectorAll('form.job-form')).map(f =>
        [f.getAttribute('aria-label'), f.querySelector('.form-error')?.textContent || '']));
      el.innerHTML = next.innerHTML;
      for (const f of el.querySelectorAll('form.job-form')) {
        const text = said.get(f.getAttribute('aria-label'));
        const box = f.querySelector('.form-error');
        if (text && box) box.textContent = text;
      }
      if (value !== null && Array.from(el.options).some(o => o.value === value)) el.value = value;
    }
  } catch (err) { /* keep the old tables */ }
}

const states = new Map();
let timer = null;
async function refresh() {
  if (!jobsBox) return;
  clearTimeout(timer);
  let active = false, changed = false;
  try {
    const target = jobsBox.dataset.target;
    const response = await fetch('/api/jobs' + (target ? '?target=' + encodeURIComponent(target) : ''));
    const jobs = await response.json();
    const empty = jobsBox.querySelector('.empty');
    if (empty) empty.hidden = jobs.length > 0;
    for (const job of jobs.slice().reverse()) {
      const running = job.state === 'queued' || job.state === 'running';
      active = active || running;
      if (!running && (states.get(job.id) === 'queued' || states.get(job.id) === 'running')) changed = true;
      states.set(job.id, job.state);
      let panel = document.getElementById('job-' + job.id);
      if (!panel) {
        panel = document.createElement('section');
        panel.id = 'job-' + job.id;
        panel.setAttribute('aria-label', job.title + ' job');
        jobsBox.prepend(panel);
      }
      panel.className = 'job ' + job.state;
      panel.dataset.state = job.state;
      panel.dataset.kind = job.kind;
      if (seen.get(job.id) !== job.html) {
        const open = Array.from(panel.querySelectorAll('details')).map(d => d.open);
        panel.innerHTML = job.html;
        panel.querySelectorAll('details').forEach((d, i) => { if (open[i]) d.open = true; });
        seen.set(job.id, job.html);
      }
    }
    if (changed) await reloadLive();
  } catch (err) { /* the server restarted or is busy: try again */ }
  timer = setTimeout(refresh, active ? 1000 : 4000);
}
refresh();
"""
