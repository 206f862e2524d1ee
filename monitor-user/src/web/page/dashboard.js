// The live page: polls the daemon's /api/live at its sampling cadence, keeps the last minutes
// of points here, and draws them with uPlot (served by the daemon too: nothing comes from
// anywhere else).
'use strict';

const KEEP_MS = 15 * 60 * 1000;
const HISTORY_EVERY_MS = 5 * 60 * 1000;
const COLORS = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];

const feed = { points: [], last: 0, interval: 5000, history: false, historyAt: 0 };
const charts = {};

// ---- formatting -------------------------------------------------------------------------
const dash = '–';
function num(v, digits = 1) {
  if (v == null || !isFinite(v)) return dash;
  const a = Math.abs(v);
  if (a >= 1e9) return (v / 1e9).toFixed(digits) + 'G';
  if (a >= 1e6) return (v / 1e6).toFixed(digits) + 'M';
  if (a >= 1e4) return (v / 1e3).toFixed(digits) + 'k';
  return a >= 100 ? v.toFixed(0) : v.toFixed(digits);
}
function pct(v) { return v == null ? dash : v.toFixed(1) + ' %'; }
function bytes(v) {
  if (v == null || !isFinite(v)) return dash;
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return v.toFixed(i === 0 ? 0 : 1) + ' ' + units[i];
}
function secs(v) {
  if (v == null) return dash;
  return v < 1 ? (v * 1000).toFixed(1) + ' ms' : v.toFixed(2) + ' s';
}
function time(ms) { return new Date(ms).toLocaleTimeString(); }
function text(id, value) { const e = document.getElementById(id); if (e) e.textContent = value; }

// ---- charts -----------------------------------------------------------------------------
// Each chart: its card, its series (a label, how to read a point, the format, the scale).
const CHARTS = [
  { id: 'chart-cpu', series: [
    { label: 'CPU %', get: p => p.cpu_percent, fmt: pct },
    { label: 'avg 1m', get: p => p.cpu_avg_1m, fmt: pct },
    { label: 'peak', get: p => p.cpu_peak, fmt: pct, dash: [4, 4] },
  ] },
  { id: 'chart-memory', series: [
    { label: 'RSS', get: p => p.rss_bytes, fmt: bytes, axis: bytes },
    { label: '% of limit', get: p => p.memory_percent, fmt: pct, scale: '%', range: [0, 100] },
  ] },
  { id: 'chart-vms', series: [{ label: 'VMS', get: p => p.vms_bytes, fmt: bytes, axis: bytes }] },
  { id: 'chart-fds', series: [
    { label: 'open fds', get: p => p.open_fds, fmt: v => num(v, 0) },
    { label: 'threads', get: p => p.threads, fmt: v => num(v, 0) },
  ] },
  { id: 'chart-syscalls', series: [
    { label: 'syscalls/s', get: p => p.syscalls_per_sec, fmt: num },
    { label: 'fd opens/s', get: p => p.fd_opens_per_sec, fmt: num, scale: 'fd' },
  ] },
  { id: 'chart-faults', series: [
    { label: 'page faults/s', get: p => p.faults_per_sec, fmt: num },
    { label: 'context switches/s', get: p => p.switches_per_sec, fmt: num, scale: 'sw' },
  ] },
  { id: 'chart-daemon', series: [
    { label: 'daemon CPU % of one CPU', get: p => p.daemon_cpu_percent, fmt: v => v == null ? dash : v.toFixed(3) + ' %' },
    { label: 'daemon RSS', get: p => p.daemon_rss_bytes, fmt: bytes, scale: 'b', axis: bytes },
  ] },
];

function chartWidth(el) { return Math.max(280, el.clientWidth || 400); }

function makeChart(card, series) {
  const el = card.querySelector('.chart');
  const scales = { x: { time: true } };
  const axes = [{}];
  const seen = new Set();
  series.forEach((s, i) => {
    const scale = s.scale || 'y';
    if (seen.has(scale)) return;
    seen.add(scale);
    scales[scale] = s.range
      ? { auto: false, range: s.range }
      : { auto: true, range: (u, min, max) => [Math.min(0, min), max > 0 ? max * 1.1 : 1] };
    const fmt = s.axis || (v => num(v, 1));
    axes.push({
      scale, side: seen.size === 1 ? 3 : 1, grid: { show: seen.size === 1 }, size: 76,
      stroke: seen.size === 1 ? '#667085' : COLORS[i % COLORS.length],
      values: (u, vals) => vals.map(fmt),
    });
  });
  const opts = {
    width: chartWidth(el), height: 200, scales, axes,
    cursor: { drag: { x: false, y: false } },
    series: [{ value: (u, v) => v == null ? dash : time(v * 1000) }].concat(series.map((s, i) => ({
      label: s.label, scale: s.scale || 'y', stroke: COLORS[i % COLORS.length], width: 1.5,
      // On the right-hand axis: dashed, so a flat line on the same height as the left one
      // still shows both.
      dash: s.dash || (s.scale && s.scale !== 'y' ? [6, 4] : undefined),
      spanGaps: false, value: (u, v) => s.fmt(v),
    }))),
  };
  return new uPlot(opts, [[]].concat(series.map(() => [])), el);
}

