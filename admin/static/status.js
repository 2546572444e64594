// wsgate's status page: one snapshot a second over a WebSocket from the
// admin listener (/status/live), rendered into the tables. Rates come from
// the difference between two snapshots' totals.
'use strict';

const $ = (id) => document.getElementById(id);
const history = []; // {t, tunnels, messages} for the chart, last 10 minutes
const keepSeconds = 600;
// Rates are taken over about two seconds of snapshots: the gateway
// publishes tunnel traffic about once a second, so two snapshots half a
// second apart would alternate between nothing and double.
const recent = [];
const rateWindowMs = 2000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

function number(n) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  if (n >= 1e9) return (n / 1e9).toFixed(1) + 'G';
  if (n >= 1e6) return (n / 1e6).toFixed(1) + 'M';
  if (n >= 1e4) return (n / 1e3).toFixed(1) + 'k';
  return Number.isInteger(n) ? String(n) : n.toFixed(1);
}

function duration(seconds) {
  const d = Math.floor(seconds / 86400), h = Math.floor(seconds / 3600) % 24, m = Math.floor(seconds / 60) % 60;
  return d > 0 ? `${d}d ${h}h` : h > 0 ? `${h}h ${m}m` : `${m}m ${Math.floor(seconds % 60)}s`;
}

function rate(now, prev, pick) {
  if (!prev || !now.totals || !prev.totals) return undefined;
  const dt = (Date.parse(now.time) - Date.parse(prev.time)) / 1000;
  if (dt <= 0) return undefined;
  return Math.max(0, (pick(now.totals) - pick(prev.totals)) / dt);
}

function render(st) {
  $('live-tunnels').textContent = st.live_tunnels;
  $('generation').textContent = `configuration ${st.generation}` + (st.draining ? ' · draining' : '');
  $('uptime').textContent = 'up ' + duration((Date.parse(st.time) - Date.parse(st.started)) / 1000);
  const now = Date.parse(st.time);
  recent.push(st);
  while (recent.length > 1 && Date.parse(recent[1].time) <= now - rateWindowMs) recent.shift();
  const last = recent.length > 1 ? recent[0] : null;
  const messages = rate(st, last, (t) => t.messages_up + t.messages_down);
  $('rate-handshakes').textContent = number(rate(st, last, (t) => t.handshakes));
  $('rate-requests').textContent = number(rate(st, last, (t) => t.http_requests));
  $('rate-messages').textContent = number(messages);
  $('rate-bytes').textContent = number(rate(st, last, (t) => t.bytes_up + t.bytes_down));

  const upstreams = $('upstreams');
  upstreams.replaceChildren();
  for (const u of st.upstreams || []) {
    const body = el('tbody');
    for (const s of u.servers || []) {
      const tr = el('tr', { 'data-server': s.address, class: s.state },
        el('td', { 'data-field': 'address' }, s.address + (s.backup ? ' (backup)' : '')),
        el('td', { 'data-field': 'state' }, s.state),
        el('td', { 'data-field': 'why', class: 'muted' }, s.why || ''),
        el('td', { 'data-field': 'weight' }, s.weight),
        el('td', { 'data-field': 'tunnels' }, s.tunnels),
        el('td', { 'data-field': 'in-flight' }, s.in_flight),
        el('td', { 'data-field': 'failures' }, number(s.failures)));
      body.append(tr);
    }
    upstreams.append(el('table', { 'data-upstream': u.name },
      el('caption', {}, `${u.name} · ${u.balance || 'least_conn'}`),
      el('thead', {}, el('tr', {}, ...['server', 'state', 'why', 'weight', 'tunnels', 'in flight', 'failures'].map((h) => el('th', {}, h)))),
      body));
  }
  $('routes').replaceChildren(...(st.routes || []).map((r) =>
    el('tr', {}, el('td', {}, r.host || '*'), el('td', {}, r.path), el('td', {}, r.upstream), el('td', {}, r.tunnel))));
  $('listeners').replaceChildren(...(st.listeners || []).map((l) =>
    el('tr', {}, el('td', {}, l.address), el('td', {}, l.tls ? 'yes' : 'no'))));
  const events = (list) => (list || []).slice().reverse().map((e) =>
    el('li', e.ok ? { class: 'ok' } : {}, new Date(e.time).toLocaleTimeString() + '  ' + e.text));
  $('reloads').replaceChildren(...events(st.reloads));
  $('errors').replaceChildren(...events(st.errors));

  history.push({ t: Date.parse(st.time), tunnels: st.live_tunnels, messages: messages || 0 });
  while (history.length && history[0].t < Date.parse(st.time) - keepSeconds * 1000) history.shift();
  chart();
}

function chart() {
  const c = $('chart');
  const ratio = window.devicePixelRatio || 1;
  c.width = c.clientWidth * ratio;
  c.height = c.clientHeight * ratio;
  const g = c.getContext('2d');
  g.scale(ratio, ratio);
  const w = c.clientWidth, h = c.clientHeight, pad = 20;
  g.clearRect(0, 0, w, h);
  if (history.length < 2) return;
  // The chart spans what the page has seen, up to keepSeconds.
  const tEnd = history[history.length - 1].t;
  const t0 = Math.min(history[0].t, tEnd - 10000);
  const span = tEnd - t0;
  const line = (key, color) => {
    const top = Math.max(1, ...history.map((p) => p[key]));
    g.strokeStyle = color;
    g.lineWidth = 2;
    g.beginPath();
    history.forEach((p, i) => {
      const x = ((p.t - t0) / span) * w;
      const y = h - pad - (p[key] / top) * (h - 2 * pad);
      i ? g.lineTo(x, y) : g.moveTo(x, y);
    });
    g.stroke();
    g.fillStyle = color;
    g.fillText(`max ${number(top)}`, key === 'tunnels' ? 6 : w - 80, 12);
  };
  line('tunnels', '#2b6cb0');
  line('messages', '#d69e2e');
}

function connect() {
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/status/live');
  ws.onopen = () => { $('connection').textContent = 'live'; $('connection').className = 'badge live'; };
  ws.onmessage = (ev) => render(JSON.parse(ev.data));
  ws.onclose = () => {
    $('connection').textContent = 'disconnected: retrying';
    $('connection').className = 'badge lost';
    setTimeout(connect, 2000);
  };
}

connect();
