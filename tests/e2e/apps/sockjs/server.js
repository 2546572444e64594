#!/usr/bin/env node
// SockJS server: a runnable example of SockJS behind wsgate, and the peer of
// tests/e2e/sockjs_test.go.
//
// The SockJS endpoint is /echo. A new session gets a JSON hello naming this
// server and the transport SockJS chose; every message the client sends is
// echoed back as {type: 'echo', data, t}; and the server pushes
// {type: 'push', n, sentAt} with a counter and the time it was written
// (Date.now(), so a page on the same machine can see how long the push took
// to arrive). Pushes go in lockstep: push 1 follows the hello, and push n+1
// is written only once the page has acknowledged push n by sending
// {"ack": n} (and at least --push-ms, 300 by default, after push n, to keep
// the pace readable). A proxy that held a streamed response in a buffer
// would so stall the pushes for good rather than merely delay them.
// Acknowledgements are not echoed. GET / serves a page that loads
// sockjs-client from this server (no CDN); ?transports=a,b limits the client to those transports,
// e.g. ?transports=xhr-streaming to run without WebSocket.
//
// Run it behind wsgate (from tests/e2e, after `bash tests/e2e/setup.sh`):
//
//   node apps/sockjs/server.js --port 3000
//
//   # wsgate.yaml: nothing SockJS-specific. Streaming responses are relayed
//   # as they arrive (nginx needs proxy_buffering off for xhr-streaming).
//   # With more than one server, add sticky_cookie to the upstream: the
//   # requests of a polling or streaming session must reach one server.
//   listeners:
//     - address: 127.0.0.1:8080
//   routes:
//     - upstream: sockjs
//   upstreams:
//     sockjs:
//       servers:
//         - address: 127.0.0.1:3000
//
//   bin/wsgate -config wsgate.yaml   # then open http://127.0.0.1:8080/
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const sockjs = require('sockjs');

function flag(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const port = Number(flag('port', '3000'));
const host = flag('host', '127.0.0.1');
const name = flag('name', 'sockjs-server');
const pushEvery = Number(flag('push-ms', '300'));

// packageFile finds file inside the installed npm package pkg the way
// require() would find the package; require.resolve cannot name dist/
// files of packages whose "exports" do not list them.
function packageFile(pkg, file) {
  for (const dir of require.resolve.paths(pkg)) {
    const p = path.join(dir, pkg, file);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`${pkg}/${file} not found: run bash tests/e2e/setup.sh`);
}

const clientBundle = fs.readFileSync(packageFile('sockjs-client', 'dist/sockjs.min.js'));

// The page keeps what it sees in window.sjs_state for a driver
// (tests/e2e/scenarios/sockjs_*.js) and notes the arrival time of every
// message with Date.now(), the clock the server's sentAt comes from.
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>SockJS behind wsgate</title></head>
<body><h1>SockJS behind wsgate</h1><ul id="log"></ul>
<script src="/sockjs.min.js"></script>
<script>
  const params = new URLSearchParams(location.search);
  const opts = {};
  if (params.get('transports')) opts.transports = params.get('transports').split(',');
  const state = window.sjs_state = { open: false, transport: null, hello: null, pushes: [], echoes: [], closed: null };
  const log = (s) => {
    const li = document.createElement('li');
    li.textContent = s;
    document.getElementById('log').appendChild(li);
  };
  const sock = window.sock = new SockJS('/echo', null, opts);
  sock.onopen = () => { state.open = true; state.transport = sock.transport; log('open on ' + sock.transport); };
  sock.onclose = (e) => { state.closed = { code: e.code, reason: e.reason }; log('closed ' + e.code + ' ' + e.reason); };
  sock.onmessage = (e) => {
    const arrivedAt = Date.now();
    const m = JSON.parse(e.data);
    m.arrivedAt = arrivedAt;
    if (m.type === 'hello') state.hello = m;
    else if (m.type === 'push') {
      state.pushes.push(m);
      // The server sends the next push only after this acknowledgement.
      sock.send(JSON.stringify({ ack: m.n }));
    }
    else if (m.type === 'echo') state.echoes.push(m);
    if (m.type !== 'push' || m.n % 10 === 0) log(e.data);
  };
</script></body></html>
`;

function out(obj) {
  process.stdout.write(JSON.stringify(Object.assign({ t: Date.now(), server: name }, obj)) + '\n');
}

// sockjs_url is only used by the iframe-based transports (for old
// browsers); it points at the same local bundle.
const echo = sockjs.createServer({
  prefix: '/echo',
  sockjs_url: '/sockjs.min.js',
  log: (severity, message) => {
    if (severity === 'error') out({ event: 'sockjs-error', message });
  },
});

echo.on('connection', (conn) => {
  // conn.protocol is the transport of this session, as the server sees it.
  out({ event: 'connection', id: conn.id, transport: conn.protocol });
  conn.write(JSON.stringify({ type: 'hello', name, transport: conn.protocol, t: Date.now() }));
  // n is the last push written; the next one waits for its ack. Each push
  // and ack is logged so a test can check the lockstep held.
  let n = 0;
  let lastPush = 0;
  let timer = null;
  const push = () => {
    timer = null;
    n++;
    lastPush = Date.now();
    out({ event: 'push', id: conn.id, n });
    conn.write(JSON.stringify({ type: 'push', n, sentAt: lastPush }));
  };
  push();
  conn.on('data', (data) => {
    let ack = null;
    try {
      ack = JSON.parse(data).ack;
    } catch (e) {
      // Not JSON: an ordinary message.
    }
    if (Number.isInteger(ack)) {
      out({ event: 'ack', id: conn.id, n: ack });
      if (ack === n && timer === null) {
        timer = setTimeout(push, Math.max(0, lastPush + pushEvery - Date.now()));
      }
      return;
    }
    out({ event: 'data', id: conn.id, data });
    conn.write(JSON.stringify({ type: 'echo', data, name, t: Date.now() }));
  });
  conn.on('close', () => {
    clearTimeout(timer);
    out({ event: 'close', id: conn.id, pushed: n });
  });
});

const server = http.createServer((req, res) => {
  const urlPath = req.url.split('?')[0];
  if (req.method === 'GET' && urlPath === '/') {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(page);
  } else if (req.method === 'GET' && urlPath === '/sockjs.min.js') {
    res.writeHead(200, { 'Content-Type': 'application/javascript; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(clientBundle);
  } else if (urlPath === '/favicon.ico') {
    // No icon; 204 instead of a 404 that browsers log as an error.
    res.writeHead(204);
    res.end();
  } else {
    // installHandlers below takes /echo before this handler sees it.
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }
});
echo.installHandlers(server);
server.listen(port, host, () => out({ event: 'listening', port }));
process.on('SIGTERM', () => process.exit(0));