function draw(id, series, points, key) {
  const card = document.getElementById(id);
  let c = charts[id];
  if (c && c.key !== key) { c.plot.destroy(); c = null; }
  if (!c) { c = charts[id] = { plot: makeChart(card, series), key }; }
  const data = [points.map(p => p.t_ms / 1000)].concat(series.map(s => points.map(p => {
    const v = s.get(p);
    return v == null ? null : v;
  })));
  c.plot.setData(data);
  // How many points the chart holds, for a person reading the DOM (and the page's test).
  card.dataset.points = String(points.length);
  card.dataset.values = String(data.slice(1).reduce((n, ys) => n + ys.filter(v => v != null).length, 0));
}

// Request types: one series per route seen in the kept points, the costliest first.
function routeSeries(points, field, fmt) {
  const total = new Map();
  for (const p of points) for (const r of p.routes) total.set(r.route, (total.get(r.route) || 0) + r.cpu_percent + r.requests_per_sec * 1e-6);
  const names = [...total.keys()].sort((a, b) => total.get(b) - total.get(a)).slice(0, COLORS.length);
  return names.map(name => ({ label: name, fmt, get: p => { const r = p.routes.find(x => x.route === name); return r ? r[field] : (p.up ? 0 : null); } }));
}

// ---- the rest of the page ---------------------------------------------------------------
function list(id, items, render) {
  const card = document.getElementById(id);
  const ul = card.querySelector('ul, tbody');
  ul.replaceChildren(...items.map(render));
  const empty = card.querySelector('.empty');
  if (empty) empty.hidden = items.length > 0;
  card.dataset.items = String(items.length);
}
function el(tag, cls, content) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (content != null) e.textContent = content;
  return e;
}
function row(cells) { const tr = el('tr'); for (const c of cells) tr.append(el('td', null, c)); return tr; }

function eventItem(e) {
  const li = el('li');
  li.append(el('span', 'when', time(e.at_unix_ms || Date.parse(e.starts_at) || 0) + ' '));
  if (e.kind === 'cpu_spike') {
    const sys = (e.top_syscalls_by_calls || []).slice(0, 3).map(c => c.syscall + ' +' + num(c.added_calls_per_sec, 0) + '/s').join(', ');
    const routes = (e.top_routes_by_cpu || []).slice(0, 3).map(r => r.route).join(', ');
    li.append(el('b', null, 'CPU spike ' + pct(e.cpu_percent)),
      el('span', null, ' (baseline ' + pct(e.baseline_median_percent) + ', ' + e.trigger + ')' +
        (sys ? ' · syscalls: ' + sys : '') + (routes ? ' · routes: ' + routes : '')));
  } else if (e.kind === 'alert') {
    li.append(el('b', 'sev-' + e.severity, e.name + ' ' + e.status),
      el('span', null, ' · ' + ((e.annotations || {}).summary || '') + ' (value ' + num(e.value, 2) + ')'));
  } else {
    li.append(el('span', null, JSON.stringify(e)));
  }
  return li;
}

