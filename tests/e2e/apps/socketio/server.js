#!/usr/bin/env node
// Socket.IO server: a runnable example of Socket.IO behind wsgate, and the
// peer of tests/e2e/socketio_test.go.
//
// GET / serves a page that loads the socket.io-client bundle from this
// server (no CDN) and connects with the default transports: HTTP
// long-polling first, then an upgrade to WebSocket. On connect the server
// emits 'hello' with its --name; every 'ping-from-page' {n} the page emits
// is answered with 'pong-from-server' {n, name}. Every connection, upgrade
// and Engine.IO connection error (such as "Session ID unknown") is logged
// on stdout as one JSON line, so a test can see what happened server side.
//
// Run two of them behind wsgate (from tests/e2e, after `bash tests/e2e/setup.sh`):
//
//   node apps/socketio/server.js --port 3001 --name io-1
//   node apps/socketio/server.js --port 3002 --name io-2
//
//   # wsgate.yaml
//   listeners:
//     - address: 127.0.0.1:8080
//   routes:
//     - upstream: socketio
//   upstreams:
//     socketio:
//       balance: round_robin      # or least_conn (the default)
//       # Required with more than one server: the polling requests of one
//       # Engine.IO session must all reach the server that holds it.
//       # Without it they land on the others and get HTTP 400 "Session ID
//       # unknown" (Engine.IO error code 1).
//       sticky_cookie: wsgate_srv
//       servers:
//         - address: 127.0.0.1:3001
//         - address: 127.0.0.1:3002
//
//   bin/wsgate -config wsgate.yaml   # then open http://127.0.0.1:8080/
'use strict';

const fs = require('fs');
const http = require('http');
const path = require('path');
const { Server } = require('socket.io');

function flag(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const port = Number(flag('port', '3000'));
const host = flag('host', '127.0.0.1');
const name = flag('name', 'io-server');

// packageFile finds file inside the installed npm package pkg the way
// require() would find the package; require.resolve cannot name the file
// itself, because the package's "exports" do not list dist/.
function packageFile(pkg, file) {
  for (const dir of require.resolve.paths(pkg)) {
    const p = path.join(dir, pkg, file);
    if (fs.existsSync(p)) return p;
  }
  throw new Error(`${pkg}/${file} not found: run bash tests/e2e/setup.sh`);
}

// The client bundle of the socket.io-client package, read once at startup.
const clientBundle = fs.readFileSync(packageFile('socket.io-client', 'dist/socket.io.min.js'));

// The page keeps everything it sees in window.io_state so that a driver
// (tests/e2e/scenarios/socketio_*.js) can read it; a person sees it in the
// list. io() is called with no options: the default transports, polling
// first and then the upgrade, are what this page is about.
const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>Socket.IO behind wsgate</title></head>
<body><h1>Socket.IO behind wsgate</h1><ul id="log"></ul>
<script src="/socket.io.min.js"></script>
<script>
  const state = window.io_state = {
    hellos: [], pongs: [], transports: [], connects: 0, disconnects: [], connectErrors: [],
  };
  const log = (s) => {
    const li = document.createElement('li');
    li.textContent = new Date().toISOString() + ' ' + s;
    document.getElementById('log').appendChild(li);
  };
  const socket = window.socket = io();
  const engineEvents = (engine) => {
    // A reconnect makes a new Engine.IO socket; each one starts on
    // polling and upgrades.
    state.transports.push(engine.transport.name);
    log('engine open on ' + engine.transport.name);
    engine.on('upgrade', (t) => { state.transports.push(t.name); log('upgraded to ' + t.name); });
  };
  socket.io.on('open', () => engineEvents(socket.io.engine));
  socket.on('connect', () => { state.connects++; log('connected, id ' + socket.id); });
  socket.on('disconnect', (reason) => { state.disconnects.push(reason); log('disconnected: ' + reason); });
  socket.on('connect_error', (err) => { state.connectErrors.push(String(err && err.message)); log('connect_error: ' + err.message); });
  socket.on('hello', (m) => { state.hellos.push(m); log('hello from ' + m.name); });
  socket.on('pong-from-server', (m) => { state.pongs.push(m); log('pong ' + m.n + ' from ' + m.name); });
  let counter = 0;
  // sendPing emits the next counter; the driver calls it, and so can you
  // from the console.
  window.sendPing = () => { socket.emit('ping-from-page', { n: ++counter }); return counter; };
</script></body></html>
`;

function out(obj) {
  process.stdout.write(JSON.stringify(Object.assign({ t: Date.now(), server: name }, obj)) + '\n');
}

const server = http.createServer((req, res) => {
  const urlPath = req.url.split('?')[0];
  if (req.method === 'GET' && urlPath === '/') {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(page);
    return;
  }
  if (req.method === 'GET' && urlPath === '/socket.io.min.js') {
    res.writeHead(200, { 'Content-Type': 'application/javascript; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(clientBundle);
    return;
  }
  if (urlPath === '/favicon.ico') {
    // No icon; 204 instead of a 404 that browsers log as an error.
    res.writeHead(204);
    res.end();
    return;
  }
  // Socket.IO attaches its own 'request' listener for /socket.io/ and
  // answers those; everything else is ours to refuse.
  if (!req.url.startsWith('/socket.io/')) {
    res.writeHead(404, { 'Content-Type': 'text/plain' });
    res.end('not found\n');
  }
});

// serveClient off: the page takes the bundle from /socket.io.min.js above.
const io = new Server(server, { serveClient: false });

io.on('connection', (socket) => {
  const transport = socket.conn.transport.name;
  out({ event: 'connection', id: socket.id, transport });
  socket.conn.on('upgrade', (t) => out({ event: 'upgrade', id: socket.id, transport: t.name }));
  socket.emit('hello', { name, id: socket.id, transport });
  socket.on('ping-from-page', (m) => {
    out({ event: 'ping', id: socket.id, n: m && m.n });
    socket.emit('pong-from-server', { n: m && m.n, name, transport: socket.conn.transport.name });
  });
  socket.on('disconnect', (reason) => out({ event: 'disconnect', id: socket.id, reason }));
});

// Engine.IO reports requests it rejects here: code 1 with "Session ID
// unknown" is the one a missing sticky session gives.
io.engine.on('connection_error', (err) => {
  out({
    event: 'connection_error',
    code: err.code,
    message: err.message,
    method: err.req && err.req.method,
    url: err.req && err.req.url,
  });
});

server.listen(port, host, () => out({ event: 'listening', port }));

// A test kills this process with SIGKILL (the upstream dies); SIGTERM from
// a person ends it cleanly.
process.on('SIGTERM', () => { io.close(); process.exit(0); });
