#!/usr/bin/env node
// node `ws` server: a runnable example of the classic nginx setup
// (`server_name ws.repo;` proxying to 127.0.0.1:3000) done with wsgate.
//
// A WebSocket client is greeted with a JSON hello naming this server and the
// Host, X-Forwarded-For and X-Forwarded-Proto it saw (so you can check what
// the gateway passes on; proto is "https" when the browser came over wss://), and every message it sends is echoed back. A plain GET /
// serves a page that connects back to the host that served it.
//
// Run it behind wsgate (from tests/e2e, after `bash tests/e2e/setup.sh`):
//
//   node apps/ws/server.js --port 3000
//
//   # wsgate.yaml: the nginx server block `server_name ws.repo; location /
//   # { proxy_pass http://127.0.0.1:3000; ...upgrade headers... }`
//   listeners:
//     - address: 127.0.0.1:8080
//   routes:
//     - host: ws.repo          # server_name ws.repo
//       path: /                # location /
//       upstream: ws_server
//   upstreams:
//     ws_server:
//       servers:
//         - address: 127.0.0.1:3000
//
//   bin/wsgate -config wsgate.yaml
//   # with ws.repo pointing at 127.0.0.1 (/etc/hosts), open http://ws.repo:8080/;
//   # any other Host gets 404 from the gateway.
'use strict';

const http = require('http');
const { WebSocketServer } = require('ws');

function flag(name, def) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : def;
}
const port = Number(flag('port', '3000'));
const host = flag('host', '127.0.0.1');
const name = flag('name', 'ws-server');

const page = `<!doctype html>
<html><head><meta charset="utf-8"><title>ws behind wsgate</title></head>
<body><h1>node ws behind wsgate</h1><ul id="log"></ul>
<script>
  const ws = new WebSocket((location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/');
  const log = (s) => { const li = document.createElement('li'); li.textContent = s; document.getElementById('log').appendChild(li); };
  ws.onopen = () => ws.send('hello from the page');
  ws.onmessage = (ev) => log(ev.data);
  ws.onclose = (ev) => log('closed ' + ev.code);
</script></body></html>
`;

const server = http.createServer((req, res) => {
  if (req.method === 'GET' && req.url === '/') {
    res.writeHead(200, { 'Content-Type': 'text/html; charset=utf-8', 'Cache-Control': 'no-store' });
    res.end(page);
    return;
  }
  res.writeHead(404, { 'Content-Type': 'text/plain' });
  res.end('not found\n');
});

const wss = new WebSocketServer({ server });
wss.on('connection', (ws, req) => {
  ws.send(JSON.stringify({
    type: 'greeting',
    server: name,
    host: req.headers.host,
    xff: req.headers['x-forwarded-for'] || null,
    proto: req.headers['x-forwarded-proto'] || null,
  }));
  ws.on('message', (data, isBinary) => {
    // Echo as received: text stays text, binary stays binary.
    ws.send(data, { binary: isBinary });
  });
});

server.listen(port, host, () => {
  console.log(`${name} listening on ${host}:${port}`);
});
