#!/usr/bin/env node
// Long-poll (Comet) server: a runnable example of long-polling behind wsgate.
//
// Events 1, 2, 3... are produced every --interval ms (1500 by default),
// starting with the first poll; with --interval 0, only on POST /event (one
// event each: a test drives the server this way, so that it knows a poll is
// held until it says so). GET /poll?after=N answers with event N+1 as
// JSON as soon as it exists, holding the request up to --hold ms (20000);
// if nothing happens by then it answers 204 and the client polls again.
// GET / serves a page that loops on /poll and appends each event to the
// page. GET /stats tells how many /poll requests arrived, and for each
// `after` and each client request id (`rid`, unique per fetch) how many
// times: a proxy that retried a held request would show up there. Its
// `holding` lists the polls held now: their `after` and for how many ms.
//
// Run it behind wsgate (from tests/e2e):
//
//   node apps/longpoll/server.js --port 8003
//
//   # wsgate.yaml
//   listeners:
//     - address: 127.0.0.1:8080
//   routes:
//     - upstream: comet
//   upstreams:
//     comet:
//       servers:
//         - address: 127.0.0.1:8003
//   timeouts:
//     idle: 1h   # the default; a held poll must be shorter than this.
//                # (nginx needs proxy_read_timeout above the hold, and
//                # proxy_buffering off; wsgate never buffers or retries it)
//
//   bin/wsgate -config wsgate.yaml
//   # open http://127.0.0.1:8080/?n=10
'use strict';

const http = require('http');

function flag(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const port = Number(flag('port', '8003'));
const host = flag('host', '127.0.0.1');
const interval = Number(flag('interval', '1500'));
const hold = Number(flag('hold', '20000'));

const events = []; // events[i] is event i+1
let waiters = []; // held polls: {after, res, timer}
let producer = null;

const stats = { polls: 0, answered: 0, timedOut: 0, byAfter: {}, byRid: {}, holdMs: [] };

function produce() {
  const ev = { id: events.length + 1, at: Date.now() };
  events.push(ev);
  const still = [];
  for (const w of waiters) {
    if (w.after < events.length) {
      answer(w, events[w.after]);
    } else {
      still.push(w);
    }
  }
  waiters = still;
}

function answer(w, ev) {
  clearTimeout(w.timer);
  stats.answered++;
  stats.holdMs.push(Date.now() - w.since);
  const body = JSON.stringify(ev);
  w.res.writeHead(200, {
    'Content-Type': 'application/json',
    'Content-Length': Buffer.byteLength(body),
    'Cache-Control': 'no-store',
  });
  w.res.end(body);
}

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>long-poll behind wsgate</title></head>
<body><h1>Long-poll</h1><p>state: <code id="state">polling</code></p><ol id="log"></ol>
<script>
  // Polls /poll?after=LAST until n events (?n=, default unlimited) arrived.
  const n = Number(new URLSearchParams(location.search).get('n')) || Infinity;
  let last = 0, seen = 0;
  async function loop() {
    while (seen < n) {
      const rid = Math.random().toString(36).slice(2) + Date.now().toString(36);
      let res;
      try {
        res = await fetch('/poll?after=' + last + '&rid=' + rid, { cache: 'no-store' });
      } catch (e) {
        document.getElementById('state').textContent = 'error: ' + e;
        await new Promise((r) => setTimeout(r, 1000));
        continue;
      }
      if (res.status === 204) continue; // held to the end without an event
      if (res.status !== 200) {
        document.getElementById('state').textContent = 'status ' + res.status;
        return;
      }
      const ev = await res.json();
      last = ev.id;
      seen++;
      const li = document.createElement('li');
      li.textContent = JSON.stringify(ev);
      document.getElementById('log').appendChild(li);
    }
    document.getElementById('state').textContent = 'done';
  }
  loop();
</script></body></html>
`;

const server = http.createServer((req, res) => {
  const url = new URL(req.url, 'http://x');
  if (req.method === 'GET' && url.pathname === '/') {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(page);
  } else if (req.method === 'GET' && url.pathname === '/stats') {
    const now = Date.now();
    const holding = waiters.map((w) => ({ after: w.after, ms: now - w.since }));
    const body = JSON.stringify({ ...stats, events: events.length, held: waiters.length, holding });
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(body);
  } else if (req.method === 'POST' && url.pathname === '/event') {
    produce();
    res.writeHead(200, { 'Content-Type': 'application/json', 'Cache-Control': 'no-store' });
    res.end(JSON.stringify(events[events.length - 1]));
  } else if (req.method === 'GET' && url.pathname === '/poll') {
    const after = Number(url.searchParams.get('after') || '0');
    const rid = url.searchParams.get('rid') || '';
    stats.polls++;
    stats.byAfter[after] = (stats.byAfter[after] || 0) + 1;
    stats.byRid[rid] = (stats.byRid[rid] || 0) + 1;
    if (producer === null && interval > 0) {
      // The clock starts with the first poll, so that every poll of a
      // client that keeps up is held for about one interval.
      producer = setInterval(produce, interval);
    }
    const w = { after, res, since: Date.now(), timer: null };
    if (after < events.length) {
      answer(w, events[after]);
      return;
    }
    w.timer = setTimeout(() => {
      waiters = waiters.filter((x) => x !== w);
      stats.timedOut++;
      res.writeHead(204, { 'Cache-Control': 'no-store' });
      res.end();
    }, hold);
    // A client that goes away stops being held.
    res.on('close', () => {
      if (!res.writableEnded) {
        clearTimeout(w.timer);
        waiters = waiters.filter((x) => x !== w);
      }
    });
    waiters.push(w);
  } else {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }
});

server.listen(port, host, () => {
  const every = interval > 0 ? `an event every ${interval} ms` : 'an event per POST /event';
  console.log(`long-poll server listening on ${host}:${port}, ${every}, polls held up to ${hold} ms`);
});