function render(snap) {
  const pts = feed.points;
  const p = pts[pts.length - 1] || {};
  const s = snap.status;
  document.title = snap.target + ' · monitor';
  text('target', snap.target);
  const badge = document.getElementById('state');
  badge.textContent = p.up ? 'up' : (pts.length ? 'down' : 'waiting for a sample');
  badge.className = 'badge ' + (p.up ? 'up' : 'down');
  text('cpu-limit', s.cpu_limit_cores ? num(s.cpu_limit_cores, 2) + ' cores' : dash);
  text('cpu-limit-source', s.cpu_limit_source || dash);
  text('memory-limit', s.memory_limit_bytes ? bytes(s.memory_limit_bytes) : dash);
  text('memory-limit-source', s.memory_limit_source || dash);
  text('processes', p.processes == null ? dash : String(p.processes));
  text('updated', p.t_ms ? time(p.t_ms) : 'never');
  text('now-cpu', pct(p.cpu_percent));
  text('now-cpu-avg', pct(p.cpu_avg_1m));
  text('now-cpu-peak', pct(p.cpu_peak));
  text('now-rss', bytes(p.rss_bytes));
  text('now-memory-percent', pct(p.memory_percent));
  text('now-vms', bytes(p.vms_bytes));
  text('now-fds', num(p.open_fds, 0));
  text('now-threads', num(p.threads, 0));
  text('now-syscalls', num(p.syscalls_per_sec));
  text('now-faults', num(p.faults_per_sec));
  text('now-switches', num(p.switches_per_sec));
  text('now-alerts', String(s.firing.length));

  for (const c of CHARTS) draw(c.id, c.series, pts, 'fixed');
  const hasRoutes = pts.some(x => x.routes.length > 0);
  for (const id of ['chart-route-rate', 'chart-route-cpu', 'routes']) document.getElementById(id).hidden = !hasRoutes;
  if (hasRoutes) {
    const rate = routeSeries(pts, 'requests_per_sec', num);
    draw('chart-route-rate', rate, pts, rate.map(r => r.label).join('\n'));
    const cpu = routeSeries(pts, 'cpu_percent', pct);
    draw('chart-route-cpu', cpu, pts, cpu.map(r => r.label).join('\n'));
    list('routes', p.routes || [], r => row([r.route, num(r.requests_per_sec), pct(r.cpu_percent), secs(r.p99_seconds)]));
  }
  list('top-syscalls', s.top_syscalls, ([name, calls, inside]) => row([name, num(calls), pct(inside * 100)]));
  list('alerts', s.firing, a => {
    const li = el('li');
    li.append(el('b', 'sev-' + a.severity, a.name), el('span', null, ' ' + a.summary + ' · since ' + time(a.since_ms) + ' · value ' + num(a.value, 2)));
    return li;
  });
  list('events', (snap.events || []).slice().reverse(), eventItem);
  list('programs', s.programs, pr => {
    const li = el('li', pr.attached ? null : 'sev-critical', pr.name + ' · ' + pr.mechanism + (pr.attached ? '' : ' · NOT attached: ' + (pr.error || '')));
    return li;
  });
}

async function history() {
  const card = document.getElementById('chart-history');
  try {
    const r = await fetch('api/history', { cache: 'no-store' });
    if (!r.ok) throw new Error(await r.text());
    const h = await r.json();
    card.hidden = false;
    const byT = new Map();
    for (const [t, v] of h.cpu_percent) byT.set(t, { t_ms: t, cpu: v, rss: null });
    for (const [t, v] of h.rss_bytes) (byT.get(t) || byT.set(t, { t_ms: t, cpu: null }).get(t)).rss = v;
    const pts = [...byT.values()].sort((a, b) => a.t_ms - b.t_ms);
    draw('chart-history', [
      { label: 'CPU % (minute mean)', get: p => p.cpu, fmt: pct },
      { label: 'RSS (minute mean)', get: p => p.rss, fmt: bytes, scale: 'b', axis: bytes },
    ], pts, 'fixed');
    const trend = [];
    if (h.cpu_percent_per_hour != null) trend.push('CPU ' + (h.cpu_percent_per_hour >= 0 ? '+' : '') + h.cpu_percent_per_hour.toFixed(2) + ' %/h');
    if (h.rss_bytes_per_hour != null) trend.push('RSS ' + (h.rss_bytes_per_hour >= 0 ? '+' : '-') + bytes(Math.abs(h.rss_bytes_per_hour)) + '/h');
    text('history-trend', trend.length ? 'Trend over the day (Theil-Sen): ' + trend.join(' · ') : 'Not enough history for a trend yet.');
  } catch (e) {
    card.hidden = false;
    text('history-trend', 'history unavailable: ' + e.message);
  }
}

async function poll() {
  try {
    const r = await fetch('api/live?since=' + feed.last, { cache: 'no-store' });
    if (!r.ok) throw new Error('HTTP ' + r.status);
    const snap = await r.json();
    feed.interval = Math.max(1000, snap.interval_ms || 5000);
    for (const p of snap.points) if (p.t_ms > feed.last) { feed.points.push(p); feed.last = p.t_ms; }
    const oldest = feed.last - KEEP_MS;
    while (feed.points.length && feed.points[0].t_ms < oldest) feed.points.shift();
    document.getElementById('error').hidden = true;
    render(snap);
    if (snap.history && Date.now() - feed.historyAt > HISTORY_EVERY_MS) {
      feed.historyAt = Date.now();
      history();
    }
  } catch (e) {
    const err = document.getElementById('error');
    err.hidden = false;
    err.textContent = 'the daemon is not answering (' + e.message + '); showing the last data';
    document.getElementById('state').textContent = 'unreachable';
  }
  setTimeout(poll, feed.interval);
}

window.addEventListener('resize', () => {
  for (const id in charts) {
    const el = document.getElementById(id).querySelector('.chart');
    charts[id].plot.setSize({ width: chartWidth(el), height: 200 });
  }
});

poll();
